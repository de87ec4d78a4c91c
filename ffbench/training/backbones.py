"""Backbones and their partition into units (layers, blocks or stages).

A ``Backbone`` is a sequence of units; running them in order is the plain forward pass. Local methods
attach a head to each unit and cut the gradient at unit boundaries; BP runs them end to end. The
torchvision models are wrapped, not rewritten: their blocks are the same module objects, only the stem
is adapted to small images (3x3 stride-1 first convolution, no max-pool; any channel count).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ffbench.core.options import Option, check_options
from ffbench.core.registry import BACKBONES, Card

GRANULARITIES = ("layer", "block", "stage")
BN_PLACEMENTS = ("inside", "outside", "none")


class Backbone(nn.Module):
    """Units applied in order. ``out_shapes[k]`` is unit k's output shape without the batch dimension."""

    def __init__(
        self,
        units: Sequence[nn.Module],
        names: Sequence[str],
        in_shape: tuple[int, ...],
        granularity: str,
        source: nn.Module | None = None,
    ):
        super().__init__()
        self.units = nn.ModuleList(units)
        self.unit_names = list(names)
        self.in_shape = tuple(in_shape)
        self.granularity = granularity
        object.__setattr__(self, "source", source)  # the wrapped model, kept unregistered
        with torch.no_grad():
            h = torch.zeros(2, *in_shape)
            shapes = []
            was_training = self.training
            self.eval()
            for u in self.units:
                h = u(h)
                shapes.append(tuple(h.shape[1:]))
            self.train(was_training)
        self.out_shapes = shapes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for u in self.units:
            x = u(x)
        return x

    @property
    def is_conv(self) -> bool:
        return len(self.out_shapes[-1]) == 3


def _group(modules: list[nn.Module], bounds: list[int]) -> list[nn.Module]:
    """Split ``modules`` at the given start indices into nn.Sequential units."""
    edges = list(bounds) + [len(modules)]
    return [nn.Sequential(*modules[a:b]) for a, b in zip(edges[:-1], edges[1:])]


def _granularity(choices: tuple[str, ...], default: str | None = None) -> Option:
    kw = {} if default is None else {"default": default}
    return Option(str, help="what a unit is", choices=choices, **kw)


_BN_INSIDE = Option(str, help="BatchNorm placement (torchvision models: inside only)", choices=("inside",))
_WIDTHS = Option(int, help="a width", ge=1, le=2**20)


def _layers(default: list[int], help: str) -> Option:
    """Widths or channels per layer: at least one layer, each in [1, 2**20]."""
    return Option(
        list, default, help, item=_WIDTHS, check=bool, check_doc=f"a non-empty list, each {_WIDTHS.describe()}"
    )


# ---------------------------------------------------------------- MLP
@BACKBONES.register(
    Card(
        name="mlp",
        family="mlp",
        summary="Fully connected ReLU layers on the flattened image; a unit is a layer",
        options={
            "widths": _layers([1000, 1000, 1000], "layer widths"),
            "granularity": _granularity(("layer",), "layer"),
        },
        capabilities=frozenset({"flat"}),
    )
)
def mlp(in_shape, num_classes, widths=(1000, 1000, 1000), granularity="layer") -> Backbone:
    dims = [int(torch.tensor(in_shape).prod())] + [int(w) for w in widths]
    units = [
        nn.Sequential(*([nn.Flatten()] if i == 0 else []), nn.Linear(a, b), nn.ReLU())
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:]))
    ]
    return Backbone(units, [f"fc{i + 1}" for i in range(len(units))], in_shape, granularity)


