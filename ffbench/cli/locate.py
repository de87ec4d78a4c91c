"""Which suite and output folder a command means: a suite file, a shipped suite's name, or a stored one."""

from __future__ import annotations

from pathlib import Path


def locate(suite_ref: str | None, out: str | None):
    """(suite name, output folder, the Suite or None) of ``report`` / ``ui``: a suite file or name from
    suites/, or the name of a suite stored under ffbench-out/<name> (or --out) whose file is gone; with
    --out alone, the one suite that folder's store holds."""
    from ffbench.execution.runner import default_out
    from ffbench.plan.suite import SuiteError, load

    if suite_ref is None:
        if out is None:
            raise SuiteError(
                "give a SUITE (a suite file, a name from suites/, or a suite stored under "
                "ffbench-out/<name>) or --out DIR"
            )
        from ffbench.analysis.report_context import open_store

        names = open_store(Path(out)).suites()
        if len(names) != 1:
            raise SuiteError(f"{out}: the store holds {len(names)} suites ({', '.join(names) or 'none'}); name one")
        return names[0], Path(out), None
    try:
        suite = load(suite_ref)
    except SuiteError:
        if suite_ref.endswith(".toml") or "/" in suite_ref:
            raise
        folder = Path(out) if out else Path("ffbench-out") / suite_ref
        if out or (folder / "results.db").exists():
            return suite_ref, folder, None  # a stored suite: its results suffice (the store says if it has any)
        stored = sorted(p.name for p in Path("ffbench-out").glob("*") if (p / "results.db").exists())
        from ffbench.plan.suite import did_you_mean, find_suite

        try:
            find_suite(suite_ref)
        except SuiteError as exc:
            raise SuiteError(
                f"{exc}; no results at {folder / 'results.db'} either"
                + (
                    f"; stored under ffbench-out/: {', '.join(stored)}{did_you_mean(suite_ref, stored)}"
                    if stored
                    else ""
                )
            ) from None
        raise
    return suite.name, Path(out) if out else default_out(suite), suite
