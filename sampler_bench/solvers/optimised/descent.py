"""``endpoint_descent``: our design (docs/schedule_optimisers.md) -- the levels that minimise the sampler's
*own* endpoint error against a teacher on warm-up samples, by coordinate search in log sigma.

Why: the published optimisers minimise a proxy -- a bound from the solver order alone (``dmn``), the
error of Euler steps whatever the sampler (``gits``), a KL bound (AYS) -- so none of them sees how a
given multistep sampler's history and warm-up interact with the model. Here the objective is the
quantity the benchmark reports, measured on samples the evaluation never uses:

    E(levels) = mean_b || sampler(x_b; levels) - teacher(x_b) ||_2

with x_b the warm-up starting states (optimisation seeds) and teacher(x_b) the teacher solver's endpoint
on a fine EDM grid (``teacher_steps``, rho = 7). Search: start from the best of the fixed schedules
:data:`STARTS` (karras, log_snr_uniform, kl_optimal, polyexponential, vp_time_uniform and vp_time_quadratic
with their default parameters) on E; then, ``sweeps`` times, move each interior
level in log sigma by fractions (+-1/2, +-1/4 of the gap to its neighbour, halved each sweep) and keep a
move when E falls. E never rises, so on the warm-up samples the result is at least as good as every
fixed schedule it started from; whether that carries over to the evaluation seeds is what a sweep
measures. Cost: the teacher's calls plus ``steps`` calls per evaluation of E, on ``n_warmup`` samples.
"""

from __future__ import annotations

import math

import torch

from .. import schedules
from ..driver import run_solver
from .base import OptimiserError, Problem, positive_int

#: The fixed schedules the search starts from (the best on the warm-up samples wins): every continuous
#: schedule of the registry without parameters of a training table.
STARTS = ("karras", "log_snr_uniform", "kl_optimal", "polyexponential", "vp_time_uniform", "vp_time_quadratic")
#: Fractions of the gap to the neighbour tried in the first sweep.
MOVES = (-0.5, -0.25, 0.25, 0.5)


def endpoint_error(problem: Problem, x: torch.Tensor, target: torch.Tensor, grid: torch.Tensor) -> float:
    out = run_solver(problem.solver, problem.counted, x, grid, options=problem.options)
    return float(torch.linalg.vector_norm((out - target).reshape(x.shape[0], -1), dim=1).mean())


def optimise(problem: Problem, n_warmup: int = 128, seed: int = 0, sweeps: int = 4, teacher: str = "ipndm",
             teacher_steps: int = 200) -> torch.Tensor:
    x = problem.warmup_states(seed, n_warmup)
    fine = schedules.karras(teacher_steps, problem.sigma_min, problem.sigma_max, append_zero=problem.ends_at_zero)
    try:
        target = run_solver(teacher, problem.counted, x, fine, options={})
    except ValueError as e:
        raise OptimiserError(f"endpoint_descent: teacher {teacher!r}: {e}") from None

    def error(levels: torch.Tensor) -> float:
        return endpoint_error(problem, x, target, problem.finish(levels))

    n = problem.steps
    starts = [schedules.build(name, n, problem.sigma_min, problem.sigma_max, append_zero=problem.ends_at_zero)
              for name in STARTS]
    scored = [(error(g[: problem.n_levels]), g[: problem.n_levels]) for g in starts]
    best, levels = min(scored, key=lambda t: t[0])
    logs = torch.log(levels.clone())
    scale = 1.0
    for _ in range(sweeps):
        for k in range(1, logs.numel() - 1):
            for move in MOVES:
                gap = (logs[k - 1] - logs[k]) if move > 0 else (logs[k] - logs[k + 1])
                trial = logs.clone()
                trial[k] = logs[k] + move * scale * gap  # up (towards sigma_{k-1}) or down, inside its neighbours
                value = error(torch.exp(trial))
                if value < best:
                    best, logs = value, trial
        scale /= 2
    if not math.isfinite(best):
        raise OptimiserError("endpoint_descent: every schedule tried gave a non-finite endpoint error")
    return torch.exp(logs)


DEFAULTS = {"n_warmup": 128, "seed": 0, "sweeps": 4, "teacher": "ipndm", "teacher_steps": 200}
CHECKS = {
    "n_warmup": positive_int(1, 1 << 20),
    "seed": positive_int(0, 1 << 62),
    "sweeps": positive_int(0, 100),
    "teacher": ((lambda v: isinstance(v, str)), "a solver name"),
    "teacher_steps": positive_int(2, 100_000),
}
