"""Restart sampling (Xu, Deng, Ziming, Tian, Jaakkola, 'Restart Sampling for Improving Generative Processes',
NeurIPS 2023, arXiv 2306.14878), in the unscaled state (x, sigma).

The main pass is EDM's Heun on the given grid (Karras et al. Alg. 1). At each restart interval
[t_min, t_max] the main pass, on reaching the grid level nearest to t_min, repeats K times
(paper §4, Algorithm 1, eq. 6):

    restart forward:  x <- x + s_noise * sqrt(t_max^2 - t_min^2) * z        (exact forward kernel)
    restart backward: Heun from t_max down to t_min on a Karras (rho = 7) grid of ``restart_steps`` levels

t_min is snapped to the nearest main-grid level, as the reference implementation does
(Newbeeer/diffusion_restart_sampling @ 8cbcb07, ``benchmarks/generate_restart.py restart_sampler``,
re-implemented independently in tests/test_sde_samplers.py). Every evaluation is counted: a restart
interval costs 2 K (restart_steps - 1) NFE on top of Heun's 2N - 1 (grid ending at 0) or 2N.

Defaults are the paper's CIFAR-10 (EDM, VP) configuration, Table 3: one interval [0.14, 0.30],
K = 2, 3 restart levels. ``restart_iters = [0]`` is plain ``heun``.
"""

from __future__ import annotations

import math

import torch

from .noise import stochastic_options
from .registry import Option, SolverOptionError, register

RESTART_PAPER = (
    "Xu et al., 'Restart Sampling for Improving Generative Processes' (arXiv 2306.14878) §4, Alg. 1, eq. 6"
)


def restart_grid(t_min: float, t_max: float, levels: int, rho: float = 7.0) -> list[float]:
    """The restart backward grid: ``levels`` Karras levels from t_max down to t_min (reference ``get_steps``)."""
    lo, hi = t_min ** (1 / rho), t_max ** (1 / rho)
    return [(hi + k / (levels - 1) * (lo - hi)) ** rho for k in range(levels)]


def _intervals(opts) -> list[tuple[int, int, float, float]]:
    keys = ("restart_steps", "restart_iters", "restart_t_min", "restart_t_max")
    lists = [opts[k] for k in keys]
    return list(zip(*lists))


def _check_lengths(name: str, opts) -> None:
    lengths = {k: len(opts[k]) for k in ("restart_steps", "restart_iters", "restart_t_min", "restart_t_max")}
    if len(set(lengths.values())) != 1:
        raise SolverOptionError(
            f"solver {name!r}: restart_steps, restart_iters, restart_t_min and restart_t_max describe one "
            f"interval per entry and must have the same length; got {lengths}"
        )
    for _, _, lo, hi in _intervals(opts):
        if not lo < hi:
            raise SolverOptionError(f"solver {name!r}: restart interval [{lo!r}, {hi!r}] needs t_min < t_max")


def _restart_cost(opts) -> int:
    _check_lengths("restart", opts)
    return sum(2 * k * (m - 1) for m, k, _, _ in _intervals(opts))


def _nfe(steps: int, ends_at_zero: bool, opts) -> int:
    return 2 * steps - (1 if ends_at_zero else 0) + _restart_cost(opts)


def _steps_for_nfe(budget: int, ends_at_zero: bool, opts) -> tuple[int, dict]:
    """A budget -> (main Heun steps, option updates).

    The restart intervals keep their levels; while the budget cannot pay for Heun's smallest grid
    (2 steps) plus every restart, the interval with the most iterations gives one up (ties: the last
    listed), down to plain Heun. The rest of the budget goes to the main pass.
    """
    heun_min = 2 * 2 - (1 if ends_at_zero else 0)
    if budget < heun_min:
        raise SolverOptionError(
            f"solver 'restart': a budget of {budget} NFE is too small; it needs at least {heun_min} NFE "
            f"(2 Heun steps)"
        )
    iters = list(opts["restart_iters"])
    steps_list = list(opts["restart_steps"])

    def cost() -> int:
        return sum(2 * k * (m - 1) for m, k in zip(steps_list, iters))

    while heun_min + cost() > budget:
        j = max(range(len(iters)), key=lambda q: (iters[q], q))
        iters[j] -= 1
    steps = (budget - cost() + (1 if ends_at_zero else 0)) // 2
    updates = {} if iters == list(opts["restart_iters"]) else {"restart_iters": iters}
    return steps, updates


