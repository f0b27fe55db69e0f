"""The sweep runner: expand a spec into cells, compute each cell, store it, resume where a run stopped.

A *cell* is (model, sampler + options, schedule, NFE budget, seeds, metric set). Its id is a hash
of that definition, so a re-run finds the cells already in the store and skips them (resume), and
two runs of the same spec agree on every id.

Seeds: sample ``i`` of a cell draws its initial noise *and* every noise of a stochastic sampler from
its own ``torch.Generator`` seeded with ``seed + i`` (EDM's per-sample generators, Karras et al.
2022, arXiv 2206.00364), so sample ``i`` is a function of ``(seed, i)`` only, whatever the batch
size or the number of processes.

Streaming: samples flow batch by batch into the metric accumulators; only the first
``keep_samples`` (at most 256) of each cell are kept, for the report's pictures.

Distributed (``torchrun``, :mod:`.distributed`): :func:`cell_shard` computes one cell over a range of
sample indices and returns the accumulators' *states* (float64 sums); every rank computes its
contiguous share, the states are reduced across ranks in float64, and :func:`finish_cell` computes
the values. Rank 0 alone reads and writes the store; a failure on one rank stops every rank before
the cell is stored, so a rerun resumes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import platform
import socket
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from ..version import __version__
from ..solvers import budget as _budget
from ..solvers.driver import CountingDenoiser, NonFiniteSampleError, run_solver
from ..solvers.noise import generators_for
from ..solvers.registry import info as solver_info
from .distributed import DistributedError, World, run_sharded
from .reference_cache import ReferenceCache, reference_solver
from .spec import MetricSpec, ModelSpec, SamplerSpec, ScheduleSpec, Spec, SpecError
from .store import ResultsStore

#: Bumped when the meaning of a cell changes, so old stored cells are not mistaken for new ones.
CELL_FORMAT = 1
DTYPES = {"float64": torch.float64, "float32": torch.float32}

Event = Callable[[str, Mapping[str, Any]], None]


def metrics_api():
    """The metrics registry (``sampler_bench.metrics``); a SpecError if it is not importable."""
    try:
        import sampler_bench.metrics as M
    except ImportError as e:
        raise SpecError(f"the metrics package sampler_bench.metrics cannot be imported ({e})") from None
    return M


def load_checkpoint_model(path: str, device: str = "cpu"):
    """``sampler_bench.models.checkpoint.load_model(path)`` with a readable error when unavailable."""
    try:
        from ..models.checkpoint import load_model
    except ImportError as e:
        raise SpecError(
            f"checkpoint {path!r}: loading checkpoints needs sampler_bench.models.checkpoint, "
            f"which is not available in this installation ({e})"
        ) from None
    try:
        return load_model(path, device=device)
    except (ValueError, OSError) as e:
        raise SpecError(f"checkpoint {path!r}: {e}") from None


def load_model(m: ModelSpec, device: str = "cpu"):
    """The model a spec entry names (built-in analytic model or checkpoint) on ``device``."""
    if m.builtin is not None:
        from ..models.builtin import builtin_model

        try:
            return builtin_model(m.builtin)
        except ValueError as e:
            raise SpecError(str(e)) from None
    if m.python is not None:
        return load_plugin_model(m, device)
    return load_checkpoint_model(m.checkpoint, device)


def load_plugin_model(m: ModelSpec, device: str = "cpu"):
    """A plug-in model (``python = "module:factory"``), checked and probed, guided when the spec asks."""
    from ..models.guidance import GuidedModel
    from ..models.plugin import load_plugin

    try:
        model = load_plugin(m.python, m.args, trust_pickle=m.trust_pickle, name=m.label, device=device)
        return model if m.guidance is None else GuidedModel(model, m.guidance)
    except ValueError as e:
        raise SpecError(f"model {m.label!r}: {e}") from None


def environment() -> dict[str, str]:
    """Software and host recorded with every sweep."""
    return {
        "version": __version__, "hostname": socket.gethostname(), "python": platform.python_version(),
        "torch": torch.__version__,
    }


def sample_seeds(seed: int, start: int, stop: int) -> list[int]:
    """Seeds of samples ``[start, stop)``: sample i uses ``seed + i`` (documented in benchmarks/example_sweep.toml).

    Every cell of a sweep uses the same seeds, so samplers are compared on the same initial noise."""
    return [seed + i for i in range(start, stop)]


# ---------------------------------------------------------------------------------------------
# Preparation: everything that can go wrong with the user's input happens here, before any cell.


@dataclass
class PreparedMetric:
    spec: MetricSpec
    info: Any
    needs_reference: bool


#: Reference tolerances for a model whose denoiser is not exact float64 arithmetic (a network in
#: float32): DOP853 cannot resolve 1e-10 through float32 noise and would shrink its steps for ever;
#: 1e-6 is still far below the error of any sampler at the budgets swept.
NETWORK_REFERENCE = {"rtol": 1e-6, "atol": 1e-6}


def reference_options(model, spec: Spec) -> dict:
    """Tolerances of the endpoint-error reference: the solver's defaults (1e-10) for exact analytic
    models, :data:`NETWORK_REFERENCE` for other models, overridden by the spec's ``[reference]`` table.
    The reference solver is the one registered for the model's process (:func:`reference_solver`)."""
    from ..models.base import AnalyticModel
    from ..processes.cld import CLDAnalyticModel

    base = {} if isinstance(model, (AnalyticModel, CLDAnalyticModel)) else dict(NETWORK_REFERENCE)
    try:
        solver = reference_solver(str(model.process))
    except ValueError:  # no yardstick for this process: only an endpoint-error cell can fail, and says why
        return {}
    return solver_info(solver).validate({**base, **spec.reference})


