"""The pretraining stage of a transfer suite, and how a run adapts from it.

A run with ``adapt`` set starts from the backbone its source task trained (``config.source``: the source
run's configuration without seed; the seed is the run's own, so seed s of every method starts from the
source's seed s). Pretrained backbones are kept per (source configuration, seed) in ``weights_dir`` as
``<key>.pt`` (the backbone's state dict, loaded only with ``torch.load(weights_only=True)``) beside
``<key>.json`` (its SHA-256, the source's configuration and accuracy, its training time). The first run
that needs one trains it, under a file lock, so concurrent workers train it once; every other run, of any
cell, reuses it. A checkpoint whose hash does not match, that does not load as a state dict of tensors, or
whose names and shapes do not fit the backbone is trained again (with a warning), never recorded as the
method's failure.

``{"weights": "imagenet"}`` is the other kind of source: torchvision's ImageNet weights of a torchvision
backbone (online, or from torch's hub cache), checked when the suite is planned.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ffbench import __version__
from ffbench.core.config import RunConfig, content_hash
from ffbench.core.filelock import file_lock
from ffbench.core.paths import inside

IMAGENET = "imagenet"
# torchvision's weights per backbone (the names its `get_weight` takes)
IMAGENET_WEIGHTS = {
    "resnet18": "ResNet18_Weights.IMAGENET1K_V1",
    "mobilenetv3": "MobileNet_V3_Small_Weights.IMAGENET1K_V1",
}


class SourceError(RuntimeError):
    """The source task could not give a backbone (it failed, or its weights are missing)."""


def default_weights_dir() -> Path:
    base = os.environ.get("FFBENCH_DATA")
    return Path(base) / "pretrained" if base else Path.home() / ".cache" / "ffbench" / "pretrained"


def source_config(config: RunConfig) -> RunConfig:
    """The source run of ``config``: its source task with the run's seed."""
    return RunConfig.from_dict({**config.source, "seed": config.seed})


def source_key(source: RunConfig) -> str:
    return content_hash(source.to_dict(), __version__, length=16)


def sha256(path: Path) -> str:
    """A checkpoint file's hash, as its sidecar records it."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------- the pretraining stage
def pretrained(
    config: RunConfig, device: torch.device, weights_dir: str | Path | None = None, rejected: str | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The source backbone's state dict for ``config`` and what the manifest records about it. ``rejected``:
    the hash of a stored source that did not fit the method (``DamagedSource``): trained again."""
    if config.source.get("weights") == IMAGENET:
        return imagenet_state(config.backbone), {"weights": IMAGENET, "name": IMAGENET_WEIGHTS[config.backbone]}
    src = source_config(config)
    key = source_key(src)
    folder = Path(weights_dir) if weights_dir else default_weights_dir()
    path, meta = inside(folder, f"{key}.pt"), inside(folder, f"{key}.json")
    with file_lock(folder / f"{key}.lock"):
        state, info = _verified(path, meta, device, rejected)
        reused = info is not None
        if info is None:
            data, info = _train_source(src, key, device, path, meta)
            state = torch.load(io.BytesIO(data), map_location=device, weights_only=True)
    return state, {
        k: info.get(k) for k in ("key", "sha256", "seed", "val_acc", "test_acc", "train_time_s", "epochs")
    } | {"reused": reused}


class DamagedSource(RuntimeError):
    """A stored source backbone that does not fit the method it should start (its record is not the source's
    fault, nor the method's): the source is trained again."""


def _verified(
    path: Path, meta: Path, device: torch.device, rejected: str | None = None
) -> tuple[dict[str, torch.Tensor] | None, dict[str, Any] | None]:
    """(a source backbone's state, its sidecar) when the content matches the sidecar's hash and loads as a
    state dict of tensors (``torch.load(weights_only=True)``: a pickle that would run code is refused), else
    (None, None): missing, or to be trained again. ``rejected``: the hash of a file found not to fit."""
    if not (path.exists() and meta.exists()):
        return None, None
    try:
        info = json.loads(meta.read_text())
    except (ValueError, UnicodeDecodeError):
        info = None
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if not isinstance(info, dict) or info.get("sha256") != digest or digest == rejected:
        return _retrain(path, "its record does not match it" if digest != rejected else "it does not fit the method")
    try:
        state = torch.load(io.BytesIO(data), map_location=device, weights_only=True)  # the bytes that were hashed
    except Exception as exc:
        return _retrain(path, f"it cannot be loaded as weights ({type(exc).__name__})")
    if not (
        isinstance(state, dict)
        and state
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())
    ):
        return _retrain(path, "it is not a state dict of tensors")
    return state, info


def _retrain(path: Path, why: str) -> tuple[None, None]:
    print(f"warning: pretrained source {path} is not used ({why}); the source is trained again", file=sys.stderr)
    return None, None


def _train_source(
    src: RunConfig, key: str, device: torch.device, path: Path, meta: Path
) -> tuple[bytes, dict[str, Any]]:
    from ffbench.training.train import fit

    t0 = time.perf_counter()
    result = fit(src, device, keep_model=True)
    if result.status != "done":
        raise SourceError(f"the source run ({src.method} on {src.dataset}, seed {src.seed}) failed: {result.error}")
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in result.model.backbone.state_dict().items()}, buffer)
    data = buffer.getvalue()
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)  # a kill leaves no half-written checkpoint under the real name
    info = {
        "key": key,
        "sha256": hashlib.sha256(data).hexdigest(),
        "seed": src.seed,
        "config": src.to_dict(),
        "val_acc": result.metrics.get("val_acc"),
        "test_acc": result.metrics.get("test_acc"),
        "epochs": src.epochs,
        "train_time_s": result.compute.get("train_time_s"),
        "wall_s": time.perf_counter() - t0,
    }
    tmp = meta.with_name(meta.name + ".tmp")
    tmp.write_text(json.dumps(info, indent=1, default=str))
    os.replace(tmp, meta)
    return data, info


