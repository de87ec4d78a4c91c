"""A run's training state at an epoch end, so that a killed or interrupted run resumes where it stopped.

``train.fit`` saves it at the end of an epoch once ``every_s`` seconds of wall time have passed since the
last save (``FFBENCH_CHECKPOINT_S``, default 120: runs of a few minutes never write one), and the worker
deletes it once the run's outcome is recorded. It holds everything the rest of the run reads: the
method's parameters and buffers, every optimizer's state, the order, augmentation and method streams,
torch's global generators, the curves and best-epoch metrics so far and the loop's counters. A run
resumed at the torch thread count it started with equals one that never stopped, bit for bit (tested per
method); the manifest lists the epochs it resumed after. A file that does not verify as this run's own
(``Checkpoint``), or whose state does not fit the built method, is discarded with a warning and the run
starts over. Torch is imported where it is used: the planner and the Ray driver import this module for its
paths alone.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import os
import secrets
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

FORMAT = 2
MAGIC = b"FFBENCH-CHECKPOINT-2 "  # then the hex HMAC of (binding, content) and a newline, then torch.save's bytes
DEFAULT_EVERY_S = 120.0
KEY_FILE = ".key"


def every_s() -> float:
    raw = os.environ.get("FFBENCH_CHECKPOINT_S", "")
    try:
        return float(raw) if raw.strip() else DEFAULT_EVERY_S
    except ValueError:
        raise ValueError(f"FFBENCH_CHECKPOINT_S={raw!r} is not a number of seconds") from None


def path_for(directory: str | Path, run_id: str) -> Path:
    from ffbench.core.paths import inside

    return inside(directory, f"{run_id}.pt")  # a run ID read from the store never leads elsewhere


def binding(run_id: str, config: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint belongs to: its run, the configuration's hash and the code the run trains with (the
    modules of its method, backbone and dataset, and ffbench's version)."""
    from ffbench import __version__
    from ffbench.core.config import content_hash
    from ffbench.plan.design import code_fingerprint

    try:
        code = code_fingerprint(config["method"], config["backbone"], config["dataset"])
    except Exception:  # a name this process cannot look up: the configuration still binds it
        code = None
    return {"run_id": run_id, "config": content_hash(config), "code": code, "ffbench": __version__}


def _key(directory: Path) -> bytes:
    """The output folder's secret for checkpoint digests (made once, readable by its owner only): a file
    written by anything but ffbench's own save does not verify."""
    path = directory / KEY_FILE
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".key.{os.getpid()}.{time.time_ns()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(secrets.token_bytes(32))
    try:
        os.link(tmp, path)  # the first process's key wins
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return path.read_bytes()


def _digest(key: bytes, bound: dict[str, Any], content: bytes) -> str:
    from ffbench.core.config import canonical_json

    return hmac.new(key, canonical_json(bound).encode() + b"\0" + content, hashlib.sha256).hexdigest()


class Checkpoint:
    """One run's checkpoint file: ``load`` what an earlier process of the same run left, ``due``/``save`` at
    epoch ends, ``remove`` once the outcome is recorded.

    Each file is bound to its run (run ID, configuration hash, code fingerprint) by a keyed digest over the
    binding and the content, checked before a byte of it is unpickled (and then only with
    ``torch.load(weights_only=True)``). A file that does not verify, is not of this run, or does not fit the
    loop (an epoch outside 1..epochs-1, curves that do not match it) is discarded with a warning and the run
    starts over: a checkpoint can never finish a run it did not train."""

    def __init__(self, path: str | Path, config: dict[str, Any], every: float | None = None):
        self.path, self.config = Path(path), config
        self.every = every_s() if every is None else every
        self.last = time.monotonic()
        self.bound = binding(self.path.stem, config)

    def load(self) -> dict[str, Any] | None:
        """The state saved for this run, or None (no file, or one discarded with a warning)."""
        try:
            blob = self.path.read_bytes()
        except FileNotFoundError:
            return None
        state, why = self._verify(blob)
        if why is not None:
            self.discard(why)
        return state

    def _verify(self, blob: bytes) -> tuple[dict[str, Any] | None, str | None]:
        import torch

        head, _, content = blob.partition(b"\n")
        if not head.startswith(MAGIC):
            return None, "not a checkpoint of this ffbench (no digest)"
        if not hmac.compare_digest(head[len(MAGIC) :], _digest(_key(self.path.parent), self.bound, content).encode()):
            return None, "its digest does not match: damaged, written by something else, or of another run or code"
        try:
            state = torch.load(io.BytesIO(content), map_location="cpu", weights_only=True)
        except Exception as exc:
            return None, f"it cannot be read ({type(exc).__name__})"
        if not isinstance(state, dict) or state.get("format") != FORMAT or state.get("config") != self.config:
            return None, "it was written for another configuration or format"
        epochs, epoch = self.config.get("epochs"), state.get("epoch")
        if not (isinstance(epoch, int) and isinstance(epochs, int) and 0 < epoch < epochs):
            return None, f"its epoch {epoch!r} is not one a run of {epochs} epochs saves after"
        if not isinstance(state.get("curves"), list) or len(state["curves"]) != epoch:
            return None, f"its curves do not match its epoch {epoch}"
        return state, None

    def discard(self, why: str) -> None:
        """Say why this run's checkpoint is not used, and remove it (the run continues from the start)."""
        print(f"warning: checkpoint {self.path} discarded: {why}; the run starts from its first epoch", file=sys.stderr)
        self.remove()

    def due(self) -> bool:
        return time.monotonic() - self.last >= self.every

    def save(self, state: dict[str, Any]) -> None:
        import torch

        self.path.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        torch.save({"format": FORMAT, "config": self.config, **state}, buffer)
        content = buffer.getvalue()
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as fh:
            fh.write(MAGIC + _digest(_key(self.path.parent), self.bound, content).encode() + b"\n")
            fh.write(content)
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