# ---------------------------------------------------------------- CwC-style simple CNN
def _simple_cnn(
    in_shape, channels, groups, pool, bn, kernel, granularity, class_groups: list[int] | None = None
) -> Backbone:
    layers, c_in = [], in_shape[0]
    for i, (c, g) in enumerate(zip(channels, groups)):
        if c_in % g or c % g:
            raise ValueError(f"cnn layer {i + 1}: groups={g} must divide the input ({c_in}) and output ({c}) channels")
        mods: list[nn.Module] = []
        if bn == "outside" and i > 0:  # normalises the (detached) input: trained by this unit, not the last
            mods.append(nn.BatchNorm2d(c_in, eps=1e-4))
        mods += [nn.Conv2d(c_in, c, kernel, padding=kernel // 2, groups=g), nn.ReLU()]
        if i in pool:
            mods.append(nn.MaxPool2d(2))
        if bn == "inside":
            mods.append(nn.BatchNorm2d(c, eps=1e-4))
        layers.append(nn.Sequential(*mods))
        c_in = c
    if granularity == "layer":
        bounds = list(range(len(layers)))
    else:  # a block (and a stage: one resolution) ends at each pooling layer
        bounds = [0] + [i + 1 for i in sorted(pool) if i + 1 < len(layers)]
    units = _group(layers, bounds)
    names = [f"{granularity}{k + 1}" for k in range(len(units))]
    backbone = Backbone(units, names, in_shape, granularity)
    if class_groups:  # per layer, and per unit (a unit's goodness reads its last layer)
        backbone.layer_class_groups = list(class_groups)
        backbone.class_groups = [class_groups[b - 1] for b in [*bounds[1:], len(layers)]]
    return backbone


_CNN_OPTIONS = {
    "channels": _layers([20, 80, 240, 480], "output channels per layer"),
    "pool": Option(list, [1, 3], "layers (0-based) followed by 2x2 max-pooling", item=Option(int, ge=0)),
    "bn": Option(str, "inside", "BatchNorm inside the unit, on its (detached) input, or none", choices=BN_PLACEMENTS),
    "kernel": Option(int, 3, "conv kernel size", ge=1),
    "granularity": _granularity(GRANULARITIES, "layer"),
}


@BACKBONES.register(
    Card(
        name="cnn",
        family="cnn",
        summary="CwC-style simple CNN: conv3x3 -> ReLU -> [max-pool on odd layers] -> BatchNorm, per layer",
        paper="Papachristodoulou et al., AAAI 2024",
        code="andreaspapac/CwComp src/Layer_cnn.py",
        options=_CNN_OPTIONS,
        capabilities=frozenset({"conv"}),
    )
)
def cnn(
    in_shape, num_classes, channels=(20, 80, 240, 480), pool=(1, 3), bn="inside", kernel=3, granularity="layer"
) -> Backbone:
    return _simple_cnn(in_shape, list(channels), [1] * len(channels), set(pool), bn, kernel, granularity)


@BACKBONES.register(
    Card(
        name="cnn.cfse",
        family="cnn",
        summary="The simple CNN with CFSE: odd layers are grouped convolutions with groups = class count (or "
        "the layer's class groups: CwC's CIFAR-100 class-group model)",
        paper="Papachristodoulou et al., AAAI 2024",
        code="andreaspapac/CwComp src/Models.py",
        options={
            **_CNN_OPTIONS,
            "class_groups": Option(
                (list, type(None)),
                None,
                "class groups per layer (each divides the class "
                "count; unset: the class count on every layer); odd layers are grouped by it",
                item=_WIDTHS,
                source="CwComp CW_Comp_ClassGroup: [20, 20, 20, 20, 100, 100]",
            ),
        },
        capabilities=frozenset({"conv", "cfse"}),
    )
)
def cnn_cfse(
    in_shape,
    num_classes,
    channels=(20, 80, 240, 480),
    pool=(1, 3),
    bn="inside",
    kernel=3,
    granularity="layer",
    class_groups=None,
) -> Backbone:
    per_layer = list(class_groups) if class_groups else [num_classes] * len(channels)
    if len(per_layer) != len(channels) or any(num_classes % g for g in per_layer):
        raise ValueError(
            f"cnn.cfse: class_groups {per_layer} needs one entry per layer ({len(channels)}), each "
            f"dividing the class count {num_classes}"
        )
    groups = [per_layer[i] if i % 2 else 1 for i in range(len(channels))]
    for i, (c, g) in enumerate(zip(channels, groups)):
        if c % g:
            raise ValueError(
                f"cnn.cfse: layer {i + 1} has {c} channels, not divisible by its {g} class groups; "
                f"choose channels that are multiples of {g}"
            )
    return _simple_cnn(
        in_shape, list(channels), groups, set(pool), bn, kernel, granularity, per_layer if class_groups else None
    )


# ---------------------------------------------------------------- torchvision models
def _small_stem_conv(old: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, old.out_channels, 3, stride=1, padding=1, bias=old.bias is not None)


@BACKBONES.register(
    Card(
        name="resnet18",
        family="resnet",
        summary="torchvision ResNet18, small-image stem (3x3 stride 1, no max-pool); units: 8 residual blocks "
        "(block) or 4 stages (stage); the stem belongs to the first unit",
        paper="He et al. 2016",
        code="torchvision.models.resnet18",
        options={"granularity": _granularity(("block", "stage"), "block"), "bn": _BN_INSIDE},
        capabilities=frozenset({"conv", "torchvision"}),
    )
)
def resnet18(in_shape, num_classes, granularity="block", bn="inside") -> Backbone:
    import torchvision

    m = torchvision.models.resnet18(num_classes=num_classes)
    m.conv1 = _small_stem_conv(m.conv1, in_shape[0])
    m.maxpool = nn.Identity()
    stem = [m.conv1, m.bn1, m.relu]
    stages = [m.layer1, m.layer2, m.layer3, m.layer4]
    if granularity == "stage":
        units = [nn.Sequential(*stem, m.layer1)] + [nn.Sequential(s) for s in stages[1:]]
        names = [f"stage{i + 1}" for i in range(4)]
    else:
        blocks = [b for s in stages for b in s]
        units = [nn.Sequential(*stem, blocks[0])] + [nn.Sequential(b) for b in blocks[1:]]
        names = [f"block{i + 1}" for i in range(len(blocks))]
    return Backbone(units, names, in_shape, granularity, source=m)


@BACKBONES.register(
    Card(
        name="mobilenetv3",
        family="mobilenet",
        summary="torchvision MobileNetV3-Small, small-image stem (stride 1); units: inverted-residual blocks "
        "(block) or resolution stages (stage)",
        paper="Howard et al. 2019",
        code="torchvision.models.mobilenet_v3_small",
        options={
            "granularity": _granularity(("block", "stage"), "block"),
            "bn": _BN_INSIDE,
            "bn_momentum": Option(float, 0.1, "BatchNorm momentum", gt=0, le=1),
        },
        capabilities=frozenset({"conv", "torchvision"}),
        notes="bn_momentum defaults to PyTorch's 0.1: torchvision's MobileNetV3 uses 0.01, whose running statistics "
        "need hundreds of steps to settle, so short budgets evaluate at chance; 0.01 restores torchvision's.",
    )
)
def mobilenetv3(in_shape, num_classes, granularity="block", bn="inside", bn_momentum=0.1) -> Backbone:
    import torchvision

    m = torchvision.models.mobilenet_v3_small(num_classes=num_classes)
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.momentum = bn_momentum
    stem_conv = m.features[0][0]
    m.features[0][0] = nn.Conv2d(in_shape[0], stem_conv.out_channels, 3, stride=1, padding=1, bias=False)
    f = list(m.features)
    # stem + first block, then one unit per block; the final 1x1 conv joins the last block
    blocks = [[f[0], f[1]]] + [[b] for b in f[2:-1]]
    blocks[-1].append(f[-1])
    units = [nn.Sequential(*b) for b in blocks]
    names = [f"block{i + 1}" for i in range(len(units))]
    if granularity == "stage":  # a stage = the blocks at one spatial resolution
        sizes = [s[-1] for s in Backbone(units, names, in_shape, "block").out_shapes]
        bounds = [0] + [i for i in range(1, len(sizes)) if sizes[i] < sizes[i - 1]]
        flat = [[mod for mod in u] for u in units]
        edges = bounds + [len(units)]
        units = [nn.Sequential(*[mod for blk in flat[a:b] for mod in blk]) for a, b in zip(edges[:-1], edges[1:])]
        names = [f"stage{i + 1}" for i in range(len(units))]
    return Backbone(units, names, in_shape, granularity, source=m)


class RMSPool2d(nn.Module):
    """Root of the mean square over each s x s window (eps keeps the gradient finite on all-zero windows)."""

    def __init__(self, size: int, eps: float = 1e-6):
        super().__init__()
        self.size, self.eps = size, eps

    def forward(self, x):
        return (F.avg_pool2d(x * x, self.size) + self.eps).sqrt()


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channels at each position (gamma 1, beta 0, eps 1e-5)."""

    def forward(self, x):
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ASGEBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, kernel: int, pool: int):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2)
        self.act = nn.ReLU()
        self.pool = RMSPool2d(pool) if pool > 1 else nn.Identity()
        self.norm = ChannelLayerNorm(c_out)

    def relu_map(self, x):
        """The ReLU map Y that goodness reads."""
        return self.act(self.conv(x))

    def hand_on(self, y):
        """The block output from its ReLU map: RMS pooling, then LayerNorm over channels."""
        return self.norm(self.pool(y))

    def forward_pair(self, x):
        """(the ReLU map that goodness reads, the block output)."""
        y = self.relu_map(x)
        return y, self.hand_on(y)

    def forward(self, x):
        return self.forward_pair(x)[1]


@BACKBONES.register(
    Card(
        name="vgg.asge",
        family="vgg",
        summary="ASGE's VGG-like CNN: blocks conv3x3 -> ReLU -> RMS pooling (2x2, on the blocks in `pool`) -> "
        "LayerNorm over channels; a unit is a block",
        paper="Gong, Staszewski, Xu, arXiv 2509.12394 (widths and depth not found: VGG-style defaults)",
        options={
            "channels": Option(list, [64, 128, 256, 512], "output channels per block", item=Option(int, ge=1)),
            "pool": Option(list, [0, 1, 2], "blocks (0-based) followed by 2x2 RMS pooling", item=Option(int, ge=0)),
            "kernel": Option(int, 3, "conv kernel size", ge=1),
            "granularity": Option(
                str, "block", "a unit is a block (one conv each: the same as a layer)", choices=("block", "layer")
            ),
        },
        capabilities=frozenset({"conv"}),
    )
)
def vgg_asge(
    in_shape, num_classes, channels=(64, 128, 256, 512), pool=(0, 1, 2), kernel=3, granularity="block"
) -> Backbone:
    c_in, units = in_shape[0], []
    for i, c in enumerate(channels):
        units.append(ASGEBlock(c_in, int(c), kernel, 2 if i in set(pool) else 1))
        c_in = int(c)
    return Backbone(units, [f"block{i + 1}" for i in range(len(units))], in_shape, granularity)


# ---------------------------------------------------------------- DeeperForward's residual FF blocks
class DFUnit(nn.Module):
    """DeeperForward's CW-Conv unit (docs/methods/notes/deeperforward.md §12.1) with its share of the residual wiring.

    Its input is the previous unit's output, optionally followed by ``carried_in`` channels that an earlier
    unit passes along (the skip input, cut from the graph between units like any hand-off). The unit first
    joins them (``merge``: none, add or cat, in that order: own channels first), optionally 2x2
    average-pools, then ``y = Dropout(ReLU(Conv(.)))`` (bias-free, Kaiming-normal fan_out). Its output is y
    followed by what it carries on (``carry``): nothing, its joined input (average-pooled to y's size when
    the convolution strides) or the channels it received. The first ``own`` channels are y, so a method may
    normalise the unit's own activity before the next unit joins the skip input to it."""

    def __init__(
        self, c_in, c_out, kernel, stride=1, pool=False, dropout=0.0, merge="none", carry="none", carried_in=0
    ):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, bias=False)
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")
        self.drop = nn.Dropout(dropout)
        self.pool, self.merge, self.carry, self.carried_in, self.own = pool, merge, carry, carried_in, c_out

    def split(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(this unit's own channels, the channels it carries on) of its output ``h``."""
        return h[:, : self.own], h[:, self.own :]

    def forward_pair(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(y, the unit's output: y followed by what it carries on)."""
        z, skip = x[:, : x.shape[1] - self.carried_in], x[:, x.shape[1] - self.carried_in :]
        joined = z + skip if self.merge == "add" else torch.cat([z, skip], 1) if self.merge == "cat" else z
        if self.pool:
            joined = F.avg_pool2d(joined, 2)
        y = self.drop(F.relu(self.conv(joined)))
        if self.carry == "none":
            return y, y
        kept = skip if self.carry == "received" else joined
        if kept.shape[2:] != y.shape[2:]:  # ceil_mode: a strided 'same' convolution rounds odd sides up
            kept = F.avg_pool2d(kept, 2, ceil_mode=True)
        return y, torch.cat([y, kept], 1)

    def forward(self, x):
        return self.forward_pair(x)[1]


def _df_divisible(name: str, channels: Sequence[int], num_classes: int) -> None:
    bad = [int(c) for c in channels if int(c) % num_classes]
    if bad:
        raise ValueError(f"{name}: channels {bad} are not divisible by the class count {num_classes}")


_DF_DROPOUT = Option(
    float,
    0.2,
    "dropout on each unit's activity (before its goodness)",
    ge=0,
    lt=1,
    source="docs/methods/notes/deeperforward.md §12.2: dropout 0.2 [CODE main.py]",
)


@BACKBONES.register(
    Card(
        name="resnet.df",
        family="df",
        summary="DeeperForward's ResNet-17: a 3x3 stem and 4 stages of 4 CW-Conv units (stride 2 opening stages "
        "2-4); unit 2 of a stage adds the stage input, unit 4 concatenates the tensor saved after unit 2; a "
        "unit is a conv layer, the skip inputs travel as detached extra channels",
        paper="Sun et al., DeeperForward, ICLR 2025 (Table 1, Fig. 3; docs/methods/notes/deeperforward.md §12.1)",
        code="tobysunsun/deeperforward model/resnet.py, read in a third-party copy (facts only)",
        options={
            "planes": Option(
                list,
                [100, 200, 400, 800],
                "channels per stage (each a multiple of the class "
                "count; stage s+1 takes 2x stage s's after the concatenation)",
                item=Option(int, ge=1),
                check=lambda v: len(v) >= 1,
                check_doc="a non-empty list",
                source="docs/methods/notes/deeperforward.md §12.1 [CODE]; resnet_large triples them",
            ),
            "dropout": _DF_DROPOUT,
            "granularity": _granularity(("layer",), "layer"),
        },
        capabilities=frozenset({"conv"}),
    )
)
def resnet_df(in_shape, num_classes, planes=(100, 200, 400, 800), dropout=0.2, granularity="layer") -> Backbone:
    planes = [int(p) for p in planes]
    _df_divisible("resnet.df", planes, num_classes)
    if any(b != 2 * a for a, b in zip(planes, planes[1:])):  # unit 3 adds the concatenated stage input
        raise ValueError(f"resnet.df: planes {planes} must double from stage to stage (e.g. [100, 200, 400, 800])")
    units = [DFUnit(in_shape[0], planes[0], 3, dropout=dropout)]
    names, c_prev = ["stem"], planes[0]
    for s, p in enumerate(planes):
        first = s == 0
        c_in, carried = (c_prev, 0) if first else (2 * c_prev, c_prev)  # the concatenated stage input
        units += [
            DFUnit(
                c_in,
                p,
                3,
                1 if first else 2,
                dropout=dropout,
                merge="none" if first else "cat",
                carry="joined",
                carried_in=carried,
            ),
            DFUnit(p, p, 3, dropout=dropout, carry="received", carried_in=c_in),
            DFUnit(p, p, 3, dropout=dropout, merge="add", carry="joined", carried_in=c_in),
            DFUnit(p, p, 3, dropout=dropout, carry="none" if s + 1 == len(planes) else "received", carried_in=p),
        ]
        names += [f"stage{s + 1}.{j + 1}" for j in range(4)]
        c_prev = p
    return Backbone(units, names, in_shape, granularity)


@BACKBONES.register(
    Card(
        name="tinycnn.df",
        family="df",
        summary="DeeperForward's TinyCNN-4: CW-Conv 5x5 -> [AvgPool2] 5x5 -> [AvgPool2] 3x3 -> 3x3 (the pools open "
        "the following unit); a unit is a conv layer",
        paper="Sun et al., DeeperForward, ICLR 2025 (Table 1; docs/methods/notes/deeperforward.md §12.1)",
        code="tobysunsun/deeperforward model/tinycnn.py, read in a third-party copy (facts only)",
        options={
            "channels": Option(
                list,
                [100, 200, 400, 400],
                "channels of the four units (multiples of the class count)",
                item=Option(int, ge=1),
                check=lambda v: len(v) == 4,
                check_doc="a list of four",
                source="docs/methods/notes/deeperforward.md §12.1 [CODE]",
            ),
            "dropout": _DF_DROPOUT,
            "granularity": _granularity(("layer",), "layer"),
        },
        capabilities=frozenset({"conv"}),
    )
)
def tinycnn_df(in_shape, num_classes, channels=(100, 200, 400, 400), dropout=0.2, granularity="layer") -> Backbone:
    c = [in_shape[0]] + [int(v) for v in channels]
    _df_divisible("tinycnn.df", c[1:], num_classes)
    units = [DFUnit(c[i], c[i + 1], k, pool=i in (1, 2), dropout=dropout) for i, k in enumerate((5, 5, 3, 3))]
    return Backbone(units, [f"layer{i + 1}" for i in range(4)], in_shape, granularity)


# ---------------------------------------------------------------- spatial goodness


# ---------------------------------------------------------------- Trifecta's CNN
TRIFECTA_LARGE = {"channels": [64, 128, 128, 128, 128, 256, 256, 256, 256, 512, 512, 512], "pool": [1, 5, 9]}


@BACKBONES.register(
    Card(
        name="cnn.trifecta",
        family="cnn",
        summary="Trifecta's CNN: blocks norm(input) -> conv3x3 (no bias) -> ReLU -> [max-pool]; the normalisation "
        "(BatchNorm, or LayerNorm over (C, H, W)) sits at the block's input; a unit is a block",
        paper="Dooms, Tsang, Oramas 2023, arXiv 2311.18130",
        code="tdooms/trifecta main.py (no licence: facts only)",
        options={
            "channels": _layers([128, 128, 256, 256, 256, 512], "output channels per block (default: 'small')"),
            "pool": Option(list, [0, 2, 5], "blocks (0-based) followed by 2x2 max-pooling", item=Option(int, ge=0)),
            "norm": Option(str, "bn", "the block input's normalisation: BatchNorm or LayerNorm", choices=("bn", "ln")),
            "label_channels": Option(
                int, 1, "channels a method adds to the input (Trifecta's label embedding; 0 for any other method)", ge=0
            ),
            "granularity": Option(
                str, "block", "a unit is a block (one conv each: the same as a layer)", choices=("block", "layer")
            ),
        },
        capabilities=frozenset({"conv"}),
        notes="Defaults: the 'small' model. 'large': channels "
        f"{TRIFECTA_LARGE['channels']}, pool {TRIFECTA_LARGE['pool']}. The reference's `scale` multiplies the widths.",
    )
)
def cnn_trifecta(
    in_shape,
    num_classes,
    channels=(128, 128, 256, 256, 256, 512),
    pool=(0, 2, 5),
    norm="bn",
    label_channels=1,
    granularity="block",
) -> Backbone:
    (c_in, *hw), units = in_shape, []
    c_in += label_channels
    for i, c in enumerate(channels):
        first = nn.BatchNorm2d(c_in) if norm == "bn" else nn.LayerNorm([c_in, *hw])
        mods = [first, nn.Conv2d(c_in, int(c), 3, padding=1, bias=False), nn.ReLU()]
        if i in set(pool):
            mods.append(nn.MaxPool2d(2))
            hw = [s // 2 for s in hw]
        units.append(nn.Sequential(*mods))
        c_in = int(c)
    return Backbone(
        units, [f"block{i + 1}" for i in range(len(units))], (in_shape[0] + label_channels, *in_shape[1:]), granularity
    )


def build(name: str, in_shape: tuple[int, ...], num_classes: int, options: dict | None = None) -> Backbone:
    """The backbone ``name`` with ``options`` checked against its card (the one place they are checked)."""
    entry = BACKBONES.get(name)
    options = check_options(entry.card.options, dict(options or {}), f"backbone {name}")
    return entry.obj(tuple(in_shape), num_classes, **options)
