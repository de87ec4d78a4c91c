"""`ffbench board` end to end: a real suite trained into a store (bp, bp.deepsup, ff.hinton on synthetic data, 1
epoch) and a committed per-seed CSV on one page; the numbers against the store; sortable and readable in
headless Chromium at 1400 and 390 px."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
from suites import suite_toml
from test_report_browser import CHROMIUM, MIN_WINDOW, PHONE, chromium

from ffbench.cli import main
from ffbench.execution import runner
from ffbench.record import resultset
from ffbench.record.store import Store

ROOT = Path(__file__).resolve().parent.parent
STUDY = ROOT / "benchmarks" / "studies" / "small-data.csv"
SUITE = suite_toml(
    "boardtest",
    version=2,
    suite={"control": "bp", "batch_seeds": False},  # every run alone: the cost ratio compares runs executed alike
    methods=["bp", "bp.deepsup", "ff.hinton"],
    seeds=[0, 1, 2],
    widths=[16, 16],
)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    d = tmp_path_factory.mktemp("board")
    (d / "boardtest.toml").write_text(SUITE)
    runner.run_suite(str(d / "boardtest.toml"), d / "out", device="cpu", progress=False, track=False)
    assert main(["board", str(d / "out"), str(STUDY), "--to", str(d / "board")]) == 0
    return d


def test_the_board_reads_the_suites_results(built):
    table = pd.read_csv(built / "board" / "board.csv")
    mine = table[table["suite"] == "boardtest"].set_index("method")
    assert set(mine.index) == {"bp", "bp.deepsup", "ff.hinton"} and set(mine["task"]) == {"synthetic/mlp"}
    frame = resultset.load(Store(built / "out" / "results.db"), "boardtest").frame
    for m, g in frame.groupby("method"):
        assert mine.loc[m, "mean"] == pytest.approx(g["test_acc"].mean()) and mine.loc[m, "n"] == 3
        assert mine.loc[m, "ci_low"] <= mine.loc[m, "mean"] <= mine.loc[m, "ci_high"]
    assert mine.loc["bp", "vs_bp"] == "control" and mine.loc["bp.deepsup", "vs_bp.deepsup"] == "control"
    assert mine.loc["ff.hinton", "vs_bp"].split(" (")[0] in ("better", "worse", "equivalent", "insufficient evidence")
    assert str(mine.loc["ff.hinton", "epochs"]) == "1" and mine.loc["bp", "suite_version"] == 2
    assert len(mine.loc["bp", "code"]) == 8  # the code fingerprint, short
    # cost: ff.hinton's s/epoch over bp's, both executed alike in this suite on this machine
    ff, bp = (frame.loc[frame["method"] == m, "epoch_time_s"].mean() for m in ("ff.hinton", "bp"))
    cost = mine.loc["ff.hinton", "cost_vs_bp"]
    assert float(re.search(r"×([\d.]+)", cost).group(1)) == pytest.approx(ff / bp, abs=0.006)
    assert "(batched ×3)" in cost or "(alone)" in cost
    # the committed study beside it: its own tasks (train_size is part of the task), verdicts against its bp
    study = table[table["suite"] == "small-data"]
    assert len(study) == 18 and study["task"].str.contains("train_size=100").any()
    page = (built / "board" / "board.md").read_text()
    assert "## Machines" in page and "cores" in page  # the machine the store's runs were recorded on


def test_bad_inputs_are_one_line(built, tmp_path, capsys):
    bad = tmp_path / "x.csv"
    bad.write_text("a,b\n1,2\n")
    assert main(["board", str(bad), "--to", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "test_acc" in err and len(err.strip().splitlines()) == 1
    assert main(["board", str(built / "out"), str(built / "out" / "results.db"), "--to", str(tmp_path / "b")]) == 2
    assert "ffbench merge" in capsys.readouterr().err


SORT_PROBE = """<script>window.addEventListener('load',()=>{
const t=document.querySelector('.table-wrap table'),heads=[...t.querySelectorAll('th')];
const col=heads.findIndex(h=>h.textContent.startsWith('test acc'));
heads[col].click();const first=t.tBodies[0].rows[0].cells[col].textContent;
heads[col].click();const again=t.tBodies[0].rows[0].cells[col].textContent;
const r={page:document.documentElement.scrollWidth,viewport:window.innerWidth,first:first,again:again,
  wraps:[...document.querySelectorAll('.table-wrap')].map(w=>getComputedStyle(w).overflowX)};
const p=document.createElement('pre');p.id='probe';p.textContent=JSON.stringify(r);
document.body.appendChild(p);if(window.parent!==window)window.parent.postMessage(JSON.stringify(r),'*');});</script>"""


@pytest.mark.parametrize("width", (1400, 390))
def test_the_page_sorts_and_never_scrolls_sideways(built, width, tmp_path):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is absent (Debian: apt-get install chromium)")
    page = tmp_path / f"board-{width}.html"
    page.write_text((built / "board" / "board.html").read_text().replace("</body>", SORT_PROBE + "</body>"))
    if width < MIN_WINDOW:
        wrapper = tmp_path / f"frame-{width}.html"
        wrapper.write_text(PHONE.format(src=page.name, width=width))
        page = wrapper
    proc = chromium(
        [f"--window-size={max(width, MIN_WINDOW)},2000", "--dump-dom", page.resolve().as_uri()], tmp_path, page.stem
    )
    m = re.search(r'<pre id="probe">(.*?)</pre>', proc.stdout)
    assert m, proc.stderr[-2000:]
    seen = json.loads(m.group(1).replace("&quot;", '"'))
    assert seen["viewport"] == width and seen["page"] <= width, seen
    assert all(o in ("auto", "scroll") for o in seen["wraps"])  # a wide table scrolls in its own box
    means = pd.read_csv(built / "board" / "board.csv")["mean"]
    assert float(seen["first"].split()[0]) == pytest.approx(means.max() * 100, abs=0.006)  # highest first
    assert float(seen["again"].split()[0]) == pytest.approx(means.min() * 100, abs=0.006)  # then lowest
