"""``ays_opt``: Align Your Steps on the model itself (Sabour, Fidler, Kreis, "Align Your Steps: Optimizing
Sampling Schedules in Diffusion Models", ICML 2024, arXiv 2404.14507, §3 and Algorithm 1). The published
tables are a separate fixed schedule (``ays``, issue #15).

Mechanism, in our notation (docs/schedule_optimisers.md): AYS bounds the KL divergence between the
reverse SDE and its Euler-Maruyama discretisation on the levels sigma_0 > ... > sigma_N by a sum over
the intervals (their KL upper bound, KLUB, for the EDM SDE where sigma(t) = t):

    KLUB(s_next, s) = E_{x0, eps, eps'} int_{s_next}^{s} t^-3 || D(x_t, t) - D(x_s, s) ||^2 dt,
    x_t = x0 + t eps,   x_s = x_t + sqrt(s^2 - t^2) eps'   (the forward process run on from t to s)

with x0 drawn from the data (a trained model's training split, an analytic model's law: a model without
data cannot be optimised this way).
The integral is estimated by importance sampling t from the density proportional to t^-3 on the
interval (so its weight is the interval's integral of t^-3) at ``n_t`` stratified quantiles, with the
same x0, eps, eps' and quantiles for every candidate level (common random numbers, so comparisons
between candidates are not noise). Optimisation as the paper's Algorithm 1: start from EDM's schedule
(rho = 7), then, ``iterations`` times, move each interior level to the best of ``candidates`` points
spaced evenly in log sigma between its neighbours, the one minimising the KLUB of its two intervals.
The schedule depends on the model and the step count only, not on the sampler, so cells of different
samplers with the same step count share one cached result.
Cost: 2 denoiser calls (each on ``n_data * n_t`` states) per interval evaluated.
"""

from __future__ import annotations

import math

import torch

from ...rng import generators_for, randn_like
from .. import schedules
from .base import OptimiserError, Problem, optimisation_seeds, positive_int


def training_data(model, n: int, seed: int) -> torch.Tensor:
    """n data samples x0 drawn with the first optimisation seed: rows of the training split of a trained
    model's dataset (never the held-out split that reference statistics use), or fresh draws of an
    analytic model's data law; an OptimiserError when the model has neither."""
    gen = torch.Generator().manual_seed(optimisation_seeds(seed, 1)[0])
    dataset = getattr(model, "dataset", None)
    if dataset is not None and hasattr(dataset, "sample_rows"):
        shape = tuple(getattr(model, "shape", ()))
        return dataset.sample_rows(n, gen, "train").to(torch.float64).reshape(n, *shape)
    sample_data = getattr(model, "sample_data", None)
    data = sample_data(n, generator=gen) if sample_data is not None else None
    if data is None:
        raise OptimiserError(has_data(model) or "ays_opt: the model gave no data samples")
    return data


def has_data(model) -> str | None:
    """None when ``model`` can give data samples x0, else why not."""
    dataset = getattr(model, "dataset", None)
    if dataset is not None and hasattr(dataset, "sample_rows"):
        return None
    sample_data = getattr(model, "sample_data", None)
    if sample_data is not None and sample_data(1, generator=torch.Generator().manual_seed(0)) is not None:
        return None
    return ("optimised schedule 'ays_opt' needs data samples x0 (a dataset or model.sample_data), and this model has "
            "none attached: use another optimiser (gits, dmn, endpoint_descent)")


class KLUB:
    """The Monte Carlo KL upper bound of intervals of one problem, with fixed random numbers."""

    def __init__(self, problem: Problem, n_data: int, n_t: int, seed: int):
        x0 = training_data(problem.model, n_data, seed).to(device=problem.device, dtype=problem.dtype)
        problem.cost.samples += n_data
        self.x0 = x0.repeat_interleave(n_t, 0)  # [n_data * n_t, ...]: every x0 at every quantile
        # noise from generators past the data's (its own seeds, still in the optimisation namespace)
        gens = generators_for(optimisation_seeds(seed + n_data, self.x0.shape[0]), "cpu")
        self.eps = randn_like(torch.empty_like(self.x0, device="cpu"), gens).to(self.x0)
        gens = generators_for(optimisation_seeds(seed + n_data + self.x0.shape[0], self.x0.shape[0]), "cpu")
        self.eps2 = randn_like(torch.empty_like(self.x0, device="cpu"), gens).to(self.x0)
        last = optimisation_seeds(seed + n_data + self.x0.shape[0], self.x0.shape[0])[-1]
        problem.cost.seeds = [optimisation_seeds(seed, 1)[0], last]
        self.u = ((torch.arange(n_t, dtype=torch.float64) + 0.5) / n_t).repeat(n_data)  # stratified quantiles
        self.model = problem.counted
        self.memo: dict[tuple[float, float], float] = {}

    def __call__(self, low: float, high: float) -> float:
        """KLUB of the interval [low, high] (one Euler-Maruyama step from high down to low)."""
        key = (low, high)
        if key not in self.memo:
            a2, b2 = low**-2, high**-2  # the density t^-3 on [low, high]: its CDF in t^-2
            t = (a2 - self.u * (a2 - b2)) ** -0.5
            weight = 0.5 * (a2 - b2)
            shape = (-1,) + (1,) * (self.x0.ndim - 1)
            tt = t.to(self.x0).reshape(shape)
            xt = self.x0 + tt * self.eps
            xs = xt + torch.sqrt(high**2 - tt**2) * self.eps2
            d_t = self.model(xt, t.to(self.x0))
            d_s = self.model(xs, torch.full_like(t, high).to(self.x0))
            gap = ((d_t - d_s) ** 2).reshape(d_t.shape[0], -1).sum(1).mean()
            self.memo[key] = float(weight * gap)
        return self.memo[key]


def optimise(problem: Problem, n_data: int = 64, n_t: int = 4, seed: int = 0, iterations: int = 3,
             candidates: int = 8) -> torch.Tensor:
    klub = KLUB(problem, n_data, n_t, seed)
    levels = schedules.karras(problem.n_levels - 1, problem.sigma_min, problem.sigma_max, append_zero=False).tolist()
    for _ in range(iterations):
        moved = False
        for i in range(1, len(levels) - 1):
            hi, lo = math.log(levels[i - 1]), math.log(levels[i + 1])
            options = [math.exp(hi + (lo - hi) * k / (candidates + 1)) for k in range(1, candidates + 1)] + [levels[i]]
            best = min(options, key=lambda s: klub(levels[i + 1], s) + klub(s, levels[i - 1]))
            moved |= best != levels[i]
            levels[i] = best
        if not moved:  # the paper's early stop: a full pass changed nothing
            break
    if not all(math.isfinite(klub(levels[i + 1], levels[i])) for i in range(len(levels) - 1)):
        raise OptimiserError("ays_opt: the KL upper bound is not finite on the chosen levels")
    return torch.tensor(levels, dtype=torch.float64)


DEFAULTS = {"n_data": 64, "n_t": 4, "seed": 0, "iterations": 3, "candidates": 8}
CHECKS = {
    "n_data": positive_int(1, 1 << 20),
    "n_t": positive_int(1, 1000),
    "seed": positive_int(0, 1 << 61),
    "iterations": positive_int(1, 100),
    "candidates": positive_int(1, 1000),
}
