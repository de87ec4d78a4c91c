"""Per-example test correctness, stored compactly with each evaluation run (``test_correct_bits``: base64
of ``np.packbits``, about n/8 bytes), so a report can separate test-set sampling variance from seed variance.
No torch, no pandas: the training loop writes it and the statistics read it."""

from __future__ import annotations

import base64

import numpy as np


def encode_correct(correct: np.ndarray) -> str:
    return base64.b64encode(np.packbits(np.asarray(correct, bool)).tobytes()).decode("ascii")


def decode_correct(bits: str, n: int) -> np.ndarray:
    """The inverse of ``encode_correct`` for ``n`` examples."""
    out = np.unpackbits(np.frombuffer(base64.b64decode(bits), dtype=np.uint8))[: int(n)].astype(bool)
    if len(out) != int(n):
        raise ValueError(f"test_correct_bits holds {len(out)} examples, n_test says {n}")
    return out