@dataclass
class PreparedModel:
    spec: ModelSpec
    model: Any
    label: str
    hash: str
    process: str
    metrics: list[PreparedMetric]
    notes: list[str] = field(default_factory=list)
    reference_options: dict = field(default_factory=dict)


@dataclass
class Cell:
    """One unit of work and of storage; ``cell_id`` hashes ``definition``."""

    cell_id: str
    definition: dict
    model: PreparedModel
    sampler: SamplerSpec
    schedule: ScheduleSpec
    sigma_min: float
    sigma_max: float
    nfe_budget: int

    @property
    def label(self) -> str:
        return f"{self.model.label} · {self.sampler.name} · {self.schedule.name} · NFE {self.nfe_budget}"


def cell_id_of(definition: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(definition, sort_keys=True, default=list).encode()).hexdigest()[:16]


def _lower_is_better(info: Any, key: str) -> bool:
    lib = getattr(info, "lower_is_better", True)
    if isinstance(lib, Mapping):
        return bool(lib.get(key, True))
    return bool(lib)


def prepare_models(spec: Spec, cache_dir: Path | None) -> list[PreparedModel]:
    """Load every model and check every metric on it (a trial accumulator validates the parameters)."""
    if spec.device.startswith("cuda") and not torch.cuda.is_available():
        raise SpecError(f"device {spec.device!r} was asked for but CUDA is not available here; use device = \"cpu\"")
    M = metrics_api() if spec.metrics else None
    out = []
    for m in spec.models:
        raw = load_model(m, spec.device)
        model = executed(raw, spec, m.label)
        prepared = PreparedModel(m, model, m.label, str(raw.fingerprint()), str(raw.process), [],
                                 reference_options=reference_options(raw, spec))
        for s in spec.schedules:
            smax = s.sigma_max if s.sigma_max is not None else model.sigma_max
            smin = s.sigma_min if s.sigma_min is not None else model.sigma_min
            if smin >= smax:
                raise SpecError(
                    f"model {m.label!r}: the schedule's sigma range [{smin}, {smax}] is empty; "
                    f"the model's range is [{model.sigma_min}, {model.sigma_max}]"
                )
            if smax != model.sigma_max and prepared.process != "gaussian":
                raise SpecError(
                    f"model {m.label!r} ({prepared.process}): its prior is drawn at sigma_max = {model.sigma_max}; "
                    "a different schedule sigma_max is only supported for Gaussian processes"
                )
        for ms in spec.metrics:
            info = M.info(ms.name)
            ok, reason = info.applies(model, ms.feature_extractor)
            if not ok:
                prepared.notes.append(f"metric {ms.name!r} does not apply to model {m.label!r}: {reason}")
                continue
            try:
                make_accumulator(M, ms, model, spec, cache_dir)
            except (ValueError, TypeError) as e:
                raise SpecError(f"[[metric]] {ms.name!r} on model {m.label!r}: {e}") from None
            prepared.metrics.append(PreparedMetric(ms, info, bool(getattr(info, "needs_reference_endpoints", False))))
        left_out = [s.name for s in spec.samplers if s.from_all and prepared.process not in solver_info(s.name).processes]
        if left_out:
            prepared.notes.append(
                f"all_samplers: left out for model {m.label!r} ({prepared.process} process), as they apply to "
                f"other processes: {', '.join(left_out)}"
            )
        out.append(prepared)
    return out


