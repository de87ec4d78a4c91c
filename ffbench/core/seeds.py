"""One run seed -> independent named random streams.

Every method run with seed s sees the same data split, data order and augmentation, because those
streams depend only on (s, stream name). That makes per-seed differences between methods paired
(common random numbers). Nothing here touches the global RNG state except ``torch_scope``, which
restores it on exit.
"""

from __future__ import annotations

import contextlib
import zlib

import numpy as np
import torch

STREAMS = ("split", "classes", "subset", "order", "augment", "init", "method")


class Streams:
    def __init__(self, seed: int):
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        self.seed = seed

    def int_seed(self, name: str) -> int:
        """A 63-bit seed for stream ``name``; stable across processes and platforms."""
        if name not in STREAMS:
            raise ValueError(f"unknown random stream {name!r}; allowed: {', '.join(STREAMS)}")
        seq = np.random.SeedSequence([self.seed, zlib.crc32(name.encode())])
        return int(seq.generate_state(1, np.uint64)[0] >> np.uint64(1))

    def numpy(self, name: str) -> np.random.Generator:
        return np.random.default_rng(self.int_seed(name))

    def torch(self, name: str, device: torch.device | str = "cpu") -> torch.Generator:
        g = torch.Generator(device=device)
        g.manual_seed(self.int_seed(name))
        return g

    def as_dict(self) -> dict[str, int]:
        return {name: self.int_seed(name) for name in STREAMS}

    @contextlib.contextmanager
    def torch_scope(self, name: str):
        """Seed torch's global RNG (CPU and CUDA) for code that only uses it (module init), then restore it."""
        devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.int_seed(name))
            yield
