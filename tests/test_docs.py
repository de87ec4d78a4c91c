"""The documentation site: it builds with --strict, its code is real (the method tutorial's methods register, train
and learn; the axis and report-kind examples plan a suite and build a page; every other Python block compiles and
every TOML block parses), every built-in method has a generated page, every citation of the method notes in the
code points at a section that exists, and the pages fit a desktop and a phone without sideways scrolling."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from ffbench.core.config import RunConfig
from ffbench.core.registry import METHODS
from ffbench.plan.design import expand
from ffbench.plan.suite import load
from ffbench.training.train import fit

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
TESTS = Path(__file__).resolve().parent
HAND_WRITTEN = sorted(p for p in DOCS.rglob("*.md") if "generated" not in p.parts) + [ROOT / "README.md"]
FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)
CHROMIUM = "/usr/bin/chromium"


def blocks(path: Path, lang: str) -> list[str]:
    return [code for kind, code in FENCE.findall(path.read_text()) if kind == lang]


def block(path: Path, first_line: str) -> str:
    """The code block of ``path`` that starts with ``first_line`` (e.g. ``# mypkg/myff.py``)."""
    found = [code for _, code in FENCE.findall(path.read_text()) if code.startswith(first_line + "\n")]
    assert len(found) == 1, (path.name, first_line, len(found))
    return found[0]


def run_python(code: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter (a plugin it registers stays out of this process's registries)."""
    script = tmp_path / "script.py"
    script.write_text(code)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.run(
        [sys.executable, str(script)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False
    )


# ---------------------------------------------------------------- the site
@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    if importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("material") is None:
        pytest.skip("mkdocs / mkdocs-material are not installed (pip install -e '.[docs]'; `make test` installs them)")
    out = tmp_path_factory.mktemp("site")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out


def test_the_site_builds_strict_with_every_section(site):
    for page in (
        "getting-started",
        "concepts",
        "guide/suites",
        "guide/methods",
        "guide/contract",
        "guide/axes-and-reports",
        "guide/scaling",
        "guide/reliability",
        "statistics",
        "reproduction",
        "generated/results",
        "generated/reference/suite",
        "generated/reference/cli",
        "reference/api",
        "architecture",
        "changelog",
    ):
        assert (site / page / "index.html").exists(), page
    api = (site / "reference" / "api" / "index.html").read_text()
    assert "LocalMethod" in api and "make_optimizer" in api  # mkdocstrings rendered the contract
    assert "Porting a 0.1 plugin" in (site / "changelog" / "index.html").read_text()  # CHANGELOG.md included
    cli = (site / "generated" / "reference" / "cli" / "index.html").read_text()
    assert "ffbench run" in cli and "--dry-run" in cli
    suite_ref = (site / "generated" / "reference" / "suite" / "index.html").read_text()
    for key in ("train_field", "method_option", "backbone_option", "granularity", "batch_seeds", "widths"):
        assert key in suite_ref, key


def test_every_builtin_method_has_a_generated_page(site):
    # the built-in ones (other test modules register test methods in this process; the site is built apart)
    names = [n for n in METHODS.names() if METHODS.get(n).obj.__module__.startswith("ffbench.methods.")]
    assert {"bp", "bp.deepsup", "ff.hinton", "cwc", "sff", "asge", "symba", "pepita", "scff"} <= set(names)
    index = (site / "generated" / "methods" / "index.html").read_text()
    for name in names:
        page = site / "generated" / "methods" / name / "index.html"
        assert page.exists(), name
        html = page.read_text()
        card = METHODS.get(name).card
        assert card.summary.split()[0] in html and f'href="{name}/"' in index, name
        for option in card.options:
            assert f"<code>{option}</code>" in html, (name, option)


def test_the_results_page_shows_the_reproduction_table(site):
    html = (site / "generated" / "results" / "index.html").read_text()
    assert "published vs CI" in html and "98.55%" in html  # ff.hinton's published number, from the code
    assert re.search(r"99\.34% \[99\.19, 99\.48\]", html)  # cwc's Sf row, computed from the committed CSV
    for verdict in ("inside", "above"):
        assert f"<td>{verdict}</td>" in html


def test_the_pages_fit_a_desktop_and_a_phone(site, tmp_path):
    """Every built page in headless Chromium at 1400 and 390 px: the page never scrolls sideways (a wide table or
    code block scrolls inside its own box)."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is absent (Debian: apt-get install chromium; `make test` installs it)")
    pages = sorted(p for p in site.rglob("index.html") if "search" not in p.parts)
    assert len(pages) > 25
    probe = (
        "<script>window.addEventListener('load',()=>setTimeout(()=>parent.postMessage(JSON.stringify("
        "{page:location.pathname,scroll:document.documentElement.scrollWidth,view:innerWidth}),'*'),300));</script>"
    )
    for page in pages:
        page.with_name("probe.html").write_text(page.read_text().replace("</body>", probe + "</body>"))
    for width in (1400, 390):
        frames = "".join(
            f'<iframe src="{p.with_name("probe.html").as_uri()}" width="{width}" height="600"></iframe>' for p in pages
        )
        wrapper = tmp_path / f"all-{width}.html"
        wrapper.write_text(
            f"<!DOCTYPE html><html><body style='margin:0'>{frames}<script>const seen=[];"
            "addEventListener('message',e=>{seen.push(JSON.parse(e.data));if(seen.length==%d){"
            "const p=document.createElement('pre');p.id='probe';p.textContent=JSON.stringify(seen);"
            "document.body.appendChild(p);}});</script></body></html>" % len(pages)
        )
        proc = subprocess.run(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--hide-scrollbars",
                "--allow-file-access-from-files",
                f"--user-data-dir={tmp_path / f'profile-{width}'}",
                "--virtual-time-budget=5000",
                f"--window-size={max(width, 500)},2000",
                "--dump-dom",
                wrapper.as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        m = re.search(r'<pre id="probe">(.*?)</pre>', proc.stdout, re.S)
        assert m, f"not every page loaded at {width} px (rc {proc.returncode}): {proc.stderr[-2000:]}"
        seen = json.loads(m.group(1).replace("&quot;", '"'))
        assert len(seen) == len(pages)
        for s in seen:
            assert s["view"] == width, s
            assert s["scroll"] <= s["view"], f"{s['page']} scrolls sideways at {width} px ({s['scroll']} px wide)"


# ---------------------------------------------------------------- the code on the pages
def test_every_python_block_compiles_and_every_toml_block_parses():
    n_python = n_toml = 0
    for path in HAND_WRITTEN:
        for i, code in enumerate(blocks(path, "python")):
            compile(code, f"{path.relative_to(ROOT)} python block {i}", "exec")
            n_python += 1
        for code in blocks(path, "toml"):
            tomllib.loads(code)
            n_toml += 1
    assert n_python >= 6 and n_toml >= 8, (n_python, n_toml)  # the guides have at least these


def test_every_whole_suite_on_the_pages_is_a_valid_suite(tmp_path):
    """A TOML block with a [suite] table is a suite a reader may copy: it loads and plans (the method tutorial's
    suite needs its methods, registered by the tutorial test below)."""
    checked = 0
    for path in HAND_WRITTEN:
        for code in blocks(path, "toml"):
            if "[suite]" not in code or "myff" in code:
                continue
            suite_file = tmp_path / f"{tomllib.loads(code)['suite']['name']}.toml"
            suite_file.write_text(code)
            assert expand(load(str(suite_file))).cells, path
            checked += 1
    assert checked >= 2


def test_the_layer_local_tutorial_method_runs_and_learns(tmp_path):
    code = block(DOCS / "guide" / "methods.md", "# mypkg/myff.py")
    exec(compile(code, "docs/guide/methods.md", "exec"), {"__name__": "docs_myff"})
    r = fit(
        RunConfig(
            method="myff.greedy",
            dataset="digits",
            backbone="cnn",
            epochs=4,
            backbone_options={"channels": [16, 32, 32, 32]},
        ),
        "cpu",
    )
    assert r.status == "done" and r.metrics["test_acc"] > 0.8, r.metrics
    assert r.metrics["test_acc.last"] > 0.5 and r.metrics["test_acc.unit1"] > 0.15  # chance: 0.1
    assert r.curves[0]["train_loss.unit2"] > 0


def test_the_whole_network_tutorial_method_runs_and_learns():
    code = block(DOCS / "guide" / "methods.md", "# mypkg/negff.py")
    exec(compile(code, "docs/guide/methods.md", "exec"), {"__name__": "docs_negff"})
    r = fit(
        RunConfig(
            method="negff.e2e",
            dataset="digits",
            backbone="mlp",
            epochs=4,
            lr=3e-3,
            backbone_options={"widths": [128, 128]},
        ),
        "cpu",
    )
    assert r.status == "done" and r.metrics["test_acc"] > 0.6, r.metrics  # chance: 0.1
    assert set(r.metrics) >= {"test_acc.goodness", "val_acc.goodness"}


def test_the_tutorial_suite_plans_both_tutorial_methods(tmp_path):
    page = DOCS / "guide" / "methods.md"
    for first, name in (("# mypkg/myff.py", "myff.greedy"), ("# mypkg/negff.py", "negff.e2e")):
        if name not in METHODS.names():  # registered once per process (the tests above may have done it)
            exec(compile(block(page, first), str(page), "exec"), {"__name__": f"docs_{name}"})
    (suite_toml,) = [c for c in blocks(page, "toml") if "[suite]" in c]
    path = tmp_path / "myff-vs-bp.toml"
    path.write_text(suite_toml)
    design = expand(load(str(path)))
    assert sorted(c.factors["method"] for c in design.cells) == ["bp", "myff.greedy", "negff.e2e"]


def test_the_option_examples_check_values():
    ns: dict = {}
    (code,) = blocks(DOCS / "guide" / "contract.md", "python")
    exec(compile(code, "docs/guide/contract.md", "exec"), ns)
    options = ns["options"]
    assert options["kernel"].problem(3) is None and options["kernel"].problem(2)  # odd only
    assert options["loss"].problem("hinge") and options["loss"].problem("margin") is None
    assert options["widths"].problem([0]) and options["widths"].problem([64]) is None


def test_the_suite_declared_axes_of_the_guide_plan(tmp_path):
    (axes,) = [c for c in blocks(DOCS / "guide" / "axes-and-reports.md", "toml") if "train_field" in c]
    path = tmp_path / "axes.toml"
    path.write_text(
        '[suite]\nname = "axes"\nversion = 1\n[design]\nmethods = ["bp", "sff"]\ndatasets = ["synthetic"]\n'
        'backbones = ["mlp"]\nseeds = [0]\n[train]\nepochs = 1\n' + axes
    )
    cells = expand(load(str(path))).cells
    sff = [c for c in cells if c.factors["method"] == "sff"]
    bp = [c for c in cells if c.factors["method"] == "bp"]
    assert len(sff) == 8 and {c.factors["loss"] for c in sff} == {"ce", "margin"}
    assert len(bp) == 4 and {c.factors["loss"] for c in bp} == {None}  # bp has no `loss`: the levels merge
    assert {c.config.lr for c in cells} == {1e-3, 3e-3}
    assert {tuple(c.config.backbone_options["widths"]) for c in cells} == {(128, 128), (512, 512)}


def test_the_registered_axis_example_plans_and_drops_with_its_rule(tmp_path):
    code = block(DOCS / "guide" / "axes-and-reports.md", "# mypkg/axes.py")
    suite = (
        '[suite]\nname = "evalbatch"\nversion = 1\n[design]\nmethods = ["bp"]\ndatasets = ["synthetic"]\n'
        'backbones = ["mlp"]\nseeds = [0]\n[train]\nepochs = 1\nbatch_size = 64\n[axes]\neval_batch = [16, 128]\n'
    )
    (tmp_path / "evalbatch.toml").write_text(suite)
    proc = run_python(
        f"exec(compile({code!r}, 'axes-and-reports.md', 'exec'), {{'__name__': 'docs_axes'}})\n"
        "from ffbench.plan.design import expand\nfrom ffbench.plan.suite import load\n"
        f"d = expand(load({str(tmp_path / 'evalbatch.toml')!r}))\n"
        "print([c.config.eval_batch_size for c in d.cells]); print([why for _, why in d.dropped])\n",
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    kept, dropped = proc.stdout.strip().splitlines()[-2:]
    assert kept == "[16]" and "larger than what one step trains" in dropped, proc.stdout


def test_the_report_kind_example_builds_its_page(tmp_path):
    code = block(DOCS / "guide" / "axes-and-reports.md", "# mypkg/report_epochs.py")
    proc = run_python(
        f"import sys\nsys.path.insert(0, {str(TESTS)!r})\nfrom pathlib import Path\n"
        "from test_report import make_store\nfrom ffbench.analysis.report import build_report, report_dir\n"
        f"exec(compile({code!r}, 'axes-and-reports.md', 'exec'), {{'__name__': 'docs_report'}})\n"
        f"out = make_store(Path({str(tmp_path)!r}))\n"
        "build_report(out, 'reptest', kinds=['best-epoch'], n_resamples=100, seed=1)\n"
        "print((report_dir(out, 'reptest') / 'best-epoch.md').read_text())\n",
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "## Best epoch per method" in proc.stdout and "| bp.deepsup |" in proc.stdout, proc.stdout[-3000:]


# ---------------------------------------------------------------- citations of the method notes
def test_no_methods_md_citation_is_left():
    """The facts the code cites are in the repository (docs/methods/notes/), not in a file beside it."""
    offenders = [
        f"{p.relative_to(ROOT)}:{i}"
        for p in (ROOT / "ffbench").rglob("*")
        if p.suffix in (".py", ".toml")
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if "methods.md" in line
    ]
    assert not offenders, offenders


def test_every_cited_notes_section_exists():
    sys.path.insert(0, str(DOCS))
    import hooks

    sections = hooks.notes_sections()
    cited = 0
    for p in (ROOT / "ffbench").rglob("*"):
        if p.suffix not in (".py", ".toml"):
            continue
        for m in hooks.CITATION.finditer(p.read_text()):
            page = DOCS / "methods" / "notes" / f"{m.group(1)}.md"
            assert page.exists(), (p, m.group(0))
            for number in re.findall(r"§(\d+(?:\.\d+)*)", m.group(2)):
                top = number.split(".")[0]
                assert sections.get(top) == m.group(1), (p, m.group(0))  # the page holds the chapter
                parent = number.rsplit(".", 1)[0]  # §3.6.1: item 1 of section 3.6
                assert number in sections or ("." in parent and parent in sections), (p, m.group(0))
            cited += 1
    assert cited >= 30
    for name in METHODS.names():  # a card that cites the notes by page has every section number linked
        entry = METHODS.get(name)
        page = hooks.method_page(entry, {})
        if "docs/methods/notes/" not in hooks.module_text(entry.obj):
            continue  # (a method whose module cites another document keeps its citations as text)
        text = hooks.ANY_CITATION.sub("", re.sub(r"\[[^\]]*\]\([^)]*\)", "", page))
        assert "§" not in text, name
