"""The forward-forward family's building blocks: goodness and normalisation conventions, negative labels,
the logistic FF loss and peer normalisation, shared by ``ff.hinton`` and the goodness methods built on it."""

from __future__ import annotations

import torch
import torch.nn.functional as F

SCALES = {"sum-rms": ("sum", "rms"), "mean-l2": ("mean", "l2")}  # goodness, normalisation; theta = N or 2
NEGATIVES = ("uniform", "permutation", "hard")
EPS = 1e-8


class StraightReLU(torch.autograd.Function):
    """ReLU whose backward passes the gradient everywhere (MATLAB/loeweX): it only changes the peer-norm
    term, since the goodness gradient 2h is already 0 where the unit is off. Saves nothing for backward."""

    @staticmethod
    def forward(ctx, z):
        return z.clamp_min(0)

    @staticmethod
    def backward(ctx, grad):
        return grad


def goodness(h: torch.Tensor, kind: str) -> torch.Tensor:
    """Per row: the sum (``sum``) or mean (``mean``) of h^2 over the last dimension."""
    return h.pow(2).sum(-1) if kind == "sum" else h.pow(2).mean(-1)


def normalise(h: torch.Tensor, norm: str) -> torch.Tensor:
    """Per row: h over its root mean square (``rms``) or its L2 norm (``l2``)."""
    if norm == "rms":
        return h / (h.pow(2).mean(-1, keepdim=True).sqrt() + EPS)
    return h / (h.norm(dim=-1, keepdim=True) + EPS)


def ff_loss(g_pos: torch.Tensor, g_neg: torch.Tensor, theta: float) -> torch.Tensor:
    """BCE-with-logits on g - theta, target 1 for positives and 0 for negatives, mean over the 2B rows."""
    return F.softplus(torch.cat([theta - g_pos, g_neg - theta])).mean()


def symba_loss(g_pos: torch.Tensor, g_neg: torch.Tensor, alpha: float) -> torch.Tensor:
    """SymBa's loss on paired rows (zoo.md §1.1): mean over b of softplus(-alpha (g_pos[b] - g_neg[b])), no
    threshold; its gradient is symmetric in the positive and negative goodness."""
    return F.softplus(-alpha * (g_pos - g_neg)).mean()


def peer_loss(running_mean: torch.Tensor) -> torch.Tensor:
    """Peer normalisation: mean over units of (mean_j m_j - m_j)^2; its gradient is 2(m_j - mean m)/N."""
    return (running_mean.mean() - running_mean).pow(2).mean()


def sample_negatives(
    y: torch.Tensor, k: int, kind: str, gen: torch.Generator, logits: torch.Tensor | None = None
) -> torch.Tensor:
    """Negative labels: ``uniform`` over the K-1 wrong classes (never the true one), ``permutation`` of the
    batch's labels (may equal the true label, mpezeshki), or ``hard``: drawn from the neutral-label softmax
    with the true class masked out (official MATLAB)."""
    if kind == "uniform":
        return (y + torch.randint(1, k, y.shape, generator=gen, device=y.device)) % k
    if kind == "permutation":
        return y[torch.randperm(len(y), generator=gen, device=y.device)]
    if kind == "hard":  # torch.multinomial's one-sample draw, argmax p / Exp(1), without its checks' host syncs
        probs = logits.float().scatter(1, y[:, None], float("-inf")).softmax(1)
        return (probs / torch.empty_like(probs).exponential_(generator=gen)).argmax(1)
    raise AssertionError(kind)  # options are validated before the method is built


def resolve_scale(scale: str, goodness: str, norm: str) -> tuple[str, str]:
    """The scale conventions travel together (§9.1): ``goodness``/``norm`` may only restate ``scale``."""
    want_g, want_n = SCALES[scale]
    if goodness not in ("auto", want_g) or norm not in ("auto", want_n):
        g, n = (want_g if goodness == "auto" else goodness), (want_n if norm == "auto" else norm)
        fix = next((s for s, pair in SCALES.items() if pair == (g, n)), None)
        hint = f"set scale={fix!r} instead" if fix else "valid pairs: sum+rms (theta=N), mean+l2 (theta=2)"
        raise ValueError(
            f"ff: mixed scale conventions goodness={g!r} with norm={n!r} under scale={scale!r}; "
            f"goodness, normalisation and threshold travel together ({hint})"
        )
    return want_g, want_n
