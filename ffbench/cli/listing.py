"""``ffbench list`` (the registered plugins' cards) and ``ffbench data`` (fetching the offline datasets).
Listing imports only the registry asked for: methods and backbones bring torch, report kinds the statistics."""

from __future__ import annotations

import argparse
import sys


def list_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("kind", choices=["methods", "datasets", "backbones", "axes", "reports"], help="what to list")
    p.add_argument("pattern", nargs="?", default="*", help="fnmatch wildcard, e.g. 'ff*' (default: every one)")


def data_arguments(p: argparse.ArgumentParser) -> None:
    from ffbench.data.datasets import FETCHABLE, NO_FETCH, cache_dir

    p.add_argument("action", choices=["fetch"], help="fetch: put the named datasets where the loaders find them")
    p.add_argument("names", nargs="+", metavar="NAME", help="fashion-mnist, mnist (the others need nothing)")
    lines = ["datasets and where each is looked for:"]
    lines += [f"  {n:14s} {how.format(cache=cache_dir(n))}" for n, how in FETCHABLE.items()]
    lines += [f"  {n:14s} nothing to fetch: {how.format(cache=cache_dir(n))}" for n, how in NO_FETCH.items()]
    lines.append("  (a suite's [datasets.NAME] root is then the only place looked at; $FFBENCH_DATA moves the cache)")
    p.epilog = "\n".join(lines) + "\n\n" + p.epilog  # before the examples


def cmd_list(args: argparse.Namespace) -> int:
    from ffbench.core.registry import REGISTRIES

    if args.kind == "reports":  # the report kinds' registry lives with the report builder (the statistics)
        from ffbench.analysis.report import REPORTS as reg
    else:
        reg = REGISTRIES[args.kind]
    cards = reg.list(args.pattern)
    if not cards:
        from ffbench.plan.suite import did_you_mean

        print(
            f"no {args.kind} match {args.pattern!r}{did_you_mean(args.pattern, reg.names())}; registered: "
            f"{', '.join(reg.names())}"
        )
        return 1
    print("\n\n".join(c.describe() + _adapt_line(args.kind, reg, c.name) for c in cards))
    return 0


def _adapt_line(kind: str, reg, name: str) -> str:
    """For a method: the transfer modes it offers (declared on its class, not its card)."""
    if kind != "methods":
        return ""
    cls = reg.get(name).obj
    probe = f"; linear-probe reports rule {cls.probe_rule}" if cls.probe_rule else ""
    return f"\n    adapt modes: {', '.join(cls.adapt_modes)}{probe}"


def cmd_data(args: argparse.Namespace) -> int:
    from ffbench.data.datasets import FETCHABLE, NO_FETCH, cache_dir, fetch
    from ffbench.plan.suite import did_you_mean

    unknown = [n for n in args.names if n not in FETCHABLE and n not in NO_FETCH]
    if unknown:  # before fetching anything
        hint = "".join(did_you_mean(n, [*FETCHABLE, *NO_FETCH]) for n in unknown)
        print(
            f"error: cannot fetch {', '.join(map(repr, unknown))}{hint}; fetchable: {', '.join(FETCHABLE)} "
            f"(nothing to fetch for {', '.join(NO_FETCH)})",
            file=sys.stderr,
        )
        return 2
    for name in args.names:
        if name in NO_FETCH:
            print(f"{name}: nothing to fetch ({NO_FETCH[name].format(cache=cache_dir(name))})")
        else:
            print(f"{name}: {fetch(name)}")
    return 0
