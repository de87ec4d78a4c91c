"""Executing a suite's runs as Ray tasks across the nodes of a Ray cluster (``ffbench run SUITE --executor
ray``).

The driver plans the suite as every ``run`` does (``runner.open_session``: the store, the Optuna studies,
the MLflow parents), then submits each pending evaluation run and tuning trial as a Ray task with its
resource request (one GPU per run on CUDA, else ``cpus_per_run`` CPUs and as many torch threads), so Ray
places the runs across the nodes. The store stays the truth and only the driver writes it: it claims a row
before submitting it (a concurrent local worker cannot take it), keeps the claims' leases alive, records
the task's result (``Store.finish``: the first result of a run counts, once) and mirrors it into MLflow. No
shared database is needed. A task loads its dataset on its node (``FFBENCH_DATA`` in the task's
environment), trains, and returns the row's fields with a manifest written on that node (host, GPU).

Tuning: the driver keeps each cell's Optuna study, asks a trial, ships its parameters to a task and tells
the outcome. Pruning goes through a small actor (``TrialBoard``): the task posts each epoch's value there
and waits for the driver's verdict, which the driver takes by ``trial.report`` / ``trial.should_prune``,
so pruning decides exactly as in a local run. The equal-budget slots and the tuning/evaluation seed split
are the design's; a cell's evaluation runs are registered when its slots finish, then submitted.

Faults: a task whose worker process or node dies is retried by Ray (``max_retries``); an exception of the
method is a recorded failure, returned by the task and never retried; unreadable data or a failing file
system on a node (and a task Ray gave up on) stops the suite with a message naming the node, and the run
stays pending. Ctrl-C or SIGTERM cancels the tasks in flight and gives their rows back. A driver that dies
leaves its rows claimed by a dead process on its host: the next ``run`` there gives them back at once
(elsewhere the lease decides), so running the same command again executes only what is missing.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ffbench.core.config import RunConfig
from ffbench.execution import pool, runner, studies
from ffbench.execution.execute import InfrastructureError, _failure, infrastructure, train_trial
from ffbench.execution.lease import heartbeat_interval
from ffbench.execution.selection import register_evaluation
from ffbench.execution.workers import expected_ids, progress, release_dead_local
from ffbench.plan.design import TUNING, Cell
from ffbench.plan.suite import SuiteError
from ffbench.plan.tuning import METRIC, apply_params, repeat_of_slot, tuning_seeds
from ffbench.record import tracking
from ffbench.record.store import DONE, FAILED, FINISHED, PENDING, PRUNED, RUNNING, RunRow, is_stale, worker_name
from ffbench.training import checkpoint

logger = logging.getLogger(__name__)

RAY_PIN = "ray==2.60.0"  # the version the extra installs (pyproject.toml: [project.optional-dependencies] ray)
MAX_RETRIES = 2  # Ray's retries of a task whose worker process or node died
DECISION_WAIT_S = 300.0  # how long a trial waits for the driver's pruning verdict before going on without one
RESOURCES_EVERY_S = 5.0  # how often the driver looks at the cluster's size again (nodes join and leave)


# ---------------------------------------------------------------- command line
def add_ray_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``ffbench run`` that choose the executor and configure Ray."""
    parser.add_argument(
        "--executor",
        choices=("local", "ray"),
        default="local",
        help="local: this process or --workers N local processes; ray: one Ray task per run "
        "across the nodes of a Ray cluster (pip install 'ffbench[ray]')",
    )
    parser.add_argument(
        "--ray-address",
        metavar="ADDR",
        help="the Ray cluster: auto, host:port (the head's GCS port) or ray://host:port (Ray "
        "Client); default: start a Ray runtime on this machine",
    )
    parser.add_argument(
        "--ray-cpus-per-run",
        type=int,
        default=1,
        metavar="N",
        help="CPUs (and torch threads) each run asks for on CPU (default 1)",
    )
    parser.add_argument(
        "--ray-max-retries",
        type=int,
        default=MAX_RETRIES,
        metavar="N",
        help=f"retries of a run whose worker process or node died (default {MAX_RETRIES}); a "
        f"method's own exception is a recorded failure and never retried",
    )
    parser.add_argument(
        "--ray-data",
        metavar="DIR",
        help="FFBENCH_DATA for the tasks (the dataset cache on every node); default: each node's own environment",
    )


