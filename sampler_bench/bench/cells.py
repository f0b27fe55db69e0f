"""Expanding a sweep into cells: every (model, schedule, sampler, NFE budget), each resolved once.

A *cell* is (model, sampler + options, schedule, NFE budget, seeds, metric set). Its id is a hash
of that definition, so a re-run finds the cells already in the store and skips them (resume), and
two runs of the same spec agree on every id. A :class:`Cell` carries everything needed to compute
and store it: the solver's registry entry, the budget plan (or why there is none), the metrics that
apply and the reference endpoints it compares against.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch

from ..solvers import budget as _budget
from ..solvers import optimised as _optimised
from ..processes.catalog import process_kind
from ..processes.kind import PROBABILITY_FLOW_ODE
from ..solvers.registry import SolverInfo, mismatch
from ..solvers.registry import info as solver_info
from .prepare import PreparedMetric, PreparedModel
from .reference_cache import ReferenceCache, ReferenceTarget
from .schedule_cache import OptimisedSchedule, ScheduleRequest, steps_for
from .spec import GridSpec, SamplerSpec, ScheduleSpec, Spec, SpecError
from .states import class_labels, initial_states

#: Bumped when the meaning of a cell changes, so old stored cells are not mistaken for new ones.
CELL_FORMAT = 1


@dataclass
class Cell:
    """One unit of work and of storage; ``cell_id`` hashes ``definition``.

    ``plan`` is the solver's grid for the budget and ``options`` its validated options; a cell that
    cannot run (the sampler does not apply to the process, or the budget is too small) has
    ``plan = None``, its requested options and ``skip_reason``. ``metrics`` are the model's metrics that
    apply to this sampler (a stochastic sampler has no ODE endpoint to compare); ``reference`` is
    the reference setting when one of them compares against the ODE's endpoints.
    """

    cell_id: str
    definition: dict
    spec: Spec
    model: PreparedModel
    sampler: SamplerSpec
    solver: SolverInfo
    schedule: ScheduleSpec
    sigma_min: float
    sigma_max: float
    nfe_budget: int
    metrics: list[PreparedMetric]
    plan: _budget.Plan | None
    options: dict
    skip_reason: str = ""
    reference: ReferenceTarget | None = None
    #: an optimised schedule's request (its plan has ``sigmas`` None until :func:`with_schedule`)
    schedule_request: ScheduleRequest | None = None
    #: the optimised schedule found for this cell (levels and cost), stored in its provenance
    optimised: OptimisedSchedule | None = None

    @property
    def label(self) -> str:
        return f"{self.model.label} · {self.sampler.name} · {self.schedule.name} · NFE {self.nfe_budget}"

    @property
    def needs_reference(self) -> bool:
        return any(m.needs_reference for m in self.metrics)

    @property
    def needs_trajectory(self) -> bool:
        return any(m.needs_trajectory for m in self.metrics)

    @property
    def declared_order(self) -> int:
        """The solver's theoretical order with this cell's options (planned, or as requested)."""
        return self.solver.order_for(self.options)


def records_trajectory(meta: SolverInfo) -> bool:
    """Whether a solver's trajectory can be recorded for the geometry metric: a deterministic step solver of
    the probability-flow ODE in sigma (a stochastic path is not the ODE's; an adaptive run has no grid; the
    models of CLD and BDM solvers are not denoisers)."""
    return not meta.stochastic and meta.step is not None and PROBABILITY_FLOW_ODE in meta.needs


def cell_id_of(definition: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(definition, sort_keys=True, default=list).encode()).hexdigest()[:16]


def schedule_for(schedule: ScheduleSpec, process: str) -> ScheduleSpec:
    """``schedule`` with the process's default parameters (``ProcessKind.schedule_defaults``, e.g. CLD's
    rho = 2 for ``karras``) filled in where the spec left them out."""
    defaults = process_kind(process).schedule_defaults.get(schedule.name)
    if not defaults:
        return schedule
    return dataclasses.replace(schedule, params={**defaults, **schedule.params})


def _plan(meta: SolverInfo, pm: PreparedModel, sampler: SamplerSpec, schedule: ScheduleSpec, sigma_min: float,
          sigma_max: float, budget: int) -> tuple[_budget.Plan | None, dict, str]:
    """(plan, validated options, "") for a cell that can run, (None, requested options, why) otherwise."""
    why = mismatch(sampler.name, pm.process)
    if why is not None:  # the same question, and the same answer, as sb.sample's
        return None, sampler.options, f"model {pm.label!r}: {why}"
    try:
        plan = _budget.plan(
            sampler.name, budget, schedule=schedule.name, sigma_min=sigma_min, sigma_max=sigma_max,
            ends_at_zero=schedule.ends_at_zero, schedule_params=schedule.params, **sampler.options,
        )
    except ValueError as e:
        return None, sampler.options, str(e)
    first = float(plan.sigmas[0])
    if abs(first - sigma_max) > 1e-9 * sigma_max:
        # The starting states (and the reference endpoints) are drawn at the cell's sigma_max; a grid
        # that starts elsewhere (a training table's top level, a published AYS table) would be fed states
        # at the wrong noise level.
        return None, sampler.options, (
            f"schedule {schedule.name!r} starts at sigma = {first!r}, not at sigma_max = {sigma_max!r} where the "
            f"starting states are drawn; set the schedule's sigma_max to {first!r}")
    return plan, meta.validate(plan.options), ""


def _optimised_plan(meta: SolverInfo, pm: PreparedModel, sampler: SamplerSpec, schedule: ScheduleSpec,
                    sigma_min: float, sigma_max: float, budget: int, spec: Spec):
    """(plan without levels, validated options, "", request) for a cell whose schedule is an optimiser,
    or (None, requested options, why, None) when the solver cannot take one at this budget."""
    why = mismatch(sampler.name, pm.process)
    if why is not None:
        return None, sampler.options, f"model {pm.label!r}: {why}", None
    try:
        steps, updates, note = steps_for(sampler.name, budget, schedule.ends_at_zero, sampler.options)
    except ValueError as e:
        return None, sampler.options, str(e), None
    options = meta.validate({**sampler.options, **updates})
    supports = _optimised.get(schedule.name).supports
    why = supports(sampler.name, options) if supports is not None else None
    if why is not None:  # e.g. ld3 on a sampler it has no differentiable transcription of
        return None, sampler.options, f"optimised schedule {schedule.name!r}: {why}", None
    request = ScheduleRequest(schedule.name, dict(schedule.params), pm.hash, sampler.name, options, budget, steps,
                              sigma_min, sigma_max, schedule.ends_at_zero, torch.device(spec.device).type,
                              spec.precision)
    plan = _budget.Plan(solver=sampler.name, budget=budget, steps=steps, nfe=meta.nfe(steps, schedule.ends_at_zero, options),
                        sigmas=None, options={**sampler.options, **updates}, note=note)
    return plan, options, "", request


def with_schedule(cell: Cell, found: OptimisedSchedule) -> Cell:
    """``cell`` with its optimised levels in its plan and ``found`` recorded."""
    return dataclasses.replace(cell, plan=dataclasses.replace(cell.plan, sigmas=found.sigmas), optimised=found)


def check_optimisers(spec: Spec, models: Sequence[PreparedModel]) -> None:
    """A SpecError naming the first optimised schedule that cannot work on a model of the spec."""
    for sch in [sch for block in spec.blocks for sch in block.schedules]:
        if not _optimised.is_optimiser(sch.name):
            continue
        for pm in models:
            why = _optimised.get(sch.name).applies(pm.model)
            if why is not None:
                raise SpecError(f"model {pm.label!r}: {why}")


def _reference(spec: Spec, pm: PreparedModel, sigma_min: float, sigma_max: float,
               ends_at_zero: bool) -> ReferenceTarget | None:
    """The reference endpoints a deterministic cell of ``pm`` compares against (None: no yardstick)."""
    if pm.reference_solver is None:
        return None
    key = ReferenceCache.key(pm.hash, spec.seed, sigma_min, sigma_max, ends_at_zero, torch.device(spec.device).type,
                             pm.reference_options, solver=pm.reference_solver)
    initial = functools.partial(initial_states, pm.model, spec.seed, sigma_max=sigma_max, device=spec.device)
    labels = None
    if getattr(pm.model, "num_classes", 0):  # the labels the cells draw for the same seeds
        labels = functools.partial(class_labels, pm.model, spec.seed, sigma_max=sigma_max, device=spec.device)
    return ReferenceTarget(pm.model, key, spec.n_samples, initial, sigma_min, sigma_max, ends_at_zero,
                           solver=pm.reference_solver, options=pm.reference_options, labels=labels)


def replicate_specs(spec: Spec) -> list[Spec]:
    """The spec of each replicate: replicate k runs on the disjoint seed range
    ``seed + k * n_samples + [0, n_samples)``; replicate 0 is the spec itself (so its cells are those
    of the same spec without replicates, and a store resumes across the two)."""
    return [spec] + [dataclasses.replace(spec, seed=spec.seed + k * spec.n_samples, replicate_index=k)
                     for k in range(1, spec.replicates)]


def expand_cells(spec: Spec, models: Sequence[PreparedModel]) -> list[Cell]:
    """Every (replicate, model, schedule, sampler, budget) of the spec, in a stable order."""
    return [c for rspec in replicate_specs(spec) for c in _expand_one(rspec, models)]


def _expand_one(spec: Spec, models: Sequence[PreparedModel]) -> list[Cell]:
    """The cells of every block (the main grid, then each [[grid]]); a cell asked for by two blocks is one cell."""
    check_optimisers(spec, models)
    cells: dict[str, Cell] = {}
    references: dict = {}  # one reference target per (model, schedule), shared by the blocks
    for block in spec.blocks:
        for cell in _expand_block(spec, block, models, references):
            cells.setdefault(cell.cell_id, cell)
    return list(cells.values())


def _expand_block(spec: Spec, block: GridSpec, models: Sequence[PreparedModel], references: dict) -> list[Cell]:
    solvers = {s.name: solver_info(s.name) for s in block.samplers}
    cells = []
    for pm in models:
        for sch in (schedule_for(s, pm.process) for s in block.schedules):
            smax = sch.sigma_max if sch.sigma_max is not None else float(pm.model.sigma_max)
            smin = sch.sigma_min if sch.sigma_min is not None else float(pm.model.sigma_min)
            smin, smax = float(smin), float(smax)
            ref_key = (pm.label, smin, smax, sch.ends_at_zero)
            for smp in block.samplers:
                meta = solvers[smp.name]
                if smp.from_all and mismatch(smp.name, pm.process) is not None:
                    continue  # all_samplers means every sampler that applies; see prepare_models' note
                metrics = [m for m in pm.metrics if not (meta.stochastic and m.needs_reference)
                           and not (m.needs_trajectory and not records_trajectory(meta))]
                needs_reference = any(m.needs_reference for m in metrics)
                if needs_reference and ref_key not in references:
                    references[ref_key] = _reference(spec, pm, smin, smax, sch.ends_at_zero)
                reference = references.get(ref_key)
                for budget in block.nfe:
                    definition = {
                        "format": CELL_FORMAT, "model": pm.label, "model_hash": pm.hash, "process": pm.process,
                        "solver": smp.name, "options": smp.options, "schedule": sch.name,
                        "schedule_params": sch.params, "sigma_min": smin, "sigma_max": smax,
                        "ends_at_zero": sch.ends_at_zero, "nfe_budget": budget, "n_samples": spec.n_samples,
                        "seed": spec.seed, "precision": spec.precision,
                        **({"replicate": spec.replicate_index} if spec.replicate_index else {}),
                        # what drives the noise changes a stochastic sampler's numbers only
                        **({"noise_generator": spec.noise_generator} if meta.stochastic else {}),
                        # noise streams and arithmetic differ between device types (not between indices)
                        "device_type": torch.device(spec.device).type,
                        "reference_options": pm.reference_options if needs_reference else None,
                        # mixed precision changes the numbers; compile and CUDA graphs do not (absent: float32/64)
                        **({"autocast": spec.execution["autocast"]} if "autocast" in spec.execution else {}),
                        "metrics": [
                            {"name": m.spec.name, "feature_extractor": m.spec.feature_extractor, "params": m.spec.params}
                            for m in metrics
                        ],
                        # an optimised schedule's algorithm version from 2 on: a changed optimiser makes new cells
                        # (absent for version 1 and fixed schedules, whose ids stay as they were)
                        **({"optimiser_version": _optimised.get(sch.name).version}
                           if _optimised.is_optimiser(sch.name) and _optimised.get(sch.name).version > 1 else {}),
                    }
                    request = None
                    if _optimised.is_optimiser(sch.name):
                        plan, options, skip_reason, request = _optimised_plan(meta, pm, smp, sch, smin, smax, budget, spec)
                    else:
                        plan, options, skip_reason = _plan(meta, pm, smp, sch, smin, smax, budget)
                    cells.append(Cell(cell_id_of(definition), definition, spec, pm, smp, meta, sch, smin, smax, budget,
                                      metrics, plan, options, skip_reason,
                                      reference if needs_reference else None, request))
    return cells
