"""One definition of each schema: the training fields (``config.TRAIN_FIELDS``), which RunConfig and the docs
cannot drift from, and the store's run rows (``store.RunRow``, the table's columns)."""

import re
import types
import typing
from dataclasses import MISSING, fields
from pathlib import Path

from ffbench.core.config import LATER_FIELDS, TRAIN_FIELDS, RunConfig

ROOT = Path(__file__).resolve().parent.parent
# RunConfig's fields that are not training fields: the run's factors and seed, its source, the card options
NOT_TRAINING = {
    "method",
    "dataset",
    "backbone",
    "seed",
    "source",
    "method_options",
    "backbone_options",
    "dataset_options",
}


def _kinds(hint) -> set[type]:
    """The plain types a type hint allows: ``int | None`` -> {int, NoneType}, ``list[int]`` -> {list}."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return set().union(*(_kinds(h) for h in typing.get_args(hint)))
    return {typing.get_origin(hint) or hint}


def test_run_config_fields_are_the_schema():
    run_fields = {f.name: f for f in fields(RunConfig)}
    assert set(run_fields) - NOT_TRAINING == set(TRAIN_FIELDS)
    hints = typing.get_type_hints(RunConfig)
    for name, option in TRAIN_FIELDS.items():
        assert run_fields[name].default is not MISSING and run_fields[name].default == option.default, name
        kinds = option.kind if isinstance(option.kind, tuple) else (option.kind,)
        assert _kinds(hints[name]) == set(kinds), name
    assert {k: v for k, v in LATER_FIELDS.items() if k in TRAIN_FIELDS} == {
        k: TRAIN_FIELDS[k].default for k in LATER_FIELDS if k in TRAIN_FIELDS
    }


def test_the_suite_reference_lists_every_training_field_and_choice(tmp_path, monkeypatch):
    """The docs' suite reference is generated from the schema: every field and choice is on it."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "docs" / "hooks.py")
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    monkeypatch.setattr(hooks, "OUT", tmp_path)
    hooks.suite_reference()
    text = (tmp_path / "reference" / "suite.md").read_text()
    for name, option in TRAIN_FIELDS.items():
        assert f"`{name}`" in text, name
        for choice in option.choices or ():
            assert str(choice) in text, (name, choice)


def test_written_bounds_are_the_schema():
    """Where the guide and the changelog state a bound in words, it is the schema's."""
    for path in (ROOT / "docs" / "guide" / "suites.md", ROOT / "CHANGELOG.md"):
        bounds = re.findall(r"`(\w+)` in ([(\[][^)\]]*[)\]])", path.read_text())
        assert {name for name, _ in bounds} >= {"lr", "weight_decay"}, path
        for name, interval in bounds:
            if name in TRAIN_FIELDS:
                assert TRAIN_FIELDS[name].describe().endswith(f" in {interval}"), (path, name, interval)


def test_run_rows_are_the_store_table_with_json_decoded(tmp_path):
    from ffbench.record.store import RunRow, Store, runs

    assert [f.name for f in fields(RunRow)] == [c.name for c in runs.columns]
    store = Store(tmp_path / "results.db")
    config = RunConfig("bp", "digits", "mlp").to_dict()
    base = dict(suite="s", suite_version=1, cell_id="c", role="evaluation", status="pending", factors={"method": "bp"})
    store.add_runs([dict(base, run_id="r0", seed=0, config=config), dict(base, run_id="r1", seed=1, config=config)])
    row = store.rows("s", seed=1)[0]
    assert isinstance(row, RunRow) and (row.run_id, row.seed, row.factors, row.config) == (
        "r1",
        1,
        {"method": "bp"},
        config,
    )
    assert row.metrics is None and row["config"] is row.config and row.get("curves", []) is None
    assert row.get("no such column", 5) == 5
