"""Computing one cell: sample, count NFE, stream the samples into the metric accumulators.

Streaming: samples flow batch by batch into the metric accumulators; only the first
``keep_samples`` (at most 256) of each cell are kept, for the report's pictures.

Distributed (``torchrun``, :mod:`.distributed`): :func:`cell_shard` computes one cell over a range of
sample indices and returns the accumulators' *states* (float64 sums); every rank computes its
contiguous share, the states are reduced across ranks in float64, and :func:`finish_cell` computes
the values. A failure on one rank stops every rank before the cell is stored, so a rerun resumes.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch

from ..models.guidance import Conditioned, EvaluationCounter
from ..solvers.driver import CountingDenoiser, NonFiniteSampleError, run_solver
from ..solvers.trajectory import TrajectoryRecorder
from ..rng import generators_for, noise_generator
from .cells import Cell
from .distributed import DistributedError, World, run_sharded
from .reference_cache import ReferenceCache
from .states import class_labels, data_of, initial_states, sample_seeds

DTYPES = {"float64": torch.float64, "float32": torch.float32}


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
    #: per batch: network evaluations per sample (2 per guided evaluation) and forward calls
    network_evals: list[int] = field(default_factory=list)
    forward_calls: list[int] = field(default_factory=list)
    #: seconds in the spec's decoder (latent models), apart from sampling
    decode_s: float = 0.0
    #: per batch: what the solver recorded besides samples (``CountingDenoiser.notes``, e.g. Yukawa resampling)
    solver_notes: list[dict] = field(default_factory=list)


@dataclass
class Outcome:
    """What computing a cell gave: ``status`` ('ok', 'skipped' or 'failed') and ``reason``; for an
    ok cell also the counted NFE, the timings, the metric rows and the kept samples."""

    status: str
    reason: str
    nfe_counted: int | None = None
    shard: ShardResult | None = None
    metric_rows: list[dict] | None = None

    @property
    def kept(self) -> torch.Tensor | None:
        return self.shard.kept if self.shard is not None else None


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def cell_shard(cell: Cell, start: int, stop: int,
               reference: Callable[[int, int], torch.Tensor] | None = None) -> ShardResult:
    """Run ``cell`` on samples ``[start, stop)`` and return its accumulator states (not values);
    ``reference(a, b)``: the reference endpoints of samples ``[a, b)`` when a metric compares with them.

    Raises :class:`NonFiniteSampleError` when a state becomes NaN/Inf.
    """
    spec, model = cell.spec, cell.model.model
    device, dtype = spec.device, DTYPES[spec.precision]
    accs = {m.spec.name: m.accumulator() for m in cell.metrics}
    decode = cell.model.decode
    nfe, sampling_s, denoiser_s, metric_s, kept = [], 0.0, 0.0, 0.0, []
    network_evals, forward_calls, decode_s, solver_notes = [], [], 0.0, []
    for a in range(start, stop, spec.batch_size):
        b = min(a + spec.batch_size, stop)
        _sync(device)
        t0 = time.perf_counter()
        gens = generators_for(sample_seeds(spec.seed, a, b), device)
        x = initial_states(model, spec.seed, a, b, cell.sigma_max, device, generators=gens).to(dtype)
        # class labels come after the prior from the same generators (EDM's generate.py order)
        labels = class_labels(model, spec.seed, a, b, cell.sigma_max, device, generators=gens)
        # the starting states always come from the per-sample generators (deterministic samplers do not
        # depend on the noise generator); a stochastic sampler's noise from the spec's noise_generator
        noise = gens if spec.noise_generator == "torch" or not cell.solver.stochastic else \
            noise_generator(spec.noise_generator, spec.seed, a, b, device)
        evaluations = EvaluationCounter()
        counter = CountingDenoiser(Conditioned(model, labels, evaluations), timed=True)
        recorder = TrajectoryRecorder() if cell.needs_trajectory else None
        out = data_of(model, run_solver(cell.solver.name, counter, x, cell.plan.sigmas, generator=noise,
                                        options=cell.options, trajectory=recorder))
        _sync(device)
        t1 = time.perf_counter()
        sampling_s += t1 - t0
        denoiser_s += counter.seconds
        nfe.append(counter.nfe)
        if counter.notes:
            solver_notes.append({"start": a, "stop": b, **counter.notes})
        network_evals.append(evaluations.network_evals)
        forward_calls.append(evaluations.forward_calls)
        ref = None
        if reference is not None and cell.needs_reference:
            ref = data_of(model, reference(a, b)).to(device=out.device, dtype=out.dtype)
        if decode is not None:  # latent models: the metrics score the decoded samples
            with torch.no_grad():
                out = decode(out).to(torch.float64)
                ref = decode(ref).to(torch.float64) if ref is not None else None
            _sync(device)
            decode_s += time.perf_counter() - t1
        t2 = time.perf_counter()
        for m in cell.metrics:
            if m.needs_trajectory:
                accs[m.spec.name].update(out, index=a, trajectory=recorder.result)
            else:
                accs[m.spec.name].update(out, reference=ref if m.needs_reference else None, index=a)
        _sync(device)
        metric_s += time.perf_counter() - t2
        if a < spec.keep_samples:
            kept.append(out[: spec.keep_samples - a].detach().to("cpu", torch.float32))
    states = {name: acc.state() for name, acc in accs.items()}
    return ShardResult(start, stop, states, nfe, sampling_s, denoiser_s, metric_s, torch.cat(kept) if kept else None,
                       network_evals, forward_calls, decode_s, solver_notes)


def resampling_summary(shards: Sequence[ShardResult]) -> dict | None:
    """What a resampling sampler (yukawa_smc) did over the cell: events and the smallest ESS fraction, per batch
    and in total; None when no batch recorded resampling."""
    batches = [dict(n["resampling"], start=n["start"], stop=n["stop"]) for s in shards for n in s.solver_notes
               if "resampling" in n]
    if not batches:
        return None
    return {"events": sum(b["events"] for b in batches),
            "min_ess_fraction": min(b["min_ess_fraction"] for b in batches), "batches": batches}


def evaluations_of(shards: Sequence[ShardResult]) -> dict:
    """What the cell's NFE counts and what the network did (per sample; the most over batches)."""
    nfe = max((n for s in shards for n in s.nfe_counted), default=0)
    net = max((n for s in shards for n in s.network_evals), default=nfe)
    calls = max((n for s in shards for n in s.forward_calls), default=nfe)
    return {"denoiser_per_sample": nfe, "network_per_sample": net, "forward_calls": calls,
            "nfe_counts": "denoiser evaluations as the solver sees them (a guided evaluation is one)"}


