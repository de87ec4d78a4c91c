"""ffbench compares forward-forward training methods against backpropagation on equal terms: a suite (a TOML
file, or the name of one in suites/) declares methods x datasets x backbones x axis levels x seeds; `run`
trains what is missing into a results store, mirrors it into MLflow live, and prints the table with each
cell's interval and verdict against the control; `report` writes the statistical reports."""

from __future__ import annotations

import argparse
import errno
import importlib
import math
import sys


class Command(argparse.ArgumentParser):
    """A command's parser whose arguments are added when the command is used (parsed, or its help shown): the
    module that defines them and the handler, and whatever their defaults come from, are imported for that
    command only, so ``ffbench --version``, ``--help`` and ``list`` do not pay for torch, MLflow or the
    statistics."""

    def __init__(self, *args, where: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._where = where  # "module:arguments function:handler"

    def _load(self) -> None:
        if self._where is None:
            return
        module, arguments, handler = self._where.split(":")
        self._where = None
        code = importlib.import_module(module)
        getattr(code, arguments)(self)
        self.set_defaults(func=getattr(code, handler))
        # `ffbench run --debug ...` as well as `ffbench --debug run ...`
        self.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
        self.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS, help=VERBOSE_HELP)

    def parse_known_args(self, args=None, namespace=None):
        self._load()
        return super().parse_known_args(args, namespace)

    def format_usage(self) -> str:
        self._load()
        return super().format_usage()

    def format_help(self) -> str:
        self._load()
        return super().format_help()


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Examples kept as written, and every option's default shown (unless its help states it)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            "default" in text
            or action.default in (None, False, argparse.SUPPRESS)
            or action.nargs == 0
            or not action.option_strings
        ):
            return text
        return f"{text} (default: %(default)s)"


EXAMPLES = {
    "run": """examples:
  ffbench run quick                           # the bundled quick suite, into ffbench-out/quick
  ffbench run my-suite.toml --out results/    # a suite file, into results/
  ffbench run quick --dry-run                 # cells, runs, budget and a time estimate; trains nothing
  ffbench run quick --workers 2 --device cuda # two worker processes, one GPU each
  ffbench run quick --rerun 'ff*'             # train the ff* cells again (old results kept as superseded)
  ffbench run repro-cwc --cells 'cwc/mnist/*' --seeds 0-2  # part of a suite now, the rest later""",
    "worker": """examples:
  ffbench worker quick --store postgresql://host/db --optuna-storage postgresql://host/db \\
      --tracking-uri http://host:5000         # on each further machine of a shared suite
  ffbench worker quick --workers 4            # four local workers on the default store""",
    "report": """examples:
  ffbench report quick                        # every report kind; prints the headline
  ffbench report quick --kind comparison --rope-pp 0.2
  ffbench report my-study                     # a suite stored under ffbench-out/my-study, file or not
  ffbench report --out results/               # the one suite stored in results/""",
    "sync": """examples:
  ffbench sync quick                          # copy into MLflow what a kill or an outage left out
  ffbench sync quick --tracking-uri http://host:5000""",
    "list": """examples:
  ffbench list methods                        # every method card
  ffbench list methods 'ff*'                  # wildcards
  ffbench list axes""",
    "data": """examples:
  ffbench data fetch fashion-mnist mnist      # the offline datasets on machines without internet""",
    "ui": """examples:
  ffbench ui quick                            # MLflow on ffbench-out/quick, at http://127.0.0.1:5000
  ffbench ui my-study --port 5001             # a stored suite, another port
  ffbench ui --out results/""",
    "export": """examples:
  ffbench export quick
  ffbench export quick --format parquet --to tables/ --percent""",
    "prune": """examples:
  ffbench prune quick          # lists what it would delete
  ffbench prune quick --yes    # deletes it""",
    "merge": """examples:
  ffbench merge all/ laptop-out/ cluster-out/   # every run once; conflicts refused
  ffbench merge all/results.db a/ b/ --no-tracking""",
    "compare": """examples:
  ffbench compare before/ after/             # two output folders
  ffbench compare quick@2 quick@3 --out ffbench-out/quick --to diff.md""",
    "board": """examples:
  ffbench board ffbench-out/quick ffbench-out/small-data --to board/
  ffbench board benchmarks/studies/*.csv benchmarks/reproduction/*.csv --to board/""",
}

