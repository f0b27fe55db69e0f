"""Turn an NFE budget into the step count, grid and options for a solver.

Each repository counts NFE its own way (docs/findings.md, "Counting NFE differently"); here the budget is the
number of denoiser evaluations, the solver's declared NFE law says what a grid costs, and the
sweep later *counts* the evaluations and compares.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from . import schedules
from .registry import SolverOptionError, info as solver_info


from ..options import MAX_NFE_BUDGET  # noqa: E402,F401  (defined with the other input bounds)


@dataclass(frozen=True)
class Plan:
    """A budget resolved for one solver: ``sigmas`` to pass to ``sample`` with ``options``.

    ``nfe`` is what the solver's NFE law promises for this grid; it equals ``budget`` unless
    the solver cannot hit the budget exactly, in which case ``note`` says why. An adaptive solver's
    plan has ``nfe`` None: its budget only sets tolerances, and the NFE is counted.
    """

    solver: str
    budget: int
    steps: int
    nfe: int | None
    sigmas: torch.Tensor
    options: dict[str, Any] = field(default_factory=dict)
    note: str = ""


def steps_for_budget(name: str, budget: int, ends_at_zero: bool = True, **options) -> tuple[int, dict, str]:
    """(steps, option updates, note) for the largest grid whose NFE does not exceed ``budget``."""
    meta = solver_info(name)
    opts = meta.validate(options)
    if meta.adaptive and meta.tolerance_for_nfe is None:
        raise SolverOptionError(f"solver {name!r} is adaptive: its NFE is set by its tolerances, not by a budget")
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise SolverOptionError(f"solver {name!r}: the NFE budget must be an integer >= 1, got {budget!r}")
    if budget > MAX_NFE_BUDGET:
        raise SolverOptionError(f"solver {name!r}: an NFE budget of {budget} is above the supported maximum of "
                                f"{MAX_NFE_BUDGET} (sampler_bench.solvers.budget.MAX_NFE_BUDGET)")
    if meta.adaptive:  # NFE is an output: the budget picks tolerances; the grid is just its two ends
        updates = meta.tolerance_for_nfe(budget, opts)
        return (2 if ends_at_zero else 1), updates, (
            f"{name} is adaptive: the budget of {budget} NFE sets its tolerances "
            + ", ".join(f"{k}={v:.3g}" for k, v in updates.items()) + "; the NFE it spends is counted")
    if meta.steps_for_nfe is not None:
        steps, updates = meta.steps_for_nfe(budget, ends_at_zero, opts)
        opts = meta.validate({**options, **updates})
        if steps < meta.min_steps(opts):  # e.g. output='denoised' needs one step more than the solver alone
            raise SolverOptionError(
                f"solver {name!r}: a budget of {budget} NFE is too small for these options; it pays for {steps} "
                f"steps and they need at least {meta.min_steps(opts)}")
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
    best = largest_steps_within(lambda n: meta.nfe(n, ends_at_zero, opts), need, budget)
    cost = meta.nfe(best, ends_at_zero, opts)
    # the cost of one more step under these options (yukawa_smc's order changes it; nfe_per_step is the default's)
    per_step = meta.nfe(best + 1, ends_at_zero, opts) - cost
    note = "" if cost == budget else (
        f"{name} costs {per_step} NFE per step, so {budget} NFE cannot be met exactly; using {best} steps = {cost} NFE"
    )
    return best, {}, note


def largest_steps_within(nfe, least: int, budget: int) -> int:
    """The largest step count n >= ``least`` with ``nfe(n) <= budget``, given ``nfe(least) <= budget``.

    NFE laws are non-decreasing in the step count, so a doubling search brackets the answer and a
    bisection finds it: O(log budget) evaluations of the law, not one per step (a budget of 1e9 used
    to walk 1e9 steps). A law that never exceeds the budget (a step that costs nothing) is a bug in
    the solver's declaration and is refused rather than searched for ever.
    """
    lo, hi = least, max(2 * least, 1)
    while nfe(hi) <= budget:  # invariant: nfe(lo) <= budget
        lo, hi = hi, 2 * hi
        if hi > 4 * (budget + 1) + least:
            raise SolverOptionError(f"the NFE law stays within {budget} NFE beyond {lo} steps: every step must "
                                    "cost at least one denoiser evaluation")
    while hi - lo > 1:  # invariant: nfe(lo) <= budget < nfe(hi)
        mid = (lo + hi) // 2
        if nfe(mid) <= budget:
            lo = mid
        else:
            hi = mid
    return lo


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
        solver=name, budget=budget, steps=steps, nfe=None if meta.adaptive else meta.nfe(steps, ends_at_zero, opts),
        sigmas=sigmas, options={**options, **updates}, note=note,
    )