def executed(model, spec: Spec, label: str):
    """``model`` under the spec's [execution] options (compile / CUDA graphs / autocast), or as it is."""
    if not spec.execution:
        return model
    from ..models.execution import ExecutedModel

    try:
        return ExecutedModel(model, device=spec.device, **spec.execution)
    except ValueError as e:
        raise SpecError(f"[execution] for model {label!r}: {e}") from None


def make_accumulator(M, ms: MetricSpec, model, spec: Spec, cache_dir: Path | None):
    return M.make(
        ms.name, model, feature_extractor=ms.feature_extractor, seed=spec.seed,
        cache_dir=str(cache_dir) if cache_dir is not None else None, device=spec.device, **ms.params,
    )


#: Schedule parameters a process needs unless the spec sets them. CLD grids are in time t, where gDDIM's
#: default grid is uniform in sqrt(t) (``karras`` with rho = 2; Zhang et al., arXiv 2206.05564), not EDM's
#: rho = 7 in sigma, which would crowd the steps against t_eps.
PROCESS_SCHEDULE_DEFAULTS = {"cld": {"karras": {"rho": 2.0}}}


def schedule_for(schedule: ScheduleSpec, process: str) -> ScheduleSpec:
    """``schedule`` with the process's default parameters filled in where the spec left them out."""
    defaults = PROCESS_SCHEDULE_DEFAULTS.get(process, {}).get(schedule.name)
    if not defaults:
        return schedule
    return dataclasses.replace(schedule, params={**defaults, **schedule.params})


def expand_cells(spec: Spec, models: Sequence[PreparedModel]) -> list[Cell]:
    """Every (model, schedule, sampler, budget) of the spec, in a stable order."""
    cells = []
    for pm in models:
        for sch in (schedule_for(s, pm.process) for s in spec.schedules):
            smax = sch.sigma_max if sch.sigma_max is not None else float(pm.model.sigma_max)
            smin = sch.sigma_min if sch.sigma_min is not None else float(pm.model.sigma_min)
            for smp in spec.samplers:
                meta = solver_info(smp.name)
                if smp.from_all and pm.process not in meta.processes:
                    continue  # all_samplers means every sampler that applies; see prepare_models' note
                metrics = [pm_ for pm_ in pm.metrics if not (meta.stochastic and pm_.needs_reference)]
                for budget in spec.nfe:
                    definition = {
                        "format": CELL_FORMAT, "model": pm.label, "model_hash": pm.hash, "process": pm.process,
                        "solver": smp.name, "options": smp.options, "schedule": sch.name,
                        "schedule_params": sch.params, "sigma_min": float(smin), "sigma_max": float(smax),
                        "ends_at_zero": sch.ends_at_zero, "nfe_budget": budget, "n_samples": spec.n_samples,
                        "seed": spec.seed, "precision": spec.precision,
                        # noise streams and arithmetic differ between device types (not between indices)
                        "device_type": torch.device(spec.device).type,
                        "reference_options": pm.reference_options if any(m.needs_reference for m in metrics) else None,
                        # mixed precision changes the numbers; compile and CUDA graphs do not (absent: float32/64)
                        **({"autocast": spec.execution["autocast"]} if "autocast" in spec.execution else {}),
                        "metrics": [
                            {"name": m.spec.name, "feature_extractor": m.spec.feature_extractor, "params": m.spec.params}
                            for m in metrics
                        ],
                    }
                    cells.append(Cell(cell_id_of(definition), definition, pm, smp, sch, float(smin), float(smax), budget))
    return cells


# ---------------------------------------------------------------------------------------------
# Computing one cell.


