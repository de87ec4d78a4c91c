"""The time a dry run announces: a probe of a few timed training steps per configuration, scaled by the
design's runs, epochs and workers (nothing is recorded)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ffbench.record.store import Store

if TYPE_CHECKING:
    from ffbench.execution.runner import Paths
    from ffbench.plan.design import Design
    from ffbench.plan.suite import Suite
PROBE_STEPS = 3  # timed training steps of a probe (after one untimed warm-up step)


def probe(config, device: str = "auto") -> float:
    """Seconds per training step of ``config``: the first steps of its first epoch, timed after one warm-up
    step (nothing is recorded)."""
    import time

    from ffbench.core.seeds import Streams
    from ffbench.training.train import build, resolve_device, run_data, run_loader, sync

    dev = resolve_device(device)
    streams = Streams(config.seed)
    data = run_data(config, streams, dev)  # keep_classes too: the probe trains the run's own class count
    method = build(config, data, streams, dev)
    method.train()
    loader = run_loader(config, data, streams, dev)
    method.start_epoch(0)
    times = []
    for i, (x, y) in enumerate(loader):
        sync(dev)
        t0 = time.perf_counter()
        method.train_step(x, y)
        sync(dev)
        times.append(time.perf_counter() - t0)
        if i == PROBE_STEPS:
            break
    timed = times[1:] or times
    return sum(timed) / len(timed) * len(loader)  # one epoch


def estimate(
    suite: Suite, design: Design, paths: Paths, store_url: str | None = None, device: str = "auto"
) -> dict[str, Any]:
    """The training time the suite's unfinished runs should take: per cell, the mean ``train_time_s`` of its
    finished runs in the store (same cell ID: same configuration and code), else one short timed probe
    per distinct (method, backbone, dataset), scaled to each cell's epochs (and tuning seeds). Returns
    {seconds, rows (left to run), from_store (rows estimated from the store), from_probe, probes}."""
    from ffbench.plan.design import TUNING
    from ffbench.record.store import FINISHED, RunRow

    rows: list[RunRow] = []
    location = store_url or (paths.store if paths.store.exists() else None)
    if location is not None:
        try:
            rows = Store(location).rows(suite.name, suite_version=suite.version)
        except Exception:  # a store that cannot be read estimates nothing; the probe does
            rows = []
    finished = {r.run_id for r in rows if r.status in FINISHED}
    past: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        t = (r.compute or {}).get("train_time_s")
        if r.status == "done" and isinstance(t, (int, float)) and t == t:
            past.setdefault((r.cell_id, r.role), []).append(float(t))
    todo = [r for r in design.trials + design.runs if r.run_id not in finished]
    from ffbench.data.datasets import DataError

    trial_ids = {r.run_id for r in design.trials}
    per_epoch: dict[tuple, float | None] = {}
    unavailable: dict[str, str] = {}  # dataset -> why it cannot be probed here
    seconds, from_store, from_probe = 0.0, 0, 0
    for run in todo:
        cell, role = run.cell, (TUNING if run.run_id in trial_ids else "evaluation")
        known = past.get((cell.cell_id, role))
        if known:
            seconds += sum(known) / len(known)
            from_store += 1
            continue
        key = (cell.factors["method"], cell.factors["backbone"], cell.factors["dataset"])
        if key not in per_epoch:  # seconds per epoch, from the first cell of this triple
            try:
                per_epoch[key] = probe(cell.config, device)
            except DataError as exc:  # a dry run plans without the data; the run itself stops on it
                per_epoch[key] = None
                unavailable[cell.config.dataset] = str(exc)
        if per_epoch[key] is None:
            continue
        n_seeds = len(cell.tuning["seeds"]) if role == TUNING and cell.tuning else 1
        seconds += per_epoch[key] * cell.config.epochs * n_seeds
        from_probe += 1
    return {
        "seconds": seconds,
        "rows": len(todo),
        "from_store": from_store,
        "from_probe": from_probe,
        "probes": sum(v is not None for v in per_epoch.values()),
        "unavailable": unavailable,
    }
