"""The manifest of a run: what made its numbers (versions, device, threads, host, the processor and the
instruction set its kernels use, and the git commit with a dirty flag and the hash of the uncommitted diff),
stored with every result; ``execute`` adds the random streams and the cell's code fingerprints
(``design.code_fingerprint``)."""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from ffbench import __version__

REPO = Path(__file__).resolve().parents[2]  # the checkout's root when ffbench runs from one; else site-packages


def manifest(device: str) -> dict[str, Any]:
    import numpy
    import torch

    # git status refreshes the index and takes index.lock unless told not to: a run must never hold a lock
    # that a user's git command in the same tree then trips over
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}

    def git(*args: str) -> str:
        if not (REPO / ".git").exists():  # installed: site-packages may lie inside another repository (a .venv)
            return ""
        try:
            return subprocess.run(
                ["git", "-C", str(REPO), *args], capture_output=True, text=True, env=env, timeout=10
            ).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return ""

    diff = git("diff", "HEAD")
    m = {
        "ffbench": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "host": platform.node(),
        "device": device,
        "threads": torch.get_num_threads(),
        **processor(),
        "git_commit": git("rev-parse", "HEAD") or "unknown",
        "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "git_diff_sha256": hashlib.sha256(diff.encode()).hexdigest()[:16] if diff else "",
    }
    if device.startswith("cuda"):
        m["gpu"] = torch.cuda.get_device_name(0)
        m["cuda"] = torch.version.cuda
        m["cudnn"] = torch.backends.cudnn.version()
        m["gpu_memory_bytes"] = torch.cuda.get_device_properties(0).total_memory
    return m


def processor() -> dict[str, Any]:
    """The CPU and the instruction set torch's kernels use: float results of the same code can differ in the
    last bits between AVX2 and AVX-512 machines (oneDNN picks its kernels by it; ``ONEDNN_MAX_CPU_ISA`` caps
    it), so a result carries them."""
    import torch

    model = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    except OSError:
        pass
    out = {
        "cpu": model or "unknown",
        "cpu_count": os.cpu_count(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }
    if os.environ.get("ONEDNN_MAX_CPU_ISA"):
        out["onednn_max_cpu_isa"] = os.environ["ONEDNN_MAX_CPU_ISA"]
    return out


MACHINE_KEYS = ("host", "cpu", "cpu_count", "cpu_capability", "onednn_max_cpu_isa", "gpu", "gpu_memory_bytes")


def machine(m: dict[str, Any] | None) -> str:
    """One line naming the machine a run's manifest was recorded on: host, processor, logical cores, the
    instruction set torch's kernels used, and the accelerator with its memory; '?' for what an older
    manifest lacks."""
    m = m or {}
    cpu = m.get("cpu") or "cpu ?"
    cores = f"{m['cpu_count']} cores" if m.get("cpu_count") else "cores ?"
    isa = m.get("onednn_max_cpu_isa") or m.get("cpu_capability")
    parts = [str(m.get("host") or "host ?"), cpu, cores] + ([str(isa)] if isa else [])
    if m.get("gpu"):
        mem = m.get("gpu_memory_bytes")
        parts.append(f"{m['gpu']} ({mem / 2**30:.0f} GiB)" if mem else str(m["gpu"]))
    return ", ".join(parts)