def ray_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of ``run_suite`` that come from ``add_ray_arguments``."""
    return {
        "address": args.ray_address,
        "cpus_per_run": args.ray_cpus_per_run,
        "max_retries": args.ray_max_retries,
        "data_dir": args.ray_data,
    }


@dataclass
class RayOptions:
    address: str | None = None
    cpus_per_run: int = 1
    max_retries: int = MAX_RETRIES
    data_dir: str | None = None

    def check(self) -> None:
        if not isinstance(self.cpus_per_run, int) or self.cpus_per_run < 1:
            raise SuiteError(f"--ray-cpus-per-run {self.cpus_per_run}: must be a whole number >= 1")
        if not isinstance(self.max_retries, int) or self.max_retries < 0:
            raise SuiteError(f"--ray-max-retries {self.max_retries}: must be a whole number >= 0")
        address = self.address
        if address is not None and not (address == "auto" or address.startswith("ray://") or _host_port(address)):
            raise SuiteError(
                f"--ray-address {address!r}: allowed forms are auto, host:port (the head's GCS "
                f"port, e.g. 10.0.0.5:6379) and ray://host:port (Ray Client, e.g. ray://10.0.0.5:10001)"
            )


def _host_port(address: str) -> bool:
    host, _, port = address.rpartition(":")
    return bool(host) and port.isdigit()


# ---------------------------------------------------------------- connecting
def import_ray():
    try:
        import ray
    except ImportError:
        raise SuiteError(
            f"--executor ray needs Ray, which is not installed: pip install 'ffbench[ray]' (installs {RAY_PIN})"
        ) from None
    return ray


def connect(address: str | None) -> bool:
    """Join the Ray cluster at ``address`` (None: start a Ray runtime on this machine, the same code path as
    a cluster). Returns whether this call connected (and so should disconnect at the end)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray = import_ray()
    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"logging_level": logging.WARNING, "configure_logging": True}
    if address is None:  # a new runtime here, never a cluster a stale /tmp/ray file points at
        kwargs["include_dashboard"] = False
    try:
        ray.init(address=address or "local", **kwargs)
    except (ConnectionError, TimeoutError, RuntimeError, ValueError) as exc:
        where = f"--ray-address {address}" if address else "a Ray runtime on this machine"
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise SuiteError(
            f"{where}: cannot connect ({first}); start the cluster first (`ray start --head` on the "
            f"head, `ray start --address HEAD:6379` on the others) or check the address"
        ) from None
    return True


# ---------------------------------------------------------------- what a task runs on its node
class TrialBoard:
    """A Ray actor between the driver and its tuning tasks: per trial, the latest per-epoch value a task
    posted, and the driver's verdict for it (prune or go on)."""

    def __init__(self):
        self.values: dict[str, tuple[int, float]] = {}
        self.verdicts: dict[str, tuple[int, bool]] = {}

    def report(self, key: str, step: int, value: float) -> None:
        self.values[key] = (step, value)

    def drain(self) -> list[tuple[str, int, float]]:
        """The values posted since the last drain (the driver's side)."""
        out = [(k, s, v) for k, (s, v) in self.values.items()]
        self.values.clear()
        return out

    def decide(self, key: str, step: int, prune: bool) -> None:
        self.verdicts[key] = (step, prune)

    def verdict(self, key: str, step: int) -> bool | None:
        """True: prune; False: go on; None: the driver has not judged ``step`` yet."""
        v = self.verdicts.get(key)
        return None if v is None or v[0] < step else v[1]

    def forget(self, key: str) -> None:
        self.values.pop(key, None)
        self.verdicts.pop(key, None)


class BoardTrial:
    """What ``studies.Reporter`` talks to inside a task: the driver's trial, through the board. Reporting
    posts the value; asking whether to prune waits for the driver's verdict on that step."""

    def __init__(self, board, key: str):
        self.board, self.key, self.step = board, key, -1

    def report(self, value: float, step: int) -> None:
        import ray

        self.step = step
        ray.get(self.board.report.remote(self.key, step, float(value)))

    def should_prune(self) -> bool:
        import ray

        end = time.monotonic() + DECISION_WAIT_S
        while time.monotonic() < end:
            verdict = ray.get(self.board.verdict.remote(self.key, self.step))
            if verdict is not None:
                return verdict
            time.sleep(0.01)
        return False