def finish_cell(cell: Cell, shards: Sequence[ShardResult], hosts: Sequence[str] | None = None,
                confidence: float = 0.95) -> list[dict]:
    """Reduce the shards' accumulator states and compute the metric rows of the store.

    The execution options and the device are recorded in every value's provenance, and so is ``hosts``
    (one host name per rank, in rank order) as ``ranks`` and ``hosts``: a cell's wall time and
    samples/s depend on them. Values compared with reference endpoints record the reference setting
    and its cache key. Every row carries its interval (``ci_low``, ``ci_high``, ``corrected``, the
    bootstrap ``replicates``) at level ``confidence``, and its method in ``provenance["interval"]``.
    """
    from ..models.execution import execution_provenance

    rows = []
    for m in cell.metrics:
        acc = m.accumulator()
        acc.load_state(m.reduce([s.states[m.spec.name] for s in shards]))
        estimates = acc.estimates(confidence) if hasattr(acc, "estimates") else {
            k: None for k in acc.compute()}
        values = acc.compute() if any(e is None for e in estimates.values()) else {k: e.value for k, e in estimates.items()}
        prov = dict(getattr(acc, "provenance", {}) or {})
        prov.setdefault("params", m.spec.params)
        prov.setdefault("n_samples", sum(s.stop - s.start for s in shards))
        prov["execution"] = execution_provenance(cell.model.model, cell.spec.device)
        prov["evaluations"] = evaluations_of(shards)
        if cell.model.decode is not None:
            prov["decode"] = {"decoder": cell.model.spec.decode, "seconds": sum(s.decode_s for s in shards)}
        if cell.solver.stochastic:
            prov["noise_generator"] = cell.spec.noise_generator
        if "output" in cell.options:  # sampler_bench/solvers/output.py: what the sampler returned
            prov["output"] = cell.options["output"]
        resampling = resampling_summary(shards)
        if resampling is not None:
            prov["resampling"] = resampling
        if hosts is not None:
            prov["execution"].update(ranks=len(hosts), hosts=sorted(set(hosts)))
        ref = cell.reference
        if m.needs_reference and ref is not None:
            prov["reference_hash"] = ref.key
            prov["reference_endpoints"] = {
                "solver": ref.solver, "options": ref.options, "cache_key": ref.key,
                "sigma_max": ref.sigma_max, "sigma_min": ref.sigma_min, "ends_at_zero": ref.ends_at_zero,
            }
        if cell.optimised is not None:  # the levels an optimiser chose and what choosing them cost
            prov["optimised_schedule"] = cell.optimised.provenance()
        if cell.spec.replicates > 1:  # which disjoint seed range (the report averages replicates)
            prov["replicate"] = {"index": cell.spec.replicate_index, "of": cell.spec.replicates,
                                 "base_seed": cell.spec.seed - cell.spec.replicate_index * cell.spec.n_samples}
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
                "lower_is_better": m.lower_is_better(key),
                "feature_extractor": str(prov.get("feature_extractor") or m.spec.feature_extractor or ""),
                "reference_hash": str(prov.get("reference_hash") or ""),
                "provenance": key_prov,
            })
    return rows


