"""``dmn``: time steps from the noise schedule and the solver's order alone (Xue et al., "Accelerating
Diffusion Sampling with Optimized Time Steps", CVPR 2024, arXiv 2402.17376, §3.2-3.3 and the authors'
``step_optim.py``).

Mechanism, in our notation (derivation: docs/schedule_optimisers.md). With lambda = -log sigma and
y = x / sigma the probability-flow ODE is dy/dlambda = e^lambda D(x, sigma). A multistep data-prediction
solver advances y_{i+1} = y_i + sum_j w_ij D_j, where w_ij = int_{lambda_i}^{lambda_{i+1}} e^lambda l_j(lambda)
d lambda are the weights of the Lagrange interpolant l_j through its last q_i nodes. The paper models
the denoiser's error at level sigma_n as a vector of size delta_n = sigma_n^2 / sqrt(1 + sigma_n^2) (its
sigma_VP^2 / alpha_VP for data of unit scale) and minimises how much of it reaches the sample:

    J = sum_{i < 3} sqrt(sum_j (delta_j w_ij)^2)  +  sum_n | sum_{i >= 3} delta_n w_in |

(errors entering the first three steps are independent; from then on a node's error enters several
steps and its weights add). J depends on the levels and the solver's order only, so ``dmn`` never
evaluates the model (cost 0 NFE). The paper minimises J with scipy's trust-constr under
lambda_{i+1} > lambda_i; here the increments of lambda are a softmax of free logits (positive, summing to
lambda_min - lambda_max) and scipy's L-BFGS-B minimises log J from the log-SNR-uniform start.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..registry import info as solver_info
from .base import Problem, positive_int

#: Gauss-Legendre rule for the weights: the integrand is a polynomial of degree < q <= 6 times
#: e^lambda on a step of length up to ~12; 24 nodes integrate it to float64 round-off.
_GL_NODES, _GL_WEIGHTS = (torch.as_tensor(a, dtype=torch.float64) for a in np.polynomial.legendre.leggauss(24))
#: The steps whose errors the paper treats as independent (root-sum-square); later ones accumulate per node.
INDEPENDENT_STEPS = 3


def interpolation_nodes(solver: str, options: dict, order: int | None) -> int:
    """How many past denoiser values the solver interpolates: ``order`` if given, else the solver's
    ``order`` option (UniPC, iPNDM, DEIS), else its declared order."""
    if order is not None:
        return order
    meta = solver_info(solver)
    if isinstance(options.get("order"), int):
        return int(options["order"])
    return int(meta.order_for(meta.validate(options)))


def step_orders(steps: int, q: int, lower_order_final: bool) -> list[int]:
    """q_i for each step: the history fills up (q_i <= i + 1) and, with ``lower_order_final``, empties
    towards the end (q_i <= steps - i), as the solvers' own warm-up and final steps do."""
    return [max(1, min(q, i + 1, steps - i if lower_order_final else q)) for i in range(steps)]


def weights(lambdas: torch.Tensor, i: int, q: int) -> torch.Tensor:
    """w_ij, j = i, i-1, ..., i-q+1: int_{lambda_i}^{lambda_{i+1}} e^lambda l_j(lambda) d lambda (differentiable)."""
    a, b = lambdas[i], lambdas[i + 1]
    lam = 0.5 * (b - a) * _GL_NODES + 0.5 * (a + b)
    nodes = [lambdas[i - j] for j in range(q)]
    out = []
    for j, nj in enumerate(nodes):
        basis = torch.ones_like(lam)
        for k, nk in enumerate(nodes):
            if k != j:
                basis = basis * (lam - nk) / (nj - nk)
        out.append(0.5 * (b - a) * (_GL_WEIGHTS * torch.exp(lam) * basis).sum())
    return torch.stack(out)


def denoiser_error(sigma: torch.Tensor) -> torch.Tensor:
    """delta(sigma) = sigma^2 / sqrt(1 + sigma^2): the paper's data-prediction error model."""
    return sigma**2 / torch.sqrt(1 + sigma**2)


def objective(lambdas: torch.Tensor, orders: list[int]) -> torch.Tensor:
    """J of the module docstring for increasing ``lambdas`` and the steps' interpolation orders."""
    delta = denoiser_error(torch.exp(-lambdas))
    total = lambdas.new_zeros(())
    accumulated = lambdas.new_zeros(lambdas.numel())
    for i, q in enumerate(orders):
        w = weights(lambdas, i, q)
        idx = torch.arange(i, i - q, -1)
        if i < INDEPENDENT_STEPS:
            total = total + torch.sqrt(((delta[idx] * w) ** 2).sum())
        else:
            accumulated = accumulated.index_add(0, idx, delta[idx] * w)
    return total + accumulated.abs().sum()


def lambdas_from_logits(logits: torch.Tensor, lam_start: float, lam_end: float) -> torch.Tensor:
    """Increasing lambdas from lam_start to lam_end with increments softmax(logits) * (lam_end - lam_start)."""
    steps = torch.softmax(logits, 0) * (lam_end - lam_start)
    return torch.cat([logits.new_tensor([lam_start]), lam_start + torch.cumsum(steps, 0)])


def optimise(problem: Problem, order: int | None = None, iterations: int = 200) -> torch.Tensor:
    """The positive levels minimising J (no model evaluations)."""
    from scipy.optimize import minimize

    q = interpolation_nodes(problem.solver, problem.options, order)
    orders = step_orders(problem.n_levels - 1, q, bool(problem.options.get("lower_order_final", False)))
    lam0, lam1 = -math.log(problem.sigma_max), -math.log(problem.sigma_min)

    def value_and_gradient(z: np.ndarray):
        logits = torch.tensor(z, dtype=torch.float64, requires_grad=True)
        with torch.enable_grad():
            value = torch.log(objective(lambdas_from_logits(logits, lam0, lam1), orders))
            value.backward()
        return value.item(), logits.grad.numpy().copy()

    found = minimize(value_and_gradient, np.zeros(problem.n_levels - 1), jac=True, method="L-BFGS-B",
                     options={"maxiter": iterations, "ftol": 1e-15, "gtol": 1e-10})
    with torch.no_grad():
        lambdas = lambdas_from_logits(torch.as_tensor(found.x, dtype=torch.float64), lam0, lam1)
    return torch.exp(-lambdas)


DEFAULTS = {"order": None, "iterations": 200}
CHECKS = {
    "order": ((lambda v: v is None or positive_int(1, 6)[0](v)), "an integer in [1, 6] (or left out: the solver's)"),
    "iterations": positive_int(1, 10_000),
}