class NodeError(RuntimeError):
    """This node cannot run the task (other code than the driver's); the suite stops."""


def run_task(payload: dict[str, Any]) -> dict[str, Any]:
    """One evaluation run or tuning trial on this node. Returns the row's fields (status, error, metrics,
    curves, compute, manifest), or ``{"infrastructure": message}`` when the node's data, file system or
    code is at fault (the driver stops the suite and leaves the run pending). A method's exception is a
    failed result; nothing here raises but a bug of the harness."""
    import torch

    from ffbench.core.seeds import Streams
    from ffbench.record.manifest import manifest
    from ffbench.training.train import resolve_device

    host = socket.gethostname()
    torch.set_num_threads(int(payload["threads"]))
    dev = resolve_device(payload["device"])
    try:
        _same_code(payload)
        info = manifest(str(dev))
    except Exception as exc:
        return {"infrastructure": _node_problem(host, payload, exc)}
    info.update(payload.get("manifest") or {})
    info["ray"] = {"node_id": _node_id(), "worker_pid": os.getpid()}
    config = RunConfig.from_dict(payload["config"])
    if payload["role"] != TUNING:
        info["streams"] = Streams(config.seed).as_dict()
    try:
        weights = payload.get("weights_dir")
        out = (
            _trial(payload, config, dev, weights)
            if payload["role"] == TUNING
            else _evaluation(config, dev, weights, payload.get("checkpoint"))
        )
    except Exception as exc:
        if infrastructure(exc) or _is_ray_error(exc):
            return {"infrastructure": _node_problem(host, payload, exc)}
        out = {"status": FAILED, "error": _failure(exc), "metrics": {}, "curves": [], "compute": {}}
    out["manifest"] = {**info, **out.get("manifest", {})}
    return out


def _evaluation(config: RunConfig, dev, weights_dir: str | None, saved: str | None) -> dict[str, Any]:
    from ffbench.training.train import fit

    r = fit(config, dev, weights_dir=weights_dir, checkpoint=saved)
    return {
        "status": r.status,
        "error": r.error,
        "metrics": r.metrics,
        "curves": r.curves,
        "compute": r.compute,
        "manifest": r.manifest,
    }


def _trial(payload: dict[str, Any], base: RunConfig, dev, weights_dir: str | None) -> dict[str, Any]:
    """A tuning trial on every tuning seed, reporting each epoch to the driver's pruner (the loop of a
    local worker's trial, ``execute.train_trial``)."""
    trial = BoardTrial(payload["board"], payload["run_id"])

    def on_epoch_for(i: int, seed: int):
        reporter = studies.Reporter(trial, base.epochs, i)
        return reporter, reporter

    out: dict[str, Any] = {}
    train_trial(out, base, payload["seeds"], dev, on_epoch_for, weights_dir)
    return out


def _same_code(payload: dict[str, Any]) -> None:
    """Refuse to run a cell whose method, backbone or dataset code on this node differs from the driver's:
    its numbers would be stored under the driver's code fingerprint."""
    from ffbench.plan.design import code_changes, code_fingerprint

    expected = payload.get("code")
    if not expected:
        return
    c = payload["config"]
    changes = code_changes(expected, code_fingerprint(c["method"], c["backbone"], c["dataset"]))
    if changes:
        raise NodeError(
            f"this node's code differs from the driver's ({', '.join(changes)}); install the same "
            f"ffbench and plugins on every node"
        )


def _node_problem(host: str, payload: dict[str, Any], exc: BaseException) -> str:
    text = str(exc).strip()
    first = text.splitlines()[0][:500] if text else ""
    data = os.environ.get("FFBENCH_DATA")
    where = f"FFBENCH_DATA={data}" if data else "FFBENCH_DATA unset: ~/.cache/ffbench"
    return f"on node {host} ({where}), run {payload['run_id']}: {type(exc).__name__}: {first}"


def _node_id() -> str | None:
    try:
        import ray

        return ray.get_runtime_context().get_node_id()
    except Exception:
        return None


def _is_ray_error(exc: BaseException) -> bool:
    try:
        from ray.exceptions import RayError
    except ImportError:
        return False
    return isinstance(exc, RayError)