def _environment_failure(e: OSError, cell: Cell):
    from .store import EnvironmentFailure, environment_problem

    if isinstance(e, EnvironmentFailure):
        return e
    return EnvironmentFailure(f"stopped while computing cell {cell.label}: {environment_problem(e)}; nothing was "
                              "stored for this cell")


def compute_cell(cell: Cell, world: World, references: ReferenceCache, hosts: Sequence[str] | None = None,
                 on_event: Callable[[str, Mapping[str, Any]], None] | None = None) -> Outcome:
    """Compute ``cell`` on this rank's share of its samples (all of them in one process) and reduce.

    A cell that cannot run is 'skipped', one whose samples turn non-finite or whose solver or metric
    raises is 'failed' with the reason: a bug in one solver must not stop a long sweep. A rank failure
    (:class:`DistributedError`) is raised on every rank; nothing is stored for that cell.
    """
    if cell.plan is None:
        return Outcome("skipped", cell.skip_reason)
    if cell.plan.sigmas is None:
        raise ValueError(f"cell {cell.label}: its optimised schedule was not resolved (Sweep.optimised) before computing")
    on_event = on_event or (lambda kind, data: None)
    name, budget = cell.sampler.name, cell.nfe_budget
    try:  # each rank computes its share of the samples; one process computes them all
        reference = None
        if cell.needs_reference:
            if cell.reference is None:
                raise ValueError(cell.model.reference_problem)
            reference = references.for_rank(
                world, cell.reference,
                on_compute=lambda s, e: on_event("reference", {"model": cell.model.label, "start": s, "stop": e}),
                cell_errors=(NonFiniteSampleError,), what=f"while computing the reference endpoints of cell {cell.label}",
            )
        shard = run_sharded(world, cell.spec.n_samples, lambda a, b: cell_shard(cell, a, b, reference=reference),
                            cell_errors=(NonFiniteSampleError,), what=f"while computing cell {cell.label}")
    except DistributedError:
        raise  # a rank failure stops the sweep on every rank; nothing is stored for this cell
    except NonFiniteSampleError as e:
        return Outcome("failed", (f"{e} at NFE budget {budget} on model {cell.model.label!r} "
                                  f"(sampler {name!r}, schedule {cell.schedule.name!r})"))
    except OSError as e:  # the environment (cache directory unwritable, disk full), not the cell: stop
        raise _environment_failure(e, cell) from None
    except Exception as e:  # a bug in one solver or metric must not stop a long sweep
        return Outcome("failed", f"{name} at NFE {budget}: {type(e).__name__}: {e}")
    counted = max(shard.nfe_counted)
    notes = [cell.plan.note] if cell.plan.note else []
    if cell.optimised is not None:
        c = cell.optimised.cost
        notes.append(f"optimised schedule {cell.optimised.method}: found with {c['nfe']} denoiser calls "
                     f"({c['sample_evaluations']} sample evaluations) on {c['samples']} warm-up samples in {c['wall_s']:.3g} s")
    if len(set(shard.nfe_counted)) > 1:
        notes.append(f"batches counted different NFE: {sorted(set(shard.nfe_counted))}")
    resampling = resampling_summary([shard])
    if resampling is not None:
        notes.append(f"resampled {resampling['events']} times in {len(resampling['batches'])} batches "
                     f"(smallest ESS fraction {resampling['min_ess_fraction']:.3g}) plus a final resampling per batch")
    if cell.plan.nfe is None:  # adaptive: the budget set tolerances; the cell sits at the NFE counted
        notes.append(f"adaptive: asked {budget} NFE, counted {counted}")
    elif counted != cell.plan.nfe:
        notes.append(f"counted {counted} NFE but the solver's NFE law promises {cell.plan.nfe} (a solver bug: please report)")
    try:
        metric_rows = finish_cell(cell, [shard], hosts=hosts, confidence=cell.spec.confidence)
    except OSError as e:
        raise _environment_failure(e, cell) from None
    except Exception as e:
        return Outcome("failed", f"metrics of {name} at NFE {budget}: {type(e).__name__}: {e}")
    bad = [f"{r['metric']}/{r['key']}" for r in metric_rows if not math.isfinite(r["value"])]
    if bad:
        notes.append(f"non-finite metric values: {', '.join(bad)}")
    return Outcome("ok", "; ".join(notes), counted, shard, metric_rows)