def _plan_restarts(ctx, x) -> None:
    """Map each interval to the main-grid index it restarts from; reject what the NFE law cannot count."""
    _check_lengths(ctx.name, ctx.options)
    at = {}
    grid = ctx.sigmas
    for m, k, lo, hi in _intervals(ctx.options):
        idx = min(range(len(grid)), key=lambda j: abs(grid[j] - lo))  # first nearest, like torch.argmin
        if idx == 0 or grid[idx] == 0.0:
            raise SolverOptionError(
                f"solver {ctx.name!r}: restart_t_min={lo!r} is nearest to the grid level {grid[idx]:.4g}; it must "
                f"snap to an interior level (between sigma_1 = {grid[1]:.4g} and the last positive level)"
            )
        if not hi > grid[idx]:
            raise SolverOptionError(
                f"solver {ctx.name!r}: restart_t_max={hi!r} must exceed the grid level {grid[idx]:.4g} that "
                f"restart_t_min={lo!r} snaps to"
            )
        if idx in at:
            raise SolverOptionError(
                f"solver {ctx.name!r}: two restart intervals snap to the same grid level {grid[idx]:.4g}"
            )
        at[idx] = (m, k, hi)
    ctx.state["restarts"] = at


def _heun(ctx, x, s: float, t: float):
    """EDM Heun from s to t > 0 (the main pass's step; the same arithmetic as ``heun``)."""
    d = (x - ctx.model(x, s)) / s
    x_euler = x + (t - s) * d
    if t == 0:
        return x_euler
    d_next = (x_euler - ctx.model(x_euler, t)) / t
    return x + (t - s) * 0.5 * (d + d_next)


@register(
    "restart",
    order=2,
    nfe_per_step=2,
    stochastic=True,
    paper=RESTART_PAPER,
    description="Restart sampling: EDM Heun, plus K restarts per interval [t_min, t_max] (exact forward noise, "
    "Heun back on a Karras sub-grid). NFE = Heun's + 2K(restart_steps-1) per interval. restart_iters=[0]: heun.",
    options=stochastic_options(
        restart_steps=Option((3,), "int_list", "levels of each restart backward grid (t_max ... t_min)", low=2),
        restart_iters=Option((2,), "int_list", "restarts K of each interval (0 = none)", low=0),
        restart_t_min=Option((0.14,), "float_list", "lower end of each interval; snapped to the nearest grid level",
                             low=0.0, open_low=True),
        restart_t_max=Option((0.30,), "float_list", "upper end of each interval (the noise level restarted to)",
                             low=0.0, open_low=True),
        s_noise=Option(1.0, float, "multiplier on the restart noise (the paper uses 1.003 on ImageNet-64)", low=0.0),
    ),
    nfe=_nfe,
    min_steps=lambda opts: 2,
    steps_for_nfe=_steps_for_nfe,
    init=_plan_restarts,
    # Weak order 2 when the main grid and every restart grid are refined together (Heun on both
    # passes, the forward noise is exact); with the restart grids fixed the restart error does not vanish.
)
def restart(ctx, x, i):
    """Heun step i of the main pass; after it, the restarts of the interval snapped to sigma_{i+1}.

    Xu et al. (arXiv 2306.14878) §4, Alg. 1: the main pass is EDM's Heun (Karras et al., arXiv 2206.00364,
    Alg. 1); each restart adds the exact forward noise from t_min to t_max (eq. 6 as the module docstring
    reads it) and integrates back with Heun. Reference (a file of that repository, not of this one):
    Newbeeer/diffusion_restart_sampling@8cbcb07 ``benchmarks/generate_restart.py`` ``restart_sampler``.
    """
    s, t = ctx.sigmas[i], ctx.sigmas[i + 1]
    x = _heun(ctx, x, s, t)
    planned = ctx.state["restarts"].get(i + 1)
    if planned is None:
        return x
    m, k, t_max = planned
    sub = restart_grid(t, t_max, m)
    jump = math.sqrt(sub[0] ** 2 - sub[-1] ** 2) * ctx.options["s_noise"]
    for _ in range(k):
        if jump > 0:
            x = x + ctx.noise(x, i, sub[-1], sub[0]) * jump
        for a, b in zip(sub[:-1], sub[1:]):
            x = _heun(ctx, x, a, b)
    return x
