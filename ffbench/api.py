"""The plugin API: everything a method, backbone, dataset, axis or report plugin imports, in one place.

    from ffbench.api import LocalMethod, Option, method_card

Names here keep their meaning within a minor version; a change to any of them is listed in CHANGELOG.md
under "Plugin API", with how to port a plugin. ``PLUGIN_API`` is the version of this contract.
"""

from ffbench import __version__, stats
from ffbench.analysis.document import Section, fmt_ci, fmt_num, fmt_p, fmt_pct
from ffbench.analysis.report import ReportKind, report_kind
from ffbench.analysis.report_context import ReportContext
from ffbench.core.heads import (
    GoodnessHead,
    GroupedGoodnessHead,
    LinearHead,
    class_goodness,
    grouped_goodness,
    linear,
    make_head,
)
from ffbench.core.method import UPDATES, Context, LocalMethod, Method, freeze, method_card, step, variant
from ffbench.core.options import Option, OptionError, odd
from ffbench.core.registry import AXES, BACKBONES, DATASETS, METHODS, ByDataset, Card
from ffbench.data.datasets import DataError, RawData
from ffbench.plan.axes import Axis
from ffbench.plan.axes import register as register_axis
from ffbench.training.backbones import Backbone

PLUGIN_API = "0.2"

__all__ = [
    "AXES",
    "BACKBONES",
    "Axis",
    "DATASETS",
    "METHODS",
    "PLUGIN_API",
    "UPDATES",
    "Backbone",
    "ByDataset",
    "Card",
    "Context",
    "DataError",
    "GoodnessHead",
    "GroupedGoodnessHead",
    "LinearHead",
    "LocalMethod",
    "Method",
    "Option",
    "OptionError",
    "RawData",
    "ReportContext",
    "ReportKind",
    "Section",
    "__version__",
    "class_goodness",
    "fmt_ci",
    "fmt_num",
    "fmt_p",
    "fmt_pct",
    "freeze",
    "grouped_goodness",
    "linear",
    "make_head",
    "method_card",
    "odd",
    "register_axis",
    "report_kind",
    "stats",
    "step",
    "variant",
]
