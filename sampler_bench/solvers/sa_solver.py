"""SA-Solver: stochastic Adams predictor-corrector (Xue et al., 'SA-Solver: Stochastic Adams Solver for Fast
Sampling of Diffusion Models', NeurIPS 2023, arXiv 2309.05019), data prediction, in (x, sigma).

SA-Solver integrates the tau-family reverse SDE (tau = 0: probability-flow ODE, tau = 1: the reverse
SDE) with lambda = -log sigma, h = lambda_t - lambda_s, and the data prediction D interpolated by a
Lagrange polynomial in lambda through the last evaluations:

    x_t = e^{-tau^2 h} (sigma_t/sigma_s) x_s + (1 + tau^2) sum_j D_j int_{-h}^{0} e^{(1+tau^2) u} l_j(lambda_t + u) du
          + sigma_t sqrt(1 - e^{-2 tau^2 h}) z

(paper §4: the SA-Predictor eq. 14 uses D at lambda_s, lambda_{s-1}, ...; the SA-Corrector eq. 16 also
the value at lambda_t, evaluated at the predicted state, with the *same* noise z as the predictor; the
prefactor sigma_t e^{-tau^2 lambda_t} e^{(1+tau^2) lambda_t} of the paper's integrals is 1 in these units).
Every step costs one evaluation: the corrected state reuses it (NFE = N). With order 2 the update
includes the reference code's extra term (the diffusers SASolverScheduler and the authors' code add it
"similar to UniPC"): predictor + a (h^2/2 - (a h - 1 + e^{-a h})/a^2) (D_s - D_{s-1})/(lambda_s - lambda_{s-1}),
corrector + a (h/2 - (a h - 1 + e^{-a h})/(a^2 h)) (D_t - D_s), a = 1 + tau^2; at tau = 0 the order-2
predictor is UniP-2 (bh1).

tau is ``tau`` for sigma_s in [tau_sigma_min, tau_sigma_max] and 0 elsewhere (diffusers' default
``tau_func`` is 1 on the timesteps 200..800 of a 1000-step VP model). Warm start and
``lower_order_final`` follow diffusers' scheduler. The step onto sigma = 0 is the denoise x = D.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .noise import stochastic_options
from .registry import Option, SolverOptionError, register
from .updates import lincomb

SA_PAPER = (
    "Xue et al., 'SA-Solver: Stochastic Adams Solver for Fast Sampling of Diffusion Models' (arXiv 2309.05019) "
    "§4, eq. 14 (SA-Predictor) and eq. 16 (SA-Corrector); diffusers SASolverScheduler"
)


def exp_moments(a: float, h: float, k_max: int) -> list[float]:
    """I_k = int_{-h}^{0} e^{a u} u^k du for k = 0..k_max (integration by parts, exact)."""
    e = math.exp(-a * h)
    out = [-math.expm1(-a * h) / a]
    for k in range(1, k_max + 1):
        out.append(-((-h) ** k) * e / a - k / a * out[-1])
    return out


def adams_weights(lambdas: list[float], lambda_t: float, h: float, a: float) -> list[float]:
    """w_j = int_{-h}^{0} e^{a u} l_j(lambda_t + u) du for the Lagrange basis l_j through ``lambdas``."""
    nodes = [lam - lambda_t for lam in lambdas]
    moments = exp_moments(a, h, len(nodes) - 1)
    weights = []
    for j, uj in enumerate(nodes):
        others = [u for m, u in enumerate(nodes) if m != j]
        denom = math.prod(uj - u for u in others)
        coeffs = np.poly(others)[::-1] if others else np.ones(1)  # ascending powers of u
        weights.append(float(sum(c * moments[k] for k, c in enumerate(coeffs))) / denom)
    return weights


def _tau(ctx, sigma: float) -> float:
    o = ctx.options
    inside = o["tau_sigma_min"] <= sigma and (o["tau_sigma_max"] is None or sigma <= o["tau_sigma_max"])
    return o["tau"] if inside else 0.0


def _update(x, s: float, t: float, tau: float, lambdas: list[float], values: list, noise, corrector: bool,
            lambda_prev: float | None):
    """One SA-Predictor (``corrector=False``) or SA-Corrector update from sigma s to t > 0."""
    a = 1.0 + tau * tau
    lam_s, lam_t = -math.log(s), -math.log(t)
    h = lam_t - lam_s
    w = [a * c for c in adams_weights(lambdas, lam_t, h, a)]
    if len(values) == 2:  # the reference's order-2 term (see the module docstring)
        core = a * h + math.expm1(-a * h)
        extra = a * (h / 2 - core / (a * a * h)) if corrector else a * (h * h / 2 - core / (a * a)) / (lam_s - lambda_prev)
        w[0] += extra
        w[1] -= extra
    terms = [(math.exp(-tau * tau * h) * t / s, x)] + list(zip(w, values))
    out = lincomb(terms)
    if noise is not None:
        out = out + noise * (t * math.sqrt(-math.expm1(-2.0 * tau * tau * h)))
    return out


def _check(ctx, x) -> None:
    o = ctx.options
    if o["tau_sigma_max"] is not None and o["tau_sigma_max"] < o["tau_sigma_min"]:
        raise SolverOptionError(
            f"solver {ctx.name!r}: tau_sigma_max={o['tau_sigma_max']!r} is below tau_sigma_min={o['tau_sigma_min']!r}"
        )
    ctx.state.update(last_x=None, last_noise=None, done=0)


def _ode_order(o) -> int:
    """Global order at tau = 0: predictor-corrector min(p + 1, c) (p without corrector); the uncorrected
    order-1 final step of ``lower_order_final`` caps it at 2."""
    p, c = o["predictor_order"], o["corrector_order"]
    base = min(p + 1, c) if c > 0 else p
    return min(base, 2) if o["lower_order_final"] else base


@register(
    "sa_solver",
    order=lambda o: _ode_order(o) if o["tau"] == 0 else 1,
    stochastic=True,
    paper=SA_PAPER,
    description="SA-Solver: stochastic Adams predictor-corrector in lambda (data prediction) with noise tau; "
    "1 NFE per step (the corrector reuses the next evaluation). tau=0: a deterministic exponential "
    "Adams predictor-corrector.",
    options=stochastic_options(
        predictor_order=Option(3, int, "SA-Predictor order (points of the Lagrange interpolant)", low=1, high=4),
        corrector_order=Option(4, int, "SA-Corrector order including the new point; 0 = no corrector", low=0,
                               high=4),
        tau=Option(1.0, float, "noise amount: 0 = probability-flow ODE, 1 = the reverse SDE", low=0.0),
        tau_sigma_min=Option(0.0, float, "tau applies where sigma_s >= tau_sigma_min (else 0)", low=0.0),
        tau_sigma_max=Option(None, float, "tau applies where sigma_s <= tau_sigma_max; none = no upper limit",
                             low=0.0, nullable=True),
        lower_order_final=Option(True, bool, "lower the orders of the final steps as diffusers does "
                                 "(predictor <= N - i, corrector <= N - i + 1)"),
    ),
    init=_check,
)
def sa_solver(ctx, x, i):
    """Evaluate D at the predicted state, correct the previous step with it, then predict the next state.

    Xue et al. (arXiv 2309.05019) §4: the SA-Predictor and SA-Corrector in data prediction, with the
    Lagrange-interpolation coefficients of eqs. 15 and 18 (the equations the reference code names;
    scxue/SA-Solver@876f3dd ``sa_solver.py`` ``adams_bashforth_update`` / ``adams_moulton_update``), in the
    step order of huggingface/diffusers@58eb52c ``src/diffusers/schedulers/scheduling_sasolver.py``
    ``SASolverScheduler.step`` (corrector first, reusing the new evaluation).
    """
    o, st = ctx.options, ctx.state
    n, s, t = ctx.steps, ctx.sigmas[i], ctx.sigmas[i + 1]
    denoised = ctx.model(x, s)
    history = ctx.history  # D at the previous levels, newest first
    lam = [-math.log(v) for v in ctx.sigmas[: i + 1]]
    keep = max(o["predictor_order"], o["corrector_order"] - 1)
    warm = min(i - 1, keep) if i > 0 else 0  # diffusers' lower_order_nums at the previous step
    if i > 0 and o["corrector_order"] > 0 and t > 0:  # onto 0 the output D ignores the correction
        c = min(o["corrector_order"], warm + 2)
        if o["lower_order_final"]:
            c = min(c, n - (i - 1) + 1)
        s_prev = ctx.sigmas[i - 1]
        values = [denoised] + history.values[: c - 1]
        lambdas = lam[i - c + 1 : i + 1][::-1]
        x = _update(st["last_x"], s_prev, s, _tau(ctx, s_prev), lambdas, values, st["last_noise"], True, None)
    history.push(s, denoised, keep)
    if t == 0:  # the denoise onto sigma = 0 (h infinite): order 1, no noise
        return denoised
    p = min(o["predictor_order"], min(i, keep) + 1)
    if o["lower_order_final"]:
        p = min(p, n - i)
    tau = _tau(ctx, s)
    noise = ctx.noise(x, i) if tau > 0 else None
    st["last_x"], st["last_noise"] = x, noise
    values = history.values[:p]
    lambdas = lam[i - p + 1 : i + 1][::-1]
    lambda_prev = lam[i - 1] if p == 2 else None
    return _update(x, s, t, tau, lambdas, values, noise, False, lambda_prev)