# ---------------------------------------------------------------- the driver
@dataclass
class Flight:
    """A row the driver has claimed and submitted."""

    run_id: str
    row: RunRow
    cell: Cell | None
    extras: dict[str, Any] = field(default_factory=dict)  # the manifest fields the driver adds
    study: Any = None  # tuning: the cell's study and the asked trial
    trial: Any = None


class Beats(threading.Thread):
    """Keeps the leases of the driver's claimed rows alive; notes the rows another worker took over."""

    def __init__(self, store, worker: str, interval: float):
        super().__init__(daemon=True)
        self.store, self.worker, self.interval = store, worker, interval
        self.held: set[str] = set()
        self.lost: set[str] = set()
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(self.interval):
            for run_id in list(self.held):
                try:
                    if not self.store.heartbeat(run_id, self.worker) and run_id in self.held:
                        self.lost.add(run_id)
                except Exception:  # a transient database error: the next beat tries again
                    pass


class Driver:
    """Claims rows, submits them as Ray tasks, and records their results in the store."""

    def __init__(self, s: runner.Session, opts: RayOptions, device: str, bar=None):
        import ray

        self.ray, self.s, self.opts, self.bar = ray, s, opts, bar
        self.suite, self.design, self.store = s.suite, s.design, s.store
        self.worker = worker_name()
        self.cells = {c.cell_id: c for c in self.design.cells}
        self.order = {rid: i for i, rid in enumerate(expected_ids(self.design))}
        self.tuned = [c for c in self.design.cells if c.tuning]
        self.ready: set[str] = set()  # tuned cells whose evaluation runs are in the store
        self.flights: dict[Any, Flight] = {}
        self.recorded: set[str] = set()
        self.executed = 0
        self.gpu, self.task_device = self._placement(device)
        self._capacity, self._looked = 1, 0.0
        self.board = None
        self._storage = None
        env = {
            "OMP_NUM_THREADS": str(opts.cpus_per_run),
            "MKL_NUM_THREADS": str(opts.cpus_per_run),
            "RAY_USAGE_STATS_ENABLED": "0",
        }
        if opts.data_dir:
            env["FFBENCH_DATA"] = str(opts.data_dir)
        self.remote = ray.remote(run_task).options(
            num_cpus=opts.cpus_per_run,
            num_gpus=1 if self.gpu else 0,
            max_retries=opts.max_retries,
            retry_exceptions=False,
            runtime_env={"env_vars": env},
        )
        self.beats = Beats(self.store, self.worker, heartbeat_interval(s.lease_s))

    # -------------------------------------------------------- where runs go
    def _placement(self, device: str) -> tuple[bool, str]:
        """(whether a run asks for a GPU, the device a task trains on)."""
        if device not in ("auto", "cpu") and not device.startswith("cuda"):
            raise SuiteError(
                f"--device {device}: with --executor ray, allowed values are auto, cpu and cuda "
                f"(Ray gives each run its own GPU)"
            )
        nodes = [n.get("Resources", {}) for n in self.ray.nodes() if n.get("Alive")]
        gpus = max((r.get("GPU", 0) for r in nodes), default=0)
        cpus = max((r.get("CPU", 0) for r in nodes), default=0)
        if device.startswith("cuda") and not gpus:
            raise SuiteError(f"--device {device}: no node of the Ray cluster has a GPU (use --device cpu or auto)")
        gpu = device.startswith("cuda") or (device == "auto" and gpus > 0)
        if cpus < self.opts.cpus_per_run:
            raise SuiteError(
                f"--ray-cpus-per-run {self.opts.cpus_per_run}: no node of the Ray cluster has that "
                f"many CPUs (the largest has {cpus:g})"
            )
        return gpu, "cuda" if gpu else "cpu"

    def capacity(self) -> int:
        """How many runs the cluster can execute at once (runs beyond it stay pending in the store)."""
        now = time.monotonic()
        if now - self._looked > RESOURCES_EVERY_S:
            res = self.ray.cluster_resources()
            per = res.get("GPU", 0) if self.gpu else res.get("CPU", 0) // self.opts.cpus_per_run
            self._capacity, self._looked = max(1, int(per)), now
        return self._capacity

    def storage(self):
        if self._storage is None:
            self._storage = studies.open_storage(self.s.optuna_url)
        return self._storage

    # -------------------------------------------------------- the loop
    def run(self) -> int:
        self.beats.start()
        try:
            self._loop()
        except BaseException:
            self.abandon()
            raise
        finally:
            self.beats.halt.set()
            if self.board is not None:
                try:
                    self.ray.kill(self.board)
                except Exception:
                    pass
        return self.executed

    def _loop(self) -> None:
        while True:
            states = {
                s["run_id"]: s
                for s in self.store.states(self.suite.name, self.suite.version)
                if s["run_id"] in self.order
            }
            if self._register(states) or release_dead_local(self.store, self.suite, states.values()):
                continue
            finished = sum(s["status"] in FINISHED for s in states.values())
            if self.bar is not None:
                self.bar.n = finished
                self.bar.refresh()
            self._submit(states)
            if not self.flights:
                if finished == len(self.order):
                    return
                time.sleep(self.s.poll_s)  # rows held by other workers, or tuning still open elsewhere
                continue
            tuning = any(f.trial is not None for f in self.flights.values())
            done, _ = self.ray.wait(list(self.flights), num_returns=1, timeout=0.05 if tuning else 0.5)
            self._judge()
            for ref in done:
                self._collect(ref)

    def _register(self, states: dict[str, dict[str, Any]]) -> bool:
        """Insert the evaluation runs of tuned cells whose slots have all finished."""
        changed = False
        for c in self.tuned:
            if c.cell_id in self.ready:
                continue
            evals = [r.run_id for r in self.design.runs if r.cell.cell_id == c.cell_id]
            slots = [r.run_id for r in self.design.trials if r.cell.cell_id == c.cell_id]
            if all(r in states for r in evals):
                self.ready.add(c.cell_id)
            elif all(r in states and states[r]["status"] in FINISHED for r in slots):
                changed |= register_evaluation(self.store, self.suite, c, self.storage()) > 0
                self.ready.add(c.cell_id)
        return changed

    def _submit(self, states: dict[str, dict[str, Any]]) -> None:
        held = {f.run_id for f in self.flights.values()}
        now = self.store.now()
        room = self.capacity() - len(self.flights)
        candidates = sorted(
            (
                s
                for s in states.values()
                if s["run_id"] not in held
                and (
                    s["status"] == PENDING or (s["status"] == RUNNING and is_stale(s["heartbeat"], now, self.s.lease_s))
                )
            ),
            key=lambda s: self.order[s["run_id"]],
        )
        for st in candidates:
            if room <= 0:
                return
            if not self.store.claim(st["run_id"], self.worker, self.s.lease_s):
                continue
            self.beats.held.add(st["run_id"])
            row = self.store.rows(run_id=st["run_id"])[0]
            flight = self._prepare(row)
            if flight is None:
                continue
            payload = {
                "run_id": row.run_id,
                "role": row.role,
                "config": flight.row.config,
                "device": self.task_device,
                "threads": self.opts.cpus_per_run,
                "code": flight.cell.code if flight.cell is not None else row.code,
                "manifest": flight.extras,
                "weights_dir": str(self.s.paths.weights.resolve()),
                "checkpoint": str(checkpoint.path_for(self.s.paths.checkpoints.resolve(), row.run_id)),
            }
            if flight.trial is not None:
                payload.update(seeds=flight.extras["tuning_seeds"], board=self.board)
            self.flights[self.remote.remote(payload)] = flight
            room -= 1

    def _prepare(self, row: RunRow) -> Flight | None:
        """The flight of a claimed row; for a tuning slot, ask the cell's study for the trial (as
        ``execute.run_trial`` does). None when the row was lost meanwhile."""
        cell = self.cells.get(row.cell_id)
        code = cell.code if cell is not None else row.code
        if row.role != TUNING:
            extras: dict[str, Any] = {"code": code}
            if row.params:
                extras["tuned_params"] = row.params
            return Flight(row.run_id, row, cell, extras)
        from optuna.trial import TrialState

        if self.board is None:
            self.board = self.ray.remote(num_cpus=0, max_restarts=0)(TrialBoard).remote()
        spec = cell.tuning
        study = studies.load_study(self.storage(), self.suite, cell, row.trial)
        studies.fail_orphan(study, row.optuna_trial)  # the trial of a driver that died holding this slot
        trial = study.ask(studies.distributions(spec["space"]))
        trial.set_user_attr("ffbench.slot", row.trial)
        trial.set_user_attr("ffbench.run_id", row.run_id)
        trial.set_user_attr("ffbench.worker", self.worker)
        params = dict(trial.params)
        repeat = repeat_of_slot(spec, row.trial)
        seeds = tuning_seeds(spec, repeat)
        base = replace(apply_params(RunConfig.from_dict(row.config), params), seed=seeds[0])
        if not self.store.set_trial(row.run_id, self.worker, trial.number, params, base.to_dict()):
            study.tell(trial, state=TrialState.FAIL)
            self.beats.held.discard(row.run_id)
            return None
        extras = {
            "code": code,
            "optuna_trial": trial.number,
            "study": studies.study_name(self.suite, cell, repeat),
            "tuning_seeds": seeds,
            "tuning_repeat": repeat,
        }
        return Flight(row.run_id, replace(row, config=base.to_dict()), cell, extras, study, trial)

    def _judge(self) -> None:
        """The pruner's verdicts on the per-epoch values the trials posted since the last look."""
        trials = {f.run_id: f.trial for f in self.flights.values() if f.trial is not None}
        if self.board is None or not trials:
            return
        for key, step, value in self.ray.get(self.board.drain.remote()):
            trial = trials.get(key)
            if trial is None:
                continue
            trial.report(value, step)
            self.board.decide.remote(key, step, bool(trial.should_prune()))

    def _collect(self, ref) -> None:
        from ray.exceptions import RayError

        flight = self.flights.pop(ref)
        try:
            out = self.ray.get(ref)
        except RayError as exc:  # Ray gave up: the worker or node died more often than the retries allow
            self._stop(
                flight,
                f"Ray lost the task of run {flight.run_id} after {self.opts.max_retries} "
                f"retries ({type(exc).__name__}: {_first_line(exc)})",
            )
        if "infrastructure" in out:
            self._stop(flight, out["infrastructure"])
        self._record(flight, out)

    def _record(self, flight: Flight, out: dict[str, Any]) -> None:
        run_id = flight.run_id
        self.beats.held.discard(run_id)
        if flight.trial is not None and self.board is not None:
            self.board.forget.remote(run_id)
        if run_id in self.recorded:
            return  # a run counts once, whatever Ray delivered
        info = dict(out.get("manifest") or {}, executor="ray")
        status = out["status"]
        try:
            ok = self.store.finish(
                run_id,
                self.worker,
                status,
                metrics=out["metrics"],
                curves=out["curves"],
                compute=out["compute"],
                manifest=info,
                error=out["error"],
            )
        except Exception as exc:
            if infrastructure(exc):
                self._stop(
                    flight,
                    f"the results store failed while recording {run_id} ({type(exc).__name__}: {_first_line(exc)})",
                )
            raise
        self.recorded.add(run_id)
        checkpoint.path_for(self.s.paths.checkpoints, run_id).unlink(missing_ok=True)  # recorded: nothing to resume
        if not ok:  # our lease ran out and another worker took the run over: its result counts
            if flight.trial is not None:
                self._tell(flight, FAILED, None)
            return
        self.executed += 1
        if flight.trial is not None:
            self._tell(flight, status, out["metrics"].get(METRIC))
        self._mirror(run_id)
        if flight.trial is not None:
            register_evaluation(self.store, self.suite, flight.cell, self.storage())

    def _tell(self, flight: Flight, status: str, value: float | None) -> None:
        from optuna.trial import TrialState

        try:
            if status == DONE:
                flight.study.tell(flight.trial, value, skip_if_finished=True)
            else:
                flight.study.tell(
                    flight.trial,
                    state=TrialState.PRUNED if status == PRUNED else TrialState.FAIL,
                    skip_if_finished=True,
                )
        except Exception as exc:  # the store has the outcome; Optuna is reconciled when evaluation is registered
            logger.warning(f"warning: telling Optuna about {flight.run_id} failed: {exc}")

    def _mirror(self, run_id: str) -> None:
        if self.s.tracker is None:
            return
        try:  # what MLflow cannot take now stays in the store for the next sync
            tracking.mirror(self.store, self.s.tracker, run_id)
        except Exception as exc:
            logger.warning(f"warning: MLflow mirror of {run_id} failed: {type(exc).__name__}: {exc}")

    # -------------------------------------------------------- stopping
    def _stop(self, flight: Flight, why: str) -> None:
        """Give the row back and stop the suite (the caller's ``abandon`` handles the other flights)."""
        self._give_back(flight)
        raise InfrastructureError(
            f"{why}; the run was not recorded as a failure and stays pending: fix the cause "
            f"and run the same command again to resume"
        )

    def abandon(self) -> None:
        """Cancel every task in flight and give its row back (pending for the resume)."""
        for ref, flight in list(self.flights.items()):
            try:
                self.ray.cancel(ref, force=True)
            except Exception:
                pass
            self._give_back(flight)
        self.flights.clear()

    def _give_back(self, flight: Flight) -> None:
        from optuna.trial import TrialState

        self.beats.held.discard(flight.run_id)
        try:
            self.store.release(flight.run_id, self.worker)
        except Exception:  # the store is what failed: the claim of this process comes back when it is gone
            pass
        if flight.trial is not None:
            try:
                flight.study.tell(flight.trial, state=TrialState.FAIL, skip_if_finished=True)
            except Exception:
                pass


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


