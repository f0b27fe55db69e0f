"""Turn an NFE budget into the step count, grid and options for a solver.

Each repository counts NFE its own way (reference/solvers.md §11 pitfall 1); here the budget is the
number of denoiser evaluations, the solver's declared NFE law says what a grid costs, and the
sweep later *counts* the evaluations and compares.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from . import schedules
from .registry import SolverOptionError, info as solver_info


@dataclass(frozen=True)
class Plan:
    """A budget resolved for one solver: ``sigmas`` to pass to ``sample`` with ``options``.

    ``nfe`` is what the solver's NFE law promises for this grid; it equals ``budget`` unless
    the solver cannot hit the budget exactly, in which case ``note`` says why.
    """

    solver: str
    budget: int
    steps: int
    nfe: int
    sigmas: torch.Tensor
    options: dict[str, Any] = field(default_factory=dict)
    note: str = ""


def steps_for_budget(name: str, budget: int, ends_at_zero: bool = True, **options) -> tuple[int, dict, str]:
    """(steps, option updates, note) for the largest grid whose NFE does not exceed ``budget``."""
    meta = solver_info(name)
    opts = meta.validate(options)
    if meta.adaptive:
        raise SolverOptionError(f"solver {name!r} is adaptive: its NFE is set by its tolerances, not by a budget")
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise SolverOptionError(f"solver {name!r}: the NFE budget must be an integer >= 1, got {budget!r}")
    if meta.steps_for_nfe is not None:
        steps, updates = meta.steps_for_nfe(budget, ends_at_zero, opts)
        opts = meta.validate({**options, **updates})
        cost = meta.nfe(steps, ends_at_zero, opts)
        note = "" if cost == budget else f"{name} spends {cost} of the {budget} NFE asked for"
        return steps, updates, note
    need = meta.min_steps(opts)
    least = meta.nfe(need, ends_at_zero, opts)
    if least > budget:
        raise SolverOptionError(
            f"solver {name!r}: a budget of {budget} NFE is too small; with these options it needs at least "
            f"{least} NFE ({need} steps)"
        )
    best = need
    steps = need
    # NFE laws are non-decreasing in the step count; walk up until the budget is exceeded.
    while True:
        cost = meta.nfe(steps + 1, ends_at_zero, opts)
        if cost > budget:
            break
        steps += 1
        best = steps
    cost = meta.nfe(best, ends_at_zero, opts)
    note = "" if cost == budget else (
        f"{name} costs {meta.nfe_per_step} NFE per step, so {budget} NFE cannot be met exactly; using {best} steps = {cost} NFE"
    )
    return best, {}, note


def plan(
    name: str,
    budget: int,
    *,
    schedule: str = "karras",
    sigma_min: float = 0.002,
    sigma_max: float = 80.0,
    ends_at_zero: bool = True,
    schedule_params: dict | None = None,
    **options,
) -> Plan:
    """Resolve an NFE budget for solver ``name`` into a :class:`Plan`.

    Example: EDM's Heun with 18 Karras levels plus the final 0 costs 35 NFE::

        plan("heun", 35).steps == 18
    """
    steps, updates, note = steps_for_budget(name, budget, ends_at_zero, **options)
    meta = solver_info(name)

    def build(n: int):
        return schedules.build(schedule, n, sigma_min, sigma_max, append_zero=ends_at_zero, **(schedule_params or {}))

    if meta.plan_grid is None:
        sigmas = build(steps)
    else:  # the solver's reference places its grid itself (DPM-Solver singlestep on its time grids)
        sigmas, more = meta.plan_grid(schedule, build, steps, ends_at_zero, meta.validate({**options, **updates}),
                                      options)
        updates = {**updates, **more}
        if "beta_d" in (schedule_params or {}) or "beta_min" in (schedule_params or {}):
            updates.update({k: v for k, v in schedule_params.items() if k in ("beta_d", "beta_min")
                            and k in meta.options and k not in options})
    opts = meta.validate({**options, **updates})
    return Plan(
        solver=name, budget=budget, steps=steps, nfe=meta.nfe(steps, ends_at_zero, opts),
        sigmas=sigmas, options={**options, **updates}, note=note,
    )
