"""The local process pool of ``run --workers N`` / ``worker --workers N``: N ``ffbench worker``
processes on this machine, one device each (round-robin over the GPUs), their logs under ``<out>/logs``,
and the signals: SIGTERM behaves like Ctrl-C (``Interrupted``, exit status 128 + the signal), so a worker
gives its run back before it exits; the launcher gives back the runs of a local worker that crashed or was
killed as soon as it exits instead of waiting for its lease, stops its workers when it is stopped, and its
workers receive SIGTERM if the launcher itself dies (Linux), so none is left behind.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from ffbench.execution.lease import LEASE_S, POLL_S
from ffbench.execution.signals import Interrupted, check_interrupted, exit_status, install_signal_handlers, interrupts  # noqa: F401 (re-exported: pool.Interrupted, pool.interrupts)
from ffbench.execution.workers import progress
from ffbench.plan.design import Design
from ffbench.plan.suite import Suite
from ffbench.record.store import Store, worker_name

logger = logging.getLogger(__name__)

DEVICES = "auto (cuda when present, else cpu), cpu, cuda, cuda:N"


def device_problem(device: str) -> str | None:
    """Why ``--device`` cannot be used on this machine (one line naming what can), or None; torch is imported only
    for a CUDA device."""
    m = re.fullmatch(r"(auto|cpu|cuda)(?::(\d{1,6}))?", device)
    if m is None or (m[2] is not None and m[1] != "cuda"):
        return f"--device {device!r}: not a device; allowed: {DEVICES}"
    if m[1] != "cuda":
        return None
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if not count:
        return f"--device {device!r}: this machine has no CUDA device; allowed: auto or cpu"
    if m[2] is not None and int(m[2]) >= count:
        return (
            f"--device {device!r}: this machine has {count} CUDA device{'s' * (count > 1)}; allowed: auto, cpu, "
            f"cuda, cuda:0..cuda:{count - 1}"
        )
    return None


def assign_devices(device: str, n: int) -> list[str]:
    """One device per worker: round-robin over the GPUs for ``auto`` / ``cuda``, else the given one."""
    if device in ("auto", "cuda"):
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count:
            return [f"cuda:{i % count}" for i in range(n)]
        if device == "cuda":
            raise RuntimeError("--device cuda, but no CUDA device is available")
        return ["cpu"] * n
    return [device] * n


def spawn(
    n: int,
    suite_path: Path,
    out: Path,
    store_url: str,
    optuna_url: str | None,
    tracking_uri: str | None,
    device: str = "auto",
    lease_s: float = LEASE_S,
    poll_s: float = POLL_S,
    part: Sequence[str] = (),
) -> list[subprocess.Popen]:
    """Start ``n`` ``ffbench worker`` processes on this machine (logs under ``out/logs``); ``part``: the
    ``--cells`` / ``--seeds`` arguments of the part of the suite they work on."""
    devices = assign_devices(device, n)
    logs = Path(out) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = os.environ.copy()
    env.pop("MLFLOW_RUN_ID", None)
    if all(d == "cpu" for d in devices):  # n processes share the cores instead of oversubscribing them
        env.setdefault("FFBENCH_THREADS", str(max(1, (os.cpu_count() or 1) // n)))
    procs = []
    for i, dev in enumerate(devices):
        cmd = [
            sys.executable,
            "-m",
            "ffbench.cli",
            "worker",
            str(suite_path),
            "--out",
            str(out),
            "--store",
            store_url,
            "--device",
            dev,
            "--lease",
            str(lease_s),
            "--poll",
            str(poll_s),
            "--no-init",
            "--no-progress",
            *part,
        ]
        cmd += ["--optuna-storage", optuna_url] if optuna_url else []
        cmd += ["--tracking-uri", tracking_uri] if tracking_uri else ["--no-tracking"]
        log = open(logs / f"worker-{i}.log", "ab")
        procs.append(
            subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        )
        log.close()
    return procs


def wait_for(
    procs: list[subprocess.Popen], store: Store, suite: Suite, design: Design, bar=None, interval: float = 1.0
) -> list[int]:
    """Wait for local worker processes, updating a progress bar from the store; return exit codes. A worker
    that exits with an error has its runs given back at once (the others take them over). Interrupted, it
    stops every worker (SIGTERM: they give their runs back; SIGKILL after 30 s) and re-raises."""
    reaped: set[int] = set()
    try:
        while any(p.poll() is None for p in procs):
            _release_dead(procs, store, reaped)
            if bar is not None:
                bar.n = progress(store, suite, design)["finished"]
                bar.refresh()
            time.sleep(interval)
    except KeyboardInterrupt:
        stop(procs)
        _release_dead(procs, store, reaped)
        raise
    _release_dead(procs, store, reaped)
    if bar is not None:
        bar.n = progress(store, suite, design)["finished"]
        bar.refresh()
    return [p.returncode for p in procs]


def stop(procs: list[subprocess.Popen], grace: float = 30.0) -> None:
    """SIGTERM every running worker (each gives its run back), then SIGKILL those still there after ``grace``."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    end = time.time() + grace
    for p in procs:
        try:
            p.wait(timeout=max(0.1, end - time.time()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _release_dead(procs: list[subprocess.Popen], store: Store, reaped: set[int] | None = None) -> None:
    """A local worker that crashed or was killed holds no run any more: give its runs back now."""
    reaped = set() if reaped is None else reaped
    for p in procs:
        if p.pid in reaped or p.poll() is None:
            continue
        reaped.add(p.pid)
        if p.returncode:
            n = store.release_worker(f"{worker_name().rsplit(':', 1)[0]}:{p.pid}")
            if n:
                logger.warning(f"worker process {p.pid} exited with {p.returncode}; gave back {n} run(s) it held")


def _die_with_parent() -> None:
    """In a worker process, before exec: receive SIGTERM when the launcher dies (Linux prctl
    PR_SET_PDEATHSIG), so a killed launcher leaves no worker running on its own."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def set_threads() -> None:
    n = os.environ.get("FFBENCH_THREADS")
    if n:
        import torch

        torch.set_num_threads(int(n))