# ---------------------------------------------------------------- ffbench run --executor ray
def execute(s: runner.Session, opts: RayOptions, device: str = "auto", bar=None) -> int:
    """Run every unfinished row of a planned session as Ray tasks (connected already); return how many
    this driver recorded. Interrupted, it cancels its tasks and gives their rows back before re-raising."""
    with pool.interrupts():  # over the SIGTERM handler ray.init installs: SIGTERM stops like Ctrl-C
        return Driver(s, opts, device, bar).run()


def run_suite(
    suite_ref: str,
    out: str | Path | None = None,
    device: str = "auto",
    tracking_uri: str | None = None,
    progress: bool = True,
    track: bool = True,
    workers: int = 1,
    store_url: str | None = None,
    optuna_storage: str | None = None,
    lease_s: float | None = None,
    poll_s: float | None = None,
    rerun: list[str] | None = None,
    cells: Sequence[str] = (),
    seeds: Sequence[int] = (),
    *,
    address: str | None = None,
    cpus_per_run: int = 1,
    max_retries: int = MAX_RETRIES,
    data_dir: str | None = None,
) -> dict[str, Any]:
    """``runner.run_suite`` with the runs executed as Ray tasks (same arguments, same summary), on the
    cluster at ``address`` or on a Ray runtime started here. SIGINT / SIGTERM raise ``pool.Interrupted``
    (with ``pending``) once the tasks in flight were cancelled and their rows given back."""
    opts = RayOptions(address, cpus_per_run, max_retries, data_dir)
    opts.check()
    if workers != 1:
        raise SuiteError(
            f"--workers {workers}: with --executor ray, Ray decides how many runs execute at once "
            f"(the cluster's CPUs or GPUs); leave --workers out"
        )
    import_ray()
    with pool.interrupts():
        s = runner.open_session(
            suite_ref,
            out,
            store_url=store_url,
            optuna_storage=optuna_storage,
            tracking_uri=tracking_uri,
            track=track,
            lease_s=lease_s,
            poll_s=poll_s,
            rerun=rerun,
            cells=cells,
            seeds=seeds,
        )
        before = progress_of(s)["finished"]
        bar = _bar(s, before) if progress else None
        started = False
        try:
            started = connect(opts.address)
            executed = execute(s, opts, device, bar)
        except KeyboardInterrupt as exc:
            runner._interrupted(s, exc, close_parents=True)
            raise
        finally:
            if bar is not None:
                bar.close()
            if started:
                import ray

                ray.shutdown()
        after = progress_of(s)
        runner.catch_up(s)
    return {
        "suite": s.suite,
        "design": s.design,
        "paths": s.paths,
        "executed": executed,
        "store": s.store,
        "by_others": max(0, after["finished"] - before - executed),
        "progress": after,
        "exit_codes": [],
        "optuna_storage": s.optuna_url,
        "tracking_uri": s.tracker.uri if s.tracker is not None else None,
        "tracker": s.tracker,
    }


def progress_of(s: runner.Session) -> dict[str, int]:
    return progress(s.store, s.suite, s.design)


def _bar(s: runner.Session, initial: int):
    from tqdm import tqdm

    return tqdm(
        total=len(expected_ids(s.design)), initial=initial, desc=f"{s.suite.name} (ray)", unit="run", file=sys.stderr
    )