def initial_states(model, seed: int, start: int, stop: int, sigma_max: float, device: str,
                   generators: list | None = None) -> torch.Tensor:
    """Float64 starting states of samples ``[start, stop)`` at ``sigma_max`` from their own generators."""
    gens = generators if generators is not None else generators_for(sample_seeds(seed, start, stop), device)
    x = model.prior(stop - start, generator=gens).to(device=device, dtype=torch.float64)
    if sigma_max != model.sigma_max:  # Gaussian prior N(0, sigma^2 I): rescaling is exact
        x = x * (sigma_max / model.sigma_max)
    return x


def data_of(model, states: torch.Tensor) -> torch.Tensor:
    """The generated data in a sampler's output: ``model.data_from_state(u)`` for processes whose
    state is larger than the data (CLD: u = (x, v) -> x = u[:, 0]), the output itself otherwise.
    Metrics, reference endpoints and kept samples all see the data."""
    from_state = getattr(model, "data_from_state", None)
    return states if from_state is None else from_state(states)


@dataclass
class ShardResult:
    """A cell computed over sample indices ``[start, stop)``: accumulator states plus timings."""

    start: int
    stop: int
    states: dict[str, dict]
    nfe_counted: list[int]
    sampling_s: float
    denoiser_s: float
    metric_s: float
    kept: torch.Tensor | None


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def cell_shard(
    cell: Cell,
    plan: _budget.Plan,
    options: dict,
    spec: Spec,
    make: Callable[[PreparedMetric], Any],
    start: int,
    stop: int,
    reference: Callable[[int, int], torch.Tensor] | None = None,
) -> ShardResult:
    """Run ``cell`` on samples ``[start, stop)`` and return its accumulator states (not values).

    Raises :class:`NonFiniteSampleError` when a state becomes NaN/Inf.
    """
    model, device, dtype = cell.model.model, spec.device, DTYPES[spec.precision]
    metrics = [m for m in cell.model.metrics if not (solver_info(cell.sampler.name).stochastic and m.needs_reference)]
    accs = {m.spec.name: make(m) for m in metrics}
    nfe, sampling_s, denoiser_s, metric_s, kept = [], 0.0, 0.0, 0.0, []
    for a in range(start, stop, spec.batch_size):
        b = min(a + spec.batch_size, stop)
        _sync(device)
        t0 = time.perf_counter()
        gens = generators_for(sample_seeds(spec.seed, a, b), device)
        x = initial_states(model, spec.seed, a, b, cell.sigma_max, device, generators=gens).to(dtype)
        counter = CountingDenoiser(model, timed=True)
        out = data_of(model, run_solver(cell.sampler.name, counter, x, plan.sigmas, generator=gens, options=options))
        _sync(device)
        t1 = time.perf_counter()
        sampling_s += t1 - t0
        denoiser_s += counter.seconds
        nfe.append(counter.nfe)
        ref = None
        if reference is not None and any(m.needs_reference for m in metrics):
            ref = data_of(model, reference(a, b)).to(device=out.device, dtype=out.dtype)
        t2 = time.perf_counter()
        for m in metrics:
            accs[m.spec.name].update(out, reference=ref if m.needs_reference else None, index=a)
        _sync(device)
        metric_s += time.perf_counter() - t2
        if a < spec.keep_samples:
            kept.append(out[: spec.keep_samples - a].detach().to("cpu", torch.float32))
    states = {name: acc.state() for name, acc in accs.items()}
    return ShardResult(start, stop, states, nfe, sampling_s, denoiser_s, metric_s, torch.cat(kept) if kept else None)