# name: (its help line, where its arguments and handler are: "module:arguments function:handler")
COMMANDS = {
    "run": (
        "run a suite: train every run not finished yet, then print the results table",
        "ffbench.cli.run:run_arguments:cmd_run",
    ),
    "worker": (
        "a worker on a suite's shared store (start one per machine or device)",
        "ffbench.cli.run:worker_arguments:cmd_worker",
    ),
    "report": (
        "statistical reports (HTML + markdown) of a suite's results, and their headline",
        "ffbench.cli.report:report_arguments:cmd_report",
    ),
    "sync": (
        "copy into MLflow the finished runs a kill or an outage left out",
        "ffbench.cli.run:sync_arguments:cmd_sync",
    ),
    "list": (
        "list registered methods, datasets, backbones, axes or report kinds, with their cards",
        "ffbench.cli.listing:list_arguments:cmd_list",
    ),
    "data": (
        "datasets: fetch the offline ones (nothing else needs fetching)",
        "ffbench.cli.listing:data_arguments:cmd_data",
    ),
    "ui": (
        "start the MLflow UI on a suite's output folder (127.0.0.1), opened on its run table",
        "ffbench.cli.ui:ui_arguments:cmd_ui",
    ),
    "export": (
        "tidy tables of a suite's results (runs, per-epoch curves, per-unit curves) as CSV or Parquet",
        "ffbench.record.export:add_export_arguments:main_export",
    ),
    "prune": (
        "delete the runs of superseded cells (settings or code changed since) from the store and MLflow",
        "ffbench.cli.prune:add_prune_arguments:main_prune",
    ),
    "merge": (
        "combine the results stores of one suite run on several machines or folders into one",
        "ffbench.analysis.merge:add_merge_arguments:main_merge",
    ),
    "compare": (
        "two sets of a suite's results side by side: per cell the difference with its interval, "
        "the verdict, and what changed (settings, code, libraries, machine)",
        "ffbench.analysis.compare_runs:add_compare_arguments:main_compare",
    ),
    "board": (
        "one leaderboard page (HTML, markdown, CSV) across suites and datasets: method × task with "
        "intervals, verdicts against bp and bp.deepsup, budget and cost",
        "ffbench.analysis.board:add_board_arguments:main_board",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    """The command line; each command's arguments are added when it is used (``Command``)."""
    from ffbench import __version__

    parser = argparse.ArgumentParser(
        prog="ffbench",
        description=__doc__,
        formatter_class=HelpFormatter,
        epilog="examples:\n  ffbench run quick\n  ffbench report quick\n  ffbench ui quick"
        "\n\n`ffbench COMMAND --help` explains each command.",
    )
    parser.add_argument("--version", action="version", version=f"ffbench {__version__}")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    parser.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Command)
    for name, (summary, where) in COMMANDS.items():
        sub.add_parser(
            name,
            help=summary,
            description=summary[0].upper() + summary[1:] + ".",
            epilog=EXAMPLES[name],
            formatter_class=HelpFormatter,
            where=where,
        )
    return parser


def main(argv: list[str] | None = None) -> int:
    from ffbench.core.log import show_on_stderr

    show_on_stderr()  # the library's warnings and notes, as plain lines on stderr
    args = build_parser().parse_args(argv)  # --version and --help end here
    from ffbench.record.tracking import configure_environment, quiet_logging

    quiet_logging(args.verbose)
    configure_environment()  # MLflow telemetry and timeouts are decided when MLflow is first imported
    try:
        problem = value_problem(args)
        if problem:  # before any suite is read or any run claimed
            print(f"error: {problem}", file=sys.stderr)
            return 2
        return args.func(args)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("interrupted: rerun the same command to resume", file=sys.stderr)
        return 130
    except Exception as exc:
        from ffbench.record.store import disk_full_line, is_disk_full

        if not args.debug and is_disk_full(exc):  # the infrastructure's, not the input's: exit 3
            print(f"error: {disk_full_line(exc)}", file=sys.stderr)
            return 3
        message = None if args.debug else user_error(exc)
        if message is None:
            raise  # a bug, or --debug: the traceback
        print(f"error: {message}", file=sys.stderr)
        return 2


MAX_WORKERS = 256
RESAMPLES = (100, 1_000_000)  # bootstrap resamples a report may ask for


def value_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with a command-line value that needs no suite or store to judge (one line naming the option
    and what it allows), or None."""
    if getattr(args, "device", None) is not None:
        from ffbench.execution.pool import device_problem

        problem = device_problem(args.device)
        if problem:
            return problem
    if getattr(args, "workers", None) is not None and not 1 <= args.workers <= MAX_WORKERS:
        return f"--workers {args.workers}: allowed: 1..{MAX_WORKERS}"
    if args.command != "report":
        return None
    if not 0 < args.alpha < 1:
        return f"--alpha {args.alpha:g}: allowed: a significance level strictly between 0 and 1 (e.g. 0.05)"
    if not RESAMPLES[0] <= args.resamples <= RESAMPLES[1]:
        return f"--resamples {args.resamples}: allowed: {RESAMPLES[0]}..{RESAMPLES[1]:,} bootstrap resamples"
    if args.seed < 0:
        return f"--seed {args.seed}: allowed: a non-negative integer"
    for v in args.rope_pp or []:
        name, _, num = v.rpartition("=")
        try:
            pp = float(num)
        except ValueError:
            pp = math.nan
        if not 0 <= pp < 100:
            return (
                f"--rope-pp {v!r}: allowed: a number of percentage points in [0, 100), for every dataset or "
                f"as DATASET=NUMBER"
            )
    return None


DEBUG_HELP = "show the traceback of an error"
VERBOSE_HELP = "show MLflow's own log lines (INFO and up; by default only its warnings)"


def user_error(exc: BaseException) -> str | None:
    """The message for an error the user can fix (bad input, a file, a folder, a full disk, a database that
    cannot be opened), or None for anything else (a bug: its traceback is shown)."""
    from ffbench.core.options import OptionError
    from ffbench.core.paths import OutsideError
    from ffbench.core.registry import DuplicateNameError, UnknownNameError
    from ffbench.data.datasets import DataError
    from ffbench.plan.suite import SuiteError

    if isinstance(exc, (SuiteError, DataError, OptionError, UnknownNameError, DuplicateNameError, OutsideError)):
        return str(exc)
    if isinstance(exc, OSError):
        return _os_message(exc)
    cause = getattr(exc, "orig", None)  # SQLAlchemy's wrapper around the database driver's error
    if type(exc).__module__.startswith("sqlalchemy") and type(exc).__name__ in ("OperationalError", "ArgumentError"):
        detail = cause if cause is not None else str(exc).splitlines()[0]
        return (
            f"results store: {detail}; check that the output folder (--out) is writable, or that the --store URL "
            f"is right and its server reachable"
        )
    return None


def _os_message(exc: OSError) -> str:
    where = f"{exc.filename}: " if exc.filename is not None else ""
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"{where}{exc.strerror}; choose a folder you can write (--out) or fix its permissions"
    if where and exc.strerror:
        return f"{where}{exc.strerror}"
    return str(exc)


if __name__ == "__main__":
    sys.exit(main())
