"""``gits``: steps chosen by dynamic programming on teacher trajectories (Chen et al., "On the Trajectory
Regularity of ODE-based Diffusion Sampling", ICML 2024, arXiv 2405.11326, §4 "Geometry-Inspired Time
Scheduling", Algorithm 1).

Mechanism: warm-up samples are drawn from the prior (optimisation seeds) and a teacher solver integrates
them on a fine grid sigma_0 = sigma_max > ... > sigma_M = sigma_min (EDM's polynomial schedule, rho = 7),
recording the state x_i and the denoiser's output D_i at every fine level (``teacher_substeps`` > 1 runs
the teacher on a finer grid that holds the fine levels: a more accurate teacher at more cost). The cost of a coarse step
from fine level i to fine level j > i is the mean over warm-up samples of the L2 distance between one
Euler step from the teacher's state, x_i + (sigma_j - sigma_i) (x_i - D_i) / sigma_i, and the teacher's
state x_j (the paper's "local truncation error" of a step; it leans on the trajectories' regularity).
Dynamic programming then picks the K steps from level 0 to level M with the least cost
C(i_0, i_1) + coeff C(i_1, i_2) + coeff^2 C(i_2, i_3) + ... (``coeff`` > 1 weighs later steps more, as
the paper's DP does). The chosen fine levels are the schedule, whatever sampler later runs on it.
Cost: the teacher's M denoiser calls on ``n_warmup`` samples.
"""

from __future__ import annotations

import numpy as np
import torch

from .. import schedules
from ..driver import run_solver
from ..registry import info as solver_info
from .base import OptimiserError, Problem, positive_int, positive_number


class _Recorder:
    """Wraps the counted model; keeps the first (state, output) at each noise level the teacher visits."""

    def __init__(self, model):
        self.model = model
        self.denoiser = getattr(model, "denoiser", model)  # what run_solver asks about the process
        self.levels: list[float] = []
        self.states: list[torch.Tensor] = []
        self.outputs: list[torch.Tensor] = []

    def __call__(self, x, sigma):
        out = self.model(x, sigma)
        s = float(sigma[0]) if isinstance(sigma, torch.Tensor) and sigma.ndim else float(sigma)
        if not self.levels or s < self.levels[-1]:
            self.levels.append(s)
            self.states.append(x.detach().clone())
            self.outputs.append(out.detach().clone())
        return out


def fine_grid(problem: Problem, fine_steps: int) -> torch.Tensor:
    """The M + 1 positive fine levels from sigma_max to sigma_min (EDM's rho = 7)."""
    return schedules.karras(fine_steps, problem.sigma_min, problem.sigma_max, append_zero=False)


def teacher_trajectory(problem: Problem, fine: torch.Tensor, teacher: str, n_warmup: int, seed: int,
                       substeps: int = 1):
    """(states [M+1, B, ...], denoiser outputs [M, B, ...]) of the teacher at the fine levels; with
    ``substeps`` > 1 the teacher runs on the EDM grid ``substeps`` times finer, which holds every fine level."""
    meta = solver_info(teacher)
    if meta.stochastic or meta.nfe_per_step != 1 or meta.plan_grid is not None or meta.adaptive:
        raise OptimiserError(f"gits: the teacher must be a deterministic solver with one denoiser call per step "
                             f"that takes its grid as given (e.g. 'ipndm', 'dpmpp_2m'), got {teacher!r}")
    x = problem.warmup_states(seed, n_warmup)
    rec = _Recorder(problem.counted)
    steps = fine.numel() - 1
    grid = fine if substeps == 1 else schedules.karras(steps * substeps, problem.sigma_min, problem.sigma_max,
                                                       append_zero=False)
    end = run_solver(teacher, rec, x, grid, options={})
    if len(rec.levels) != grid.numel() - 1:
        raise OptimiserError(f"gits: the teacher {teacher!r} evaluated {len(rec.levels)} distinct levels on a "
                             f"grid of {grid.numel() - 1} steps; it must evaluate the state at every level once")
    keep = range(0, grid.numel() - 1, substeps)  # the fine levels (equal to round-off: same ramp points)
    return torch.stack([rec.states[k] for k in keep] + [end]), torch.stack([rec.outputs[k] for k in keep])


def cost_matrix(fine: torch.Tensor, states: torch.Tensor, outputs: torch.Tensor) -> np.ndarray:
    """C[i, j] = mean_b || x_i + (sigma_j - sigma_i) d_i - x_j ||_2 for j > i (inf elsewhere)."""
    m = fine.numel()
    cost = np.full((m, m), np.inf)
    flat = states.reshape(m, states.shape[1], -1).to(torch.float64)
    den = outputs.reshape(m - 1, outputs.shape[1], -1).to(torch.float64)
    for i in range(m - 1):
        d = (flat[i] - den[i]) / float(fine[i])
        for j in range(i + 1, m):
            euler = flat[i] + (float(fine[j]) - float(fine[i])) * d
            cost[i, j] = float(torch.linalg.vector_norm(euler - flat[j], dim=1).mean())
    return cost


def dynamic_programming(cost: np.ndarray, steps: int, coeff: float = 1.0) -> list[int]:
    """Indices 0 = i_0 < ... < i_steps = M minimising sum_t coeff^t C[i_t, i_{t+1}].

    V[j, k] is the least cost of reaching M from j in k steps: V[j, 1] = C[j, M] and
    V[j, k] = min_{i > j} C[j, i] + coeff V[i, k - 1] (Algorithm 1 of the paper)."""
    m = cost.shape[0]
    last = m - 1
    if not 1 <= steps <= last:
        raise OptimiserError(f"gits: {steps} steps cannot be chosen among {last} fine steps; raise fine_steps")
    value = np.full((m, steps + 1), np.inf)
    choice = np.full((m, steps + 1), -1, dtype=int)
    value[:, 1] = cost[:, last]
    value[last, 1] = np.inf
    choice[:, 1] = last
    for k in range(2, steps + 1):
        for j in range(last):
            candidates = cost[j, j + 1:last] + coeff * value[j + 1:last, k - 1]
            if candidates.size:
                best = int(np.argmin(candidates))
                value[j, k], choice[j, k] = candidates[best], j + 1 + best
    path, j = [0], 0
    for k in range(steps, 0, -1):
        j = int(choice[j, k])
        path.append(j)
    return path


def optimise(problem: Problem, fine_steps: int = 60, n_warmup: int = 256, seed: int = 0, coeff: float = 1.15,
             teacher: str = "ipndm", teacher_substeps: int = 1) -> torch.Tensor:
    fine = fine_grid(problem, fine_steps)
    states, outputs = teacher_trajectory(problem, fine, teacher, n_warmup, seed, teacher_substeps)
    path = dynamic_programming(cost_matrix(fine, states, outputs), problem.n_levels - 1, coeff)
    return fine[path]


DEFAULTS = {"fine_steps": 60, "n_warmup": 256, "seed": 0, "coeff": 1.15, "teacher": "ipndm", "teacher_substeps": 1}
CHECKS = {
    "fine_steps": positive_int(2, 2000),
    "n_warmup": positive_int(1, 1 << 20),
    "seed": positive_int(0, 1 << 62),
    "coeff": positive_number(0.0, 10.0),
    "teacher": ((lambda v: isinstance(v, str)), "a solver name"),
    "teacher_substeps": positive_int(1, 1000),
}