def finish_cell(cell: Cell, shards: Sequence[ShardResult], make: Callable[[PreparedMetric], Any], M,
                reference_key: str = "", device: str = "cpu", hosts: Sequence[str] | None = None,
                confidence: float = 0.95) -> list[dict]:
    """Reduce the shards' accumulator states and compute the metric rows of the store.

    ``reference_key`` identifies the cached ODE reference endpoints (see :class:`ReferenceCache`); it is
    the reference hash of the metrics that compare against them. ``device`` is recorded with the
    execution options in every value's provenance, and so is ``hosts`` (one host name per rank, in rank
    order) as ``ranks`` and ``hosts``: a cell's wall time and samples/s depend on them. Every row
    carries its interval (``ci_low``, ``ci_high``, ``corrected``, the bootstrap ``replicates``) at
    level ``confidence``, and its method in ``provenance["interval"]``.
    """
    from ..models.execution import execution_provenance

    rows = []
    stochastic = solver_info(cell.sampler.name).stochastic
    for m in cell.model.metrics:
        if stochastic and m.needs_reference:
            continue
        states = [s.states[m.spec.name] for s in shards]
        acc = make(m)
        acc.load_state(states[0] if len(states) == 1 else M.reduce_states(states))
        estimates = acc.estimates(confidence) if hasattr(acc, "estimates") else {
            k: None for k in acc.compute()}
        values = acc.compute() if any(e is None for e in estimates.values()) else {k: e.value for k, e in estimates.items()}
        prov = dict(getattr(acc, "provenance", {}) or {})
        prov.setdefault("params", m.spec.params)
        prov.setdefault("n_samples", sum(s.stop - s.start for s in shards))
        prov["execution"] = execution_provenance(cell.model.model, device)
        if hosts is not None:
            prov["execution"].update(ranks=len(hosts), hosts=sorted(set(hosts)))
        if m.needs_reference and reference_key:
            prov["reference_hash"] = reference_key
            prov["reference_endpoints"] = {
                "solver": reference_solver(cell.model.process), "options": cell.model.reference_options,
                "cache_key": reference_key,
                "sigma_max": cell.sigma_max, "sigma_min": cell.sigma_min, "ends_at_zero": cell.schedule.ends_at_zero,
            }
        for key, value in values.items():
            est = estimates.get(key)
            interval = {} if est is None else {
                "ci_low": est.ci_low, "ci_high": est.ci_high, "corrected": est.corrected,
                "replicates": list(est.replicates)}
            key_prov = prov if est is None else {**prov, "interval": {
                "method": est.method(), "confidence": est.confidence, "replicates": len(est.replicates),
                "bias_corrected": est.bias_corrected, "se": est.se}}
            rows.append({
                "metric": m.spec.name, "key": key, "value": float(value), **interval,
                "lower_is_better": _lower_is_better(m.info, key),
                "feature_extractor": str(prov.get("feature_extractor") or m.spec.feature_extractor or ""),
                "reference_hash": str(prov.get("reference_hash") or ""),
                "provenance": key_prov,
            })
    return rows


# ---------------------------------------------------------------------------------------------
# The sweep.


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