# ---------------------------------------------------------------- ImageNet weights (online)
def imagenet_file(backbone: str) -> tuple[str, Path]:
    """(the download URL, where torch's hub cache keeps it) of ``backbone``'s ImageNet weights."""
    import torchvision

    weights = torchvision.models.get_weight(IMAGENET_WEIGHTS[backbone])
    return weights.url, Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)


def fetch_imagenet(backbone: str) -> Path:
    """The cached weights file, downloaded if missing; SourceError naming the file and URL when it cannot be."""
    if backbone not in IMAGENET_WEIGHTS:
        raise SourceError(f"ImageNet weights exist for {', '.join(IMAGENET_WEIGHTS)} only, not {backbone}")
    url, path = imagenet_file(backbone)
    if not path.exists():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(url, str(path), progress=False)
        except Exception as exc:
            raise SourceError(
                f"ImageNet weights of {backbone} are missing: {path} does not exist and {url} could "
                f"not be downloaded ({type(exc).__name__}: {str(exc)[:120]}). Put the file there, or "
                f"choose a dataset as the [transfer] source"
            ) from None
    return path


def imagenet_state(backbone: str) -> dict[str, torch.Tensor]:
    return torch.load(fetch_imagenet(backbone), map_location="cpu", weights_only=True)


# ---------------------------------------------------------------- checked when a suite is planned
def check_sources(suite, cells) -> None:
    """Every source of the design can start its target runs: ImageNet weights are here (or download), and a
    dataset source gives the backbone the same shapes as the target (image size; on cnn.cfse the class
    count). SuiteError naming [transfer] otherwise, before anything trains."""
    from ffbench.core.config import canonical_json, class_problem
    from ffbench.data.datasets import load
    from ffbench.plan.suite import SuiteError
    from ffbench.training import backbones

    done: set[str] = set()
    for cell in cells:
        c = cell.config
        if not c.source:
            continue
        key = canonical_json([c.dataset, c.backbone, c.backbone_options, c.keep_classes, c.classes, c.source])
        if key in done:
            continue
        done.add(key)
        if c.source.get("weights") == IMAGENET:
            try:
                fetch_imagenet(c.backbone)
            except SourceError as exc:
                raise SuiteError(f"{suite.path}: [transfer].dataset = {IMAGENET!r}: {exc}") from None
            continue
        src = source_config(c)
        ends = []
        for run, where in ((src, "[transfer]"), (c, "the target")):
            raw = load(run.dataset, run.dataset_options.get("root"))
            why = class_problem(run.keep_classes, raw.num_classes, run.dataset)
            if why:
                raise SuiteError(f"{suite.path}: {where} classes {run.keep_classes}: {why}")
            k = len(run.keep_classes) if run.keep_classes else run.classes or raw.num_classes
            ends.append((raw.shape, k, run))
        (s_shape, s_k, _), (t_shape, t_k, _) = ends
        a = backbones.build(c.backbone, s_shape, s_k, c.backbone_options).state_dict()
        b = backbones.build(c.backbone, t_shape, t_k, c.backbone_options).state_dict()
        differ = sorted(n for n in b if n not in a or a[n].shape != b[n].shape)
        if s_shape != t_shape or differ:
            raise SuiteError(
                f"{suite.path}: [transfer]: the source {src.dataset} (images {s_shape}, {s_k} classes) cannot start "
                f"{c.backbone} on the target {c.dataset} (images {t_shape}, {t_k} classes): "
                + (
                    "the image sizes differ"
                    if s_shape != t_shape
                    else f"parameter shapes differ ({', '.join(differ[:3])})"
                )
                + "; allowed: a source with the target's image size and, on class-grouped backbones, its class count"
            )


# ---------------------------------------------------------------- adapting a built method
def load_backbone(method: nn.Module, state: dict[str, torch.Tensor], source: dict[str, Any]) -> list[str]:
    """Copy the source weights into the method's backbone; return the names left at their initialisation
    (ImageNet weights only: the small-image stem and the classifier, whose shapes differ)."""
    backbone = method.backbone
    if source.get("weights") != IMAGENET:
        backbone.load_state_dict(state, strict=True)
        return []
    model = backbone.source  # the wrapped torchvision model: its names are the weights' names
    own = model.state_dict()
    take = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(take, strict=False)
    return sorted(k for k in own if k not in take)


def start(method, config: RunConfig, state: dict[str, torch.Tensor], info: dict[str, Any]) -> dict[str, Any]:
    """Put a freshly built method on its source backbone (``pretrained``'s state and record) in ``config.adapt``
    mode; the manifest's record. ``DamagedSource`` when a stored source's weights do not fit the backbone
    (missing names, other shapes), before anything else changes."""
    if config.source.get("weights") != IMAGENET:
        own = method.backbone.state_dict()
        wrong = sorted(set(own) ^ set(state)) + sorted(k for k in own if k in state and own[k].shape != state[k].shape)
        if wrong:
            raise DamagedSource(
                f"the stored source {info.get('key')} does not fit the backbone ({', '.join(wrong[:3])})"
            )
    kept = load_backbone(method, state, config.source)
    method.adapt(config.adapt, config.adapt_units)
    trainable = sum(p.numel() for p in method.parameters() if p.requires_grad)
    return {
        **info,
        "mode": config.adapt,
        "adapt_units": config.adapt_units,
        "not_loaded": kept,
        "trainable_params": trainable,
    }
