"""``ffbench ui``: the MLflow server on a suite's output folder, supervised (a busy port refused, the address
printed once it answers, its whole process group stopped on Ctrl-C or SIGTERM)."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from ffbench.cli.locate import locate


def ui_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "suite", nargs="?", help="a suite file or name, or the name of a suite stored under ffbench-out/<name>"
    )
    p.add_argument("--out", help="the output directory given to `ffbench run` (default: ffbench-out/<suite name>)")
    p.add_argument("--port", type=int, default=5000, help="port on 127.0.0.1")


def experiment_id(db: Path, name: str | None) -> str | None:
    """The ID of suite ``name``'s experiment in an MLflow SQLite file (read directly: no MLflow import);
    without a name, the one ffbench experiment there."""
    import sqlite3

    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
            rows = con.execute(
                "SELECT e.experiment_id, e.name FROM experiments e JOIN experiment_tags t ON "
                "t.experiment_id = e.experiment_id WHERE t.key = 'ffbench.suite' AND "
                "e.lifecycle_stage = 'active'"
            ).fetchall()
    except sqlite3.Error:
        return None
    found = [str(i) for i, n in rows if name is None or n == name]
    return found[0] if len(found) == 1 else None


UI_START_S = 120.0  # how long `ffbench ui` waits for the MLflow server to answer (it takes about 25 s)


def cmd_ui(args: argparse.Namespace) -> int:
    """The MLflow UI on a suite's output folder: refuses a busy port, prints the address once the server
    answers, and stops the server's whole process group on Ctrl-C or SIGTERM."""
    if args.suite is None and args.out is None:
        print(
            "error: ffbench ui: give a SUITE (its output folder is ffbench-out/<suite>, as for `ffbench run`) "
            "or --out DIR",
            file=sys.stderr,
        )
        return 2
    if args.suite is None:
        name, out = None, Path(args.out)
    else:
        name, out, _ = locate(args.suite, args.out)
    db = out.resolve() / "mlflow.db"
    if not db.exists():
        print(f"error: no MLflow store at {db}; run the suite first (ffbench run SUITE --out {out})", file=sys.stderr)
        return 2
    if not 0 < args.port < 65536:
        print(f"error: --port {args.port}: allowed: 1..65535", file=sys.stderr)
        return 2
    if port_busy(args.port):
        print(
            f"error: port {args.port} on 127.0.0.1 is in use (another MLflow UI?); stop what uses it or choose "
            f"another with --port",
            file=sys.stderr,
        )
        return 2
    uri = f"sqlite:///{db}"
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        uri,
        "--default-artifact-root",
        (db.parent / "mlartifacts").as_uri(),
        "--host",
        "127.0.0.1",
        "--port",
        str(args.port),
    ]
    print(f"starting the MLflow server on {uri} (about 25 s) ...", file=sys.stderr, flush=True)
    base = f"http://127.0.0.1:{args.port}"
    eid = experiment_id(db, name)
    from ffbench.record.tracking import experiment_url

    return serve(cmd, base, "MLflow UI", UI_START_S, show=experiment_url(base, eid) if eid else None)


def port_busy(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def _answers(url: str) -> bool:
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(url, timeout=2).close()
    except urllib.error.HTTPError:
        return True  # an HTTP error is an answer
    except (OSError, ValueError):
        return False
    return True


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def serve(cmd: list[str], url: str, what: str, start_s: float, show: str | None = None) -> int:
    """Run server ``cmd`` in its own process group; print ``url`` (or the page ``show``) once it answers; on
    Ctrl-C, SIGTERM or SIGHUP (or when it exits) stop the whole group, so none of its worker processes is
    left behind."""
    proc = subprocess.Popen(cmd, start_new_session=True)
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        deadline = time.monotonic() + start_s
        while not _answers(url):
            if proc.poll() is not None:
                print(
                    f"error: the {what} server exited with code {proc.returncode} before answering (its output "
                    f"is above)",
                    file=sys.stderr,
                )
                return 1
            if time.monotonic() > deadline:
                print(
                    f"error: the {what} server did not answer on {url} within {start_s:g} s; stopped it",
                    file=sys.stderr,
                )
                return 1
            time.sleep(0.25)
        print(f"{what} on {show or url}  (Ctrl-C stops it)", flush=True)
        return proc.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        stop_group(proc)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def stop_group(proc: subprocess.Popen, grace_s: float = 5.0) -> None:
    """SIGTERM to ``proc``'s process group (it leads one), then SIGKILL to whatever is left after ``grace_s``."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        pass
    while time.monotonic() < deadline and _group_alive(proc.pid):
        time.sleep(0.1)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True