def _base_row(cell: Cell, spec: Spec, sweep_id: str) -> dict:
    meta = solver_info(cell.sampler.name)
    return {
        "cell_id": cell.cell_id, "sweep_id": sweep_id, "spec_name": spec.name, "model": cell.model.label,
        "model_hash": cell.model.hash, "process": cell.model.process, "solver": cell.sampler.name,
        "options": json.dumps(cell.sampler.options, sort_keys=True, default=list),
        "requested_options": json.dumps(cell.sampler.options, sort_keys=True, default=list), "stochastic": meta.stochastic,
        "declared_order": meta.order_for(cell.sampler.options), "schedule": cell.schedule.name,
        "schedule_params": json.dumps(cell.schedule.params, sort_keys=True), "sigma_min": cell.sigma_min,
        "sigma_max": cell.sigma_max, "ends_at_zero": cell.schedule.ends_at_zero, "nfe_budget": cell.nfe_budget,
        "nfe_planned": None, "nfe_counted": None, "steps": None, "n_samples": spec.n_samples, "seed": spec.seed,
        "batch_size": spec.batch_size, "device": spec.device, "precision": spec.precision, "wall_time_s": None,
        "samples_per_s": None, "denoiser_fraction": None, "metric_time_s": None, "status": "ok", "reason": "",
        "version": __version__,
    }


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
        cache = self.out_dir / "cache"
        self.metric_cache = cache / "metrics"
        self.references = ReferenceCache(cache / "reference", **({"chunk": reference_chunk} if reference_chunk else {}))
        # Everything that can be wrong with the input is found here, before any cell runs.
        if self.world.is_main and (self.out_dir / "results.sqlite").exists():
            ResultsStore(self.out_dir / "results.sqlite", create=False).close()  # an unreadable store fails now
        # Rank 0 first: it fills the shared caches (reference statistics) that the other ranks then read.
        self.models = self.world.main_first(lambda: prepare_models(spec, self.metric_cache), "while preparing the sweep")
        self.hosts = self.world.gather_objects(socket.gethostname())  # one per rank, recorded with every value
        self.cells = expand_cells(spec, self.models)
        self.M = metrics_api() if spec.metrics else None

    def _make(self, model):
        return lambda m: make_accumulator(self.M, m.spec, model, self.spec, self.metric_cache)

    def _reference_key(self, cell: Cell) -> str:
        return ReferenceCache.key(cell.model.hash, self.spec.seed, cell.sigma_min, cell.sigma_max,
                                  cell.schedule.ends_at_zero, torch.device(self.spec.device).type,
                                  cell.model.reference_options, solver=reference_solver(cell.model.process))

    def _reference(self, cell: Cell) -> Callable[[int, int], torch.Tensor]:
        """This rank's reference endpoints of ``cell`` (under torchrun a collective: every rank calls it)."""
        spec, model = self.spec, cell.model.model
        return self.references.for_rank(
            self.world, model, self._reference_key(cell), spec.n_samples,
            lambda s, e: initial_states(model, spec.seed, s, e, cell.sigma_max, spec.device),
            cell.sigma_min, cell.sigma_max, cell.schedule.ends_at_zero,
            on_compute=lambda s, e: self.on_event("reference", {"model": cell.model.label, "start": s, "stop": e}),
            options=cell.model.reference_options, solver=reference_solver(cell.model.process),
            cell_errors=(NonFiniteSampleError,), what=f"while computing the reference endpoints of cell {cell.label}",
        )

    def compute(self, cell: Cell, sweep_id: str) -> tuple[dict, list[dict], torch.Tensor | None]:
        """The store row, metric rows and kept samples of one cell (skipped/failed cells have no metrics)."""
        spec = self.spec
        row = _base_row(cell, spec, sweep_id)
        meta = solver_info(cell.sampler.name)
        if cell.model.process not in meta.processes:
            # Only a Gaussian-kernel process lacking a reverse SDE (finite-D PFGM++) needs the SDE hint;
            # CLD has a reverse SDE but its own state and samplers.
            why = " (it needs a reverse SDE)" if meta.stochastic and cell.model.process == "pfgmpp" else ""
            row.update(status="skipped", reason=(
                f"sampler {cell.sampler.name!r} applies to {', '.join(meta.processes)} processes{why}; "
                f"model {cell.model.label!r} is a {cell.model.process!r} process"))
            return row, [], None
        try:
            plan = _budget.plan(
                cell.sampler.name, cell.nfe_budget, schedule=cell.schedule.name, sigma_min=cell.sigma_min,
                sigma_max=cell.sigma_max, ends_at_zero=cell.schedule.ends_at_zero,
                schedule_params=cell.schedule.params, **cell.sampler.options,
            )
        except ValueError as e:
            row.update(status="skipped", reason=str(e))
            return row, [], None
        options = meta.validate(plan.options)
        row.update(options=json.dumps(options, sort_keys=True, default=list), nfe_planned=plan.nfe, steps=plan.steps,
                   declared_order=meta.order_for(options), reason=plan.note)
        needs_ref = not meta.stochastic and any(m.needs_reference for m in cell.model.metrics)
        make = self._make(cell.model.model)
        try:  # each rank computes its share of the samples; one process computes them all
            reference = self._reference(cell) if needs_ref else None
            shard = run_sharded(self.world, spec.n_samples,
                                lambda a, b: cell_shard(cell, plan, options, spec, make, a, b, reference=reference),
                                cell_errors=(NonFiniteSampleError,), what=f"while computing cell {cell.label}")
        except DistributedError:
            raise  # a rank failure stops the sweep on every rank; nothing is stored for this cell
        except NonFiniteSampleError as e:
            row.update(status="failed", reason=(
                f"{e} at NFE budget {cell.nfe_budget} on model {cell.model.label!r} "
                f"(sampler {cell.sampler.name!r}, schedule {cell.schedule.name!r})"))
            return row, [], None
        except Exception as e:  # a bug in one solver or metric must not stop a long sweep
            row.update(status="failed", reason=f"{cell.sampler.name} at NFE {cell.nfe_budget}: {type(e).__name__}: {e}")
            return row, [], None
        counted = max(shard.nfe_counted)
        notes = [plan.note] if plan.note else []
        if len(set(shard.nfe_counted)) > 1:
            notes.append(f"batches counted different NFE: {sorted(set(shard.nfe_counted))}")
        if counted != plan.nfe:
            notes.append(f"counted {counted} NFE but the solver's NFE law promises {plan.nfe} (a solver bug: please report)")
        try:
            metric_rows = finish_cell(cell, [shard], make, self.M, confidence=spec.confidence,
                                      reference_key=self._reference_key(cell) if needs_ref else "", device=spec.device,
                                      hosts=self.hosts)
        except Exception as e:
            row.update(status="failed", reason=f"metrics of {cell.sampler.name} at NFE {cell.nfe_budget}: {type(e).__name__}: {e}")
            return row, [], None
        bad = [f"{r['metric']}/{r['key']}" for r in metric_rows if not math.isfinite(r["value"])]
        if bad:
            notes.append(f"non-finite metric values: {', '.join(bad)}")
        wall = shard.sampling_s
        row.update(
            nfe_counted=counted, wall_time_s=wall, samples_per_s=spec.n_samples / wall if wall > 0 else None,
            denoiser_fraction=shard.denoiser_s / wall if wall > 0 else None, metric_time_s=shard.metric_s,
            reason="; ".join(notes),
        )
        return row, metric_rows, shard.kept

    def run(self) -> SweepSummary:
        """Compute every cell not in the store yet. Under torchrun every rank calls this; rank 0 alone
        touches the store, decides what to compute and tells the others (every rank returns its summary)."""
        t0 = time.perf_counter()
        world, main = self.world, self.world.is_main
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
                    status = store.status(cell.cell_id)
                    if status is not None and not self.force and not (self.retry_failed and status == "failed"):
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
            for cell in todo:
                self.on_event("cell_start", {"cell": cell})
                row, metric_rows, kept = self.compute(cell, sweep_id)
                put = lambda: store.put_cell(row, metric_rows, kept, replace=self.force or self.retry_failed)  # noqa: E731
                written = world.run(put if main else lambda: True, f"while storing cell {cell.label}")
                summary.computed += 1
                status = row["status"] if written else (store.status(cell.cell_id) or row["status"])
                self._count(summary, status)
                if row["status"] != "ok":
                    summary.problems.append(f"{cell.label}: {row['status']}: {row['reason']}")
                self.on_event("cell_done", {"cell": cell, "row": row, "written": written})
            world.run(lambda: store.finish_sweep(sweep_id) if main else None, "while closing the sweep")
        summary.wall_s = time.perf_counter() - t0
        return world.broadcast_object(summary)

    def store_floors(self, store: ResultsStore) -> None:
        """The noise floor (:mod:`.floor`) of every model x distribution metric, unless already stored:
        the metric of ``n_samples`` exact samples, with its interval. Endpoint error has none (exact
        samples *are* the reference)."""
        from .floor import floor_id, noise_floor

        spec = self.spec
        for pm in self.models:
            for m in pm.metrics:
                if m.needs_reference:
                    continue
                definition = {"name": m.spec.name, "feature_extractor": m.spec.feature_extractor, "params": m.spec.params}
                fid = floor_id(pm.hash, definition, spec.n_samples, spec.seed)
                if store.has_floor(fid) and not self.force:
                    continue
                self.on_event("floor", {"model": pm.label, "metric": m.spec.name})
                got = noise_floor(pm.model, lambda: self._make(pm.model)(m), spec.n_samples, spec.seed,
                                  spec.batch_size, spec.confidence)
                if got is None:
                    continue
                estimates, prov = got
                for key, est in estimates.items():
                    store.put_floor(f"{fid}:{key}", {
                        "model": pm.label, "model_hash": pm.hash, "metric": m.spec.name, "key": key,
                        "n_samples": spec.n_samples, "seed": spec.seed, "value": est.value, "ci_low": est.ci_low,
                        "ci_high": est.ci_high, "corrected": est.corrected,
                        "lower_is_better": _lower_is_better(m.info, key), "replicates": list(est.replicates),
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
