"""One definition of each schema: the training fields (``config.TRAIN_FIELDS``), which RunConfig and the README
cannot drift from, and the store's run rows (``store.RunRow``, the table's columns)."""

import re
import types
import typing
from dataclasses import MISSING, fields
from pathlib import Path

from ffbench.core.config import LATER_FIELDS, TRAIN_FIELDS, RunConfig

README = Path(__file__).resolve().parent.parent / "README.md"
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


def test_readme_names_every_training_field_and_choice():
    text = re.search(r"Training fields: (.*?)\n\n", README.read_text(), re.S).group(1)
    named = set(re.findall(r"`(\w+)`", text))
    assert set(TRAIN_FIELDS) <= named, sorted(set(TRAIN_FIELDS) - named)
    for name, option in TRAIN_FIELDS.items():
        for choice in option.choices or ():
            assert re.search(rf"`{name}` \([^)]*\b{re.escape(choice)}\b", text), (name, choice)


def test_readme_bounds_are_the_schema():
    text = README.read_text()
    bounds = re.findall(r"`(\w+)` in ([(\[][^)\]]*[)\]])", text)
    assert {name for name, _ in bounds} >= {"lr", "weight_decay"}
    for name, interval in bounds:
        if name in TRAIN_FIELDS:
            assert TRAIN_FIELDS[name].describe().endswith(f" in {interval}"), (name, interval)


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
