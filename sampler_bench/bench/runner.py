"""The sweep: prepare the models, expand the cells, compute those not in the store yet, store them.

Each stage has its module: :mod:`.prepare` (models and metrics, checked before any cell runs),
:mod:`.cells` (the spec expanded into :class:`~.cells.Cell` objects, each resolved once),
:mod:`.compute` (one cell, batch by batch, over this rank's share of the samples), :mod:`.records`
(the row the store keeps). This module decides what to compute (resume: a cell whose id is in the
store is reused) and stores the results.

Distributed (``torchrun``, :mod:`.distributed`): every rank computes its share of each cell; rank 0
alone reads and writes the store; a failure on one rank stops every rank before the cell is stored,
so a rerun resumes.

Concurrent sweeps on one store (two terminals, two jobs of a scheduler) share the work: a sweep
*claims* a cell before computing it (a lease row with its pid, host and an expiry it renews while it
runs, :meth:`~.store.ResultsStore.claim`), skips the cells another live sweep holds and comes back to
them, reusing what that sweep stored. A claimer that died is noticed (its pid on this host, or its
lease running out elsewhere) and its cell is computed again.

Environment failures (disk full, an unwritable cache or store directory) stop the sweep with
:class:`~.store.EnvironmentFailure`; nothing is stored for the cell being computed. A cell stored as
failed for such a reason by an older sampler-bench is computed again rather than reused.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from . import compute
from .cells import Cell, expand_cells, with_schedule
from .distributed import World
from .prepare import prepare_models
from .records import cell_row, environment
from .reference_cache import ReferenceCache
from .schedule_cache import ScheduleCache
from .spec import Spec
from .store import LEASE_TIMEOUT_S, ResultsStore

Event = Callable[[str, Mapping[str, Any]], None]

#: Seconds between two looks at cells another sweep is computing.
WAIT_POLL_S = 0.5
#: A stored failure whose reason names one of these was the environment's, not the cell's: never reused.
ENVIRONMENT_FAILURE = re.compile(r"PermissionError|OSError|No space left|disk (is )?full|Read-only file system|"
                                 r"\[Errno \d+\]", re.I)


@contextlib.contextmanager
def keep_leases(store_path: Path, owner: str, every: float = LEASE_TIMEOUT_S / 3):
    """Renew ``owner``'s leases every ``every`` seconds from a background thread (its own connection), so a
    cell that computes for longer than the lease timeout is not taken over by a concurrent sweep."""
    stop = threading.Event()

    def renew():
        while not stop.wait(every):
            try:
                with ResultsStore(store_path, create=False) as s:
                    s.renew(owner)
            except Exception:  # noqa: BLE001 -- a missed renewal only risks a duplicate computation
                pass

    thread = threading.Thread(target=renew, name="sampler-bench-leases", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()


@dataclass
class SweepSummary:
    sweep_id: str
    store_path: Path
    total: int = 0
    computed: int = 0
    reused: int = 0
    ok: int = 0
    skipped: int = 0
    failed: int = 0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    wall_s: float = 0.0


class Sweep:
    """Runs a validated :class:`Spec` into a results store; construct, then :meth:`run`."""

    def __init__(self, spec: Spec, out_dir: str | Path, *, force: bool = False, retry_failed: bool = False,
                 command: str = "", on_event: Event | None = None, reference_chunk: int | None = None,
                 world: World | None = None):
        self.spec = spec
        self.world = world or World()  # torchrun ranks: see sampler_bench.bench.distributed.init_from_env
        self.out_dir = Path(out_dir)
        self.force = force
        self.retry_failed = retry_failed
        self.command = command or " ".join(sys.argv)
        self.on_event = on_event or (lambda kind, data: None)
        if spec.threads is not None:
            import torch

            # Before any model runs. Small tensors gain nothing from intra-op threads, and OpenMP's
            # spin-waiting threads collapse when any other job shares the cores
            # (benchmarks/RESULTS.md, "Torch threads").
            torch.set_num_threads(spec.threads)
        cache = self.out_dir / "cache"
        self.metric_cache = cache / "metrics"
        self.references = ReferenceCache(cache / "reference", **({"chunk": reference_chunk} if reference_chunk else {}))
        self.schedules = ScheduleCache(cache / "schedules")
        # Everything that can be wrong with the input is found here, before any cell runs.
        if self.world.is_main and (self.out_dir / "results.sqlite").exists():
            ResultsStore(self.out_dir / "results.sqlite", create=False).close()  # an unreadable store fails now
        # Rank 0 first: it fills the shared caches (reference statistics) that the other ranks then read.
        self.models = self.world.main_first(lambda: prepare_models(spec, self.metric_cache), "while preparing the sweep")
        self.hosts = self.world.gather_objects(socket.gethostname())  # one per rank, recorded with every value
        self.cells = expand_cells(spec, self.models)

    def compute(self, cell: Cell, sweep_id: str) -> tuple[dict, list[dict], Any]:
        """The store row, metric rows and kept samples of one cell (skipped/failed cells have no metrics)."""
        if cell.schedule_request is not None and cell.plan is not None:
            cell, failure = self.optimised(cell)
            if failure is not None:
                return cell_row(cell, sweep_id, failure), [], None
        outcome = compute.compute_cell(cell, self.world, self.references, self.hosts, self.on_event)
        return cell_row(cell, sweep_id, outcome), outcome.metric_rows or [], outcome.kept

    def optimised(self, cell: Cell) -> tuple[Cell, compute.Outcome | None]:
        """``cell`` with its optimised schedule (cached, or found now: rank 0 first, the others read its
        entry), or a failed outcome saying why the optimiser could not find one."""
        model = cell.model.model
        self.on_event("schedule", {"cell": cell, "method": cell.schedule.name})
        try:
            found = self.world.main_first(
                lambda: self.schedules.get(cell.schedule_request, model, cell.spec.device, compute.DTYPES[cell.spec.precision]),
                f"while optimising the schedule of cell {cell.label}")
        except OSError:
            raise  # the environment (an unwritable cache), not the cell: the sweep stops, as for references
        except Exception as e:  # noqa: BLE001 -- one optimiser's failure must not stop a long sweep
            return cell, compute.Outcome("failed", f"optimised schedule {cell.schedule.name!r}: {type(e).__name__}: {e}")
        return with_schedule(cell, found), None

    def run(self) -> SweepSummary:
        """Compute every cell not in the store yet. Under torchrun every rank calls this; rank 0 alone
        touches the store, decides what to compute and tells the others (every rank returns its summary)."""
        t0 = time.perf_counter()
        world, main = self.world, self.world.is_main
        self._environment_failed: set[str] = set()  # stored as failed by the environment: recomputed
        if main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        sweep_id = world.broadcast_object(uuid.uuid4().hex[:12])
        summary = SweepSummary(sweep_id, self.out_dir / "results.sqlite", total=len(self.cells))
        for pm in self.models:
            summary.notes += pm.notes
        with (ResultsStore(summary.store_path) if main else contextlib.nullcontext()) as store:

            def plan() -> list[str]:
                store.begin_sweep(sweep_id, spec_name=self.spec.name, spec_toml=self.spec.source, command=self.command,
                                  environment=environment())
                todo_ids = []
                for cell in self.cells:
                    stored = store.stored(cell.cell_id)
                    status = stored[0] if stored else None
                    environmental = status == "failed" and bool(ENVIRONMENT_FAILURE.search(stored[1]))
                    if environmental:
                        self._environment_failed.add(cell.cell_id)
                    if status is not None and not self.force and not (self.retry_failed and status == "failed") \
                            and not environmental:
                        store.link(sweep_id, cell.cell_id)
                        summary.reused += 1
                        self._count(summary, status)
                    else:
                        todo_ids.append(cell.cell_id)
                return todo_ids

            todo_ids = world.broadcast_object(world.run(plan if main else lambda: None, "while opening the results store"))
            world.run(lambda: self.store_floors(store) if main else None, "while computing the noise floor")
            todo = [c for c in self.cells if c.cell_id in set(todo_ids)]
            self.on_event("start", {"total": len(self.cells), "todo": len(todo), "reused": summary.reused})
            owner = f"{socket.gethostname()}:{os.getpid()}:{sweep_id}"
            recompute = "all" if self.force else "failed" if self.retry_failed else "none"
            leases = keep_leases(summary.store_path, owner) if main and todo else contextlib.nullcontext()
            try:
                with leases:
                    self._compute_all(todo, store, owner, recompute, sweep_id, summary)
            finally:
                if main:
                    with contextlib.suppress(Exception):  # e.g. Ctrl-C or disk full: free the cells for a rerun
                        store.release_owner(owner)
            world.run(lambda: store.finish_sweep(sweep_id) if main else None, "while closing the sweep")
        summary.wall_s = time.perf_counter() - t0
        return world.broadcast_object(summary)

    def _compute_all(self, todo: list[Cell], store, owner: str, recompute: str, sweep_id: str,
                     summary: SweepSummary) -> None:
        """Claim, compute and store every cell of ``todo``; cells another sweep holds are visited again
        until they are stored (reused) or their claimer is gone (computed here)."""
        world, main = self.world, self.world.is_main
        pending = list(todo)
        while pending:
            waiting = []
            for cell in pending:
                redo = cell.cell_id in self._environment_failed
                claim = lambda: store.claim(cell.cell_id, owner, recompute=recompute if not redo or recompute == "all"  # noqa: E731
                                            else "failed")
                verdict = world.broadcast_object(world.run(claim if main else lambda: None, "while claiming a cell"))
                if verdict == "busy":
                    waiting.append(cell)
                    continue
                if verdict == "stored":  # a concurrent sweep computed it meanwhile
                    stored = world.broadcast_object(store.stored(cell.cell_id) if main else None)
                    world.run(lambda: store.link(sweep_id, cell.cell_id) if main else None, "while linking a cell")
                    summary.reused += 1
                    self._count(summary, stored[0])
                    self.on_event("cell_done", {"cell": cell, "row": {"status": stored[0], "reason": stored[1]},
                                                "written": False, "reused": True})
                    continue
                self.on_event("cell_start", {"cell": cell})
                row, metric_rows, kept = self.compute(cell, sweep_id)
                replace = self.force or self.retry_failed or redo
                put = lambda: store.put_cell(row, metric_rows, kept, replace=replace)  # noqa: E731
                written = world.run(put if main else lambda: True, f"while storing cell {cell.label}")
                summary.computed += 1
                status = row["status"] if written else (store.status(cell.cell_id) or row["status"])
                self._count(summary, status)
                if row["status"] != "ok":
                    summary.problems.append(f"{cell.label}: {row['status']}: {row['reason']}")
                self.on_event("cell_done", {"cell": cell, "row": row, "written": written})
            if waiting:
                self.on_event("waiting", {"cells": len(waiting)})
                time.sleep(WAIT_POLL_S)
            pending = waiting

    def store_floors(self, store: ResultsStore) -> None:
        """The noise floor (:mod:`.floor`) of every model x distribution metric, unless already stored:
        the metric of ``n_samples`` exact samples, with its interval. Endpoint error has none (exact
        samples *are* the reference), nor has trajectory geometry (exact samples have no trajectory)."""
        from .floor import floor_id, noise_floor

        spec = self.spec
        for pm in self.models:
            for m in pm.metrics:
                if m.needs_reference or m.needs_trajectory:
                    continue
                definition = {"name": m.spec.name, "feature_extractor": m.spec.feature_extractor, "params": m.spec.params}
                fid = floor_id(pm.hash, definition, spec.n_samples, spec.seed)
                if store.has_floor(fid) and not self.force:
                    continue
                self.on_event("floor", {"model": pm.label, "metric": m.spec.name})
                got = noise_floor(pm.model, m.accumulator, spec.n_samples, spec.seed, spec.batch_size, spec.confidence)
                if got is None:
                    continue
                estimates, prov = got
                for key, est in estimates.items():
                    store.put_floor(f"{fid}:{key}", {
                        "model": pm.label, "model_hash": pm.hash, "metric": m.spec.name, "key": key,
                        "n_samples": spec.n_samples, "seed": spec.seed, "value": est.value, "ci_low": est.ci_low,
                        "ci_high": est.ci_high, "corrected": est.corrected,
                        "lower_is_better": m.lower_is_better(key), "replicates": list(est.replicates),
                        "provenance": {**prov, "interval": est.method()}})

    @staticmethod
    def _count(summary: SweepSummary, status: str) -> None:
        if status == "ok":
            summary.ok += 1
        elif status == "skipped":
            summary.skipped += 1
        else:
            summary.failed += 1


def run_sweep(spec: Spec, out_dir: str | Path, **kwargs) -> SweepSummary:
    """Validate ``spec`` against the models and metrics, then compute every missing cell into
    ``out_dir/results.sqlite``. Keyword arguments: see :class:`Sweep`."""
    return Sweep(spec, out_dir, **kwargs).run()
