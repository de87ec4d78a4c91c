"""A run's training state at an epoch end, so that a killed or interrupted run resumes where it stopped.

``train.fit`` saves it at the end of an epoch once ``every_s`` seconds of wall time have passed since the
last save (``FFBENCH_CHECKPOINT_S``, default 120: runs of a few minutes never write one), and the worker
deletes it once the run's outcome is recorded. It holds everything the rest of the run reads: the
method's parameters and buffers, every optimizer's state, the order, augmentation and method streams,
torch's global generators, the curves and best-epoch metrics so far and the loop's counters. A run
resumed at the torch thread count it started with equals one that never stopped, bit for bit (tested per
method); the manifest lists the epochs it resumed after. A file written for another configuration or
format is ignored and replaced at the next save. Torch is imported where it is used: the planner and
the Ray driver import this module for its paths alone.
"""
from __future__ import annotations

import io
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

FORMAT = 1
DEFAULT_EVERY_S = 120.0


def every_s() -> float:
    raw = os.environ.get("FFBENCH_CHECKPOINT_S", "")
    try:
        return float(raw) if raw.strip() else DEFAULT_EVERY_S
    except ValueError:
        raise ValueError(f"FFBENCH_CHECKPOINT_S={raw!r} is not a number of seconds") from None


def path_for(directory: str | Path, run_id: str) -> Path:
    return Path(directory) / f"{run_id}.pt"


class Checkpoint:
    """One run's checkpoint file: ``load`` what a matching earlier process left, ``due``/``save`` at epoch
    ends, ``remove`` once the outcome is recorded."""

    def __init__(self, path: str | Path, config: dict[str, Any], every: float | None = None):
        self.path, self.config = Path(path), config
        self.every = every_s() if every is None else every
        self.last = time.monotonic()

    def load(self) -> dict[str, Any] | None:
        import torch

        try:
            blob = self.path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            state = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
        except Exception:  # a file torn or written by something else: start over
            return None
        if not isinstance(state, dict) or state.get("format") != FORMAT or state.get("config") != self.config:
            return None
        return state

    def due(self) -> bool:
        return time.monotonic() - self.last >= self.every

    def save(self, state: dict[str, Any]) -> None:
        import torch

        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        torch.save({"format": FORMAT, "config": self.config, **state}, tmp)
        os.replace(tmp, self.path)  # a kill mid-write leaves the previous checkpoint whole
        self.last = time.monotonic()

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def generator_states(gens: dict[str, torch.Generator | None]) -> dict[str, torch.Tensor]:
    return {name: g.get_state() for name, g in gens.items() if g is not None}


def global_rng_state() -> dict[str, Any]:
    import torch

    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    return {"cpu": torch.get_rng_state(), "cuda": cuda}


def restore_global_rng(state: dict[str, Any]) -> None:
    import torch

    torch.set_rng_state(state["cpu"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
