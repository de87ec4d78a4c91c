"""Compute figures measured alike: a real suite where bp's seeds train stacked (seed batching) and a method
without a backward pass trains alone. The end-of-run table and the report say how each cell was executed,
never show a zero-width interval for the batch's equal per-seed shares, and show '—' (not 0) for the
activations saved for backward of a method that keeps none; peak GPU memory is absent on the CPU."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from suites import suite_toml

from ffbench import stats
from ffbench.analysis.report import build_report, report_dir
from ffbench.cli import main
from ffbench.core.method import Method, method_card
from ffbench.record.store import Store


class _Own(nn.Module):
    """A tensor of its own beside a sub-layer: the seed stacking cannot split it, so the seeds train alone."""

    def __init__(self, n):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(n), requires_grad=False)
        self.inner = nn.Linear(n, n)

    def forward(self, h):
        return self.inner(h) * self.scale


@method_card(
    name="test.nobackward",
    summary="test-only: a read-out trained by a delta rule, no backward pass",
    rules=("head",),
    capabilities=frozenset({"any-backbone"}),
)
class NoBackward(Method):
    def __init__(self, backbone, num_classes, options, ctx):
        super().__init__(backbone, num_classes, options, ctx)
        self.head = nn.Linear(int(np.prod(backbone.out_shapes[-1])), num_classes)
        self.extra = _Own(num_classes)

    @torch.no_grad()
    def train_step(self, x, y):
        h = self.backbone(x).flatten(1)
        err = F.softmax(self.head(h), 1) - F.one_hot(y, self.head.out_features).float()
        self.head.weight -= 0.05 * err.T @ h / len(x)
        return {"loss": F.cross_entropy(self.head(h), y)}

    def evaluate(self, x):
        return {"head": self.extra(self.head(self.backbone(x).flatten(1)))}, []


SUITE = suite_toml(
    "alike",
    suite={"control": "bp"},
    methods=["bp", "test.nobackward"],
    datasets=["digits"],
    seeds=[0, 1, 2],
    batch_size=None,
)


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("alike")
    (tmp / "alike.toml").write_text(SUITE)
    out = tmp / "out"
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(
            ["run", str(tmp / "alike.toml"), "--out", str(out), "--no-progress", "--device", "cpu", "--no-tracking"]
        )
    assert code == 0, buf.getvalue()
    return out, buf.getvalue()


def test_the_store_says_how_each_run_was_executed(ran):
    out, _ = ran
    frame = Store(out / "results.db").frame("alike")
    by_method = frame.groupby("method")["batched_seeds"].agg(lambda s: set(s.fillna("alone")))
    assert by_method["bp"] == {"0,1,2"} and by_method["test.nobackward"] == {"alone"}
    assert "batched_seeds" not in stats.infer_factors(frame)  # how a run was executed is not a factor
    long = stats.compute_table(frame, ["epoch_time_s", "saved_bytes_per_step", "peak_mem_bytes"], ["method"])
    bp = long[(long["method"] == "bp") & (long["quantity"] == "epoch_time_s")].iloc[0]
    # three equal per-seed shares of one stacked step: one measurement, so no interval (not a zero-width one)
    assert bp["executed"] == "batched ×3" and bp["runs"] == 3 and bp["measurements"] == 1
    assert np.isnan(bp["ci_low"]) and "one measurement" in bp["ci_method"]
    alone = long[(long["method"] == "test.nobackward") & (long["quantity"] == "epoch_time_s")].iloc[0]
    assert alone["executed"] == "alone" and alone["measurements"] == 3 and alone["ci_low"] < alone["ci_high"]
    saved = long[long["quantity"] == "saved_bytes_per_step"].set_index("method")
    assert saved.loc["bp", "mean"] > 0 and np.isnan(saved.loc["test.nobackward", "mean"])
    assert saved.loc["test.nobackward", "no_backward"] == 3
    assert (long.loc[long["quantity"] == "peak_mem_bytes", "measurements"] == 0).all()  # CPU: no peak memory


def test_the_end_of_run_table_labels_execution_and_memory(ran):
    _, printed = ran
    head = next(ln for ln in printed.splitlines() if ln.startswith("| dataset"))
    assert "| executed | s/epoch | backward activations MB/step |" in head and "peak" not in head  # CPU run
    cells = [[c.strip() for c in ln.strip("|").split("|")] for ln in printed.splitlines() if ln.startswith("| digits")]
    rows = {c[2]: c for c in cells}
    col = [c.strip() for c in head.strip("|").split("|")]
    exe, saved = col.index("executed"), col.index("backward activations MB/step")
    assert rows["bp"][exe] == "batched ×3" and rows["test.nobackward"][exe] == "alone"
    assert float(rows["bp"][saved]) > 0 and rows["test.nobackward"][saved] == "—"
    assert "share of one stacked step" in printed and "keeps no tensor for a backward pass" in printed


def test_the_report_compares_time_like_for_like(ran):
    out, _ = ran
    build_report(out, "alike", kinds=["comparison"], n_resamples=200)
    md = (report_dir(out, "alike") / "comparison.md").read_text()
    sec = md[md.index("Time and memory") :]
    assert "executed" in sec and "independent measurements" in sec and "batched ×3" in sec
    assert "— (no backward pass)" in sec and "no interval: one measurement" in sec
    header = next(ln for ln in sec.splitlines() if ln.startswith("| task | method | executed"))
    assert "not like for like" in sec and "peak" not in header  # CPU runs: no peak-memory column
    table = pd.read_csv(report_dir(out, "alike") / "tables" / "comparison" / "compute.csv")
    assert set(table["executed"]) == {"alone", "batched ×3"}


def test_intervals_count_batches_not_seeds_and_peak_memory_shows_where_measured():
    """Two batches of three seeds and three runs alone in one cell (as CUDA would record them): two
    measurements for the batched row, three for the row alone, never pooled; the peak column appears."""
    from ffbench.execution import results

    rows = [
        {
            "method": "bp",
            "seed": s,
            "status": "done",
            "batched_seeds": b,
            "epoch_time_s": t,
            "peak_mem_bytes": 2**20 * m,
        }
        for b, t, m in (("0,1,2", 0.10, 30), ("3,4,5", 0.12, 31))
        for s in range(3)
    ]
    rows += [
        {
            "method": "bp",
            "seed": 6 + i,
            "status": "done",
            "batched_seeds": None,
            "epoch_time_s": t,
            "peak_mem_bytes": 2**20 * 12,
        }
        for i, t in enumerate((0.20, 0.22, 0.21))
    ]
    long = stats.compute_table(pd.DataFrame(rows), ["epoch_time_s", "peak_mem_bytes"], ["method"])
    t = long[long["quantity"] == "epoch_time_s"].set_index("executed")
    assert t.loc["batched ×3", "measurements"] == 2 and t.loc["batched ×3", "ci_method"] == "t over batches"
    assert t.loc["batched ×3", "mean"] == pytest.approx(0.11)
    assert stats.t_interval([0.10, 0.12]).low == pytest.approx(t.loc["batched ×3", "ci_low"])
    assert t.loc["alone", "measurements"] == 3 and t.loc["alone", "mean"] == pytest.approx(0.21)
    row = dict(
        dataset="d",
        backbone="mlp",
        method="bp",
        n=9,
        failed=0,
        test_acc_mean=90.0,
        test_acc_sd=1.0,
        test_acc_ci_low=89.0,
        test_acc_ci_high=91.0,
        verdict="control",
        executed="alone + batched ×3",
        epoch_time_s=0.21,
        saved_MB_per_step=1.5,
        no_backward=False,
        peak_MB_per_step=12.0,
    )
    text = results.format_table(pd.DataFrame([row]))
    assert "| peak GPU MB/step |" in text and text.splitlines()[2].endswith("| 12.00 |")
    assert "a cell run both ways shows its runs alone" in text
