"""ER-SDE-Solvers 1, 2 and 3 (Cui et al., 'Elucidating the Solution Space of Extended Reverse-Time
SDE for Diffusion Models', arXiv 2309.06169; reference code QinpengCui/ER-SDE-Solver).

The extended reverse SDE with noise-scale function phi has the exact step (docs/solvers.md, "ER-SDE-Solver")

    x_{i+1} = r x_i + phi(s') int_{s'}^{s} phi'/phi^2 D dsigma + sqrt(s'^2 - s^2 r^2) z,   r = phi(s')/phi(s),

and ER-SDE-Solver-k replaces D by its Taylor polynomial in sigma of degree k-1 (backward differences
of past D's), integrated exactly:

    k = 1:  r x + (1 - r) D_i + sqrt(s'^2 - s^2 r^2) z
    k = 2:  ... + (s' - s + phi(s') S) d1,               S  = int_{s'}^{s} dsigma / phi
    k = 3:  ... + ((s' - s)^2 / 2 + phi(s') S') d2,      S' = int_{s'}^{s} (sigma - s) / phi dsigma

The noise is exact, so phi must satisfy sigma phi'/phi >= 1 (else s'^2 - s^2 r^2 < 0); this is checked
on the actual grid before sampling (docs/findings.md, "Pitfalls"). S and S' depend only on the grid: they are
precomputed once per run in float64, by default with Gauss-Legendre quadrature in log sigma
(accurate to round-off); ``integral='riemann'`` uses the reference code's 100-point left Riemann
sum instead, for parity with the paper's numbers (its O(h^2/100) error in S caps the order of
ER-SDE-2/3 at 1 for very fine grids). The step onto sigma = 0 returns D_i with no noise (r = 0).

Orders. The paper claims order k for ER-SDE-Solver-k; ER-SDE-3 as published is globally second
order, and that is what it declares here: (a) its D' estimate d1 = (D_i - D_{i-1})/(s_i - s_{i-1})
is only first-order accurate, an O(h^3) local error (``derivative='corrected'`` adds the Newton term
and makes the step exact for D quadratic in sigma, 10-50x smaller errors at 16-64 NFE); (b) the
first-order warm-up step alone leaves an O(h^2) global error. Both are measured in tests/test_er_sde.py
and tests/test_stochastic.py (exact weak errors on a Gaussian).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

from .noise import stochastic_options
from .registry import Option, SolverOptionError, register


# The noise-scale functions of the reference code's ``customized_func`` (func_type 1..7; type 3 with
# its default eta = 0). Vectorised over numpy float64 arrays.
NOISE_SCALES = {
    1: ("sigma (probability-flow ODE)", lambda s: s),
    2: ("sigma^2 (reverse-time SDE, DDPM)", lambda s: s**2),
    3: ("sigma (exp(-1/sigma) + 10)", lambda s: s * (np.exp(-1.0 / s) + 10.0)),
    4: ("sigma^1.5", lambda s: s**1.5),
    5: ("sigma^2.5", lambda s: s**2.5),
    6: ("sigma^0.9 log10(1 + 100 sigma^1.5)", lambda s: s**0.9 * np.log10(1.0 + 100.0 * s**1.5)),
    7: ("sigma (exp(sigma^0.3) + 10)", lambda s: s * (np.exp(s**0.3) + 10.0)),
}
_GAUSS_NODES = 32  # Gauss-Legendre nodes per interval, in u = log sigma where the integrands are smooth
# A noise variance below this fraction of sigma_{i+1}^2 is round-off (phi = sigma gives exactly 0).
# The reference code instead zeroes |var| < 1e-6 in absolute terms, which also removes real noise
# at small sigma (e.g. every step below sigma ~ 0.01 with type 7 on fine grids).
_ROUNDOFF = 64 * np.finfo(np.float64).eps


@lru_cache(maxsize=None)
def _gauss_legendre(n: int):
    return np.polynomial.legendre.leggauss(n)


def step_integrals(phi, s: float, s_next: float, rule: str = "gauss_legendre") -> tuple[float, float]:
    """``(S, S')`` = (int 1/phi, int (sigma - s)/phi) over [s_next, s], 0 < s_next < s, in float64."""
    if rule == "riemann":
        # The reference code: 100 left points sigma_k = s' + (k/100)(s - s'), weight (s - s')/100.
        nodes = s_next + np.arange(100, dtype=np.float64) / 100.0 * (s - s_next)
        w = (s - s_next) / 100.0
        inv = 1.0 / phi(nodes)
        return float(np.sum(inv * w)), float(np.sum((nodes - s) * inv * w))
    t, w = _gauss_legendre(_GAUSS_NODES)
    lo, hi = math.log(s_next), math.log(s)
    u = 0.5 * (hi - lo) * t + 0.5 * (hi + lo)
    sig = np.exp(u)
    jac = 0.5 * (hi - lo) * sig  # d sigma = sigma du
    inv = 1.0 / phi(sig)
    return float(np.sum(w * inv * jac)), float(np.sum(w * (sig - s) * inv * jac))


def _plan(ctx, x) -> None:
    """Per-step coefficients of the grid, and the sigma phi'/phi >= 1 check (before any evaluation).

    Computed once per (grid, options) and shared by every batch (``ctx.cached``)."""
    ctx.state["coeffs"] = ctx.cached("er_sde_plan", lambda: _coefficients(ctx))


def _coefficients(ctx) -> list[dict | None]:
    kind = int(ctx.options["noise_scale"])
    label, phi = NOISE_SCALES[kind]
    steps = []
    for i in range(ctx.steps):
        s, s_next = ctx.sigmas[i], ctx.sigmas[i + 1]
        if s_next == 0:
            steps.append(None)  # final denoise: r = phi(0)/phi(s) = 0, no noise
            continue
        p, p_next = float(phi(np.float64(s))), float(phi(np.float64(s_next)))
        r = p_next / p
        var = s_next**2 - (s * r) ** 2
        # phi = sigma gives var = 0 up to a few ulps: that is zero noise (not a sqrt(round-off) std).
        if abs(var) <= _ROUNDOFF * s_next**2:
            var = 0.0
        if var < 0:
            raise SolverOptionError(
                f"solver {ctx.name!r}: noise_scale={kind} (phi = {label}) violates the ER-SDE condition "
                f"sigma phi'(sigma)/phi(sigma) >= 1 on this grid between sigma={s:.6g} and sigma={s_next:.6g} "
                f"(step {i + 1}): the noise variance would be {var:.3g} < 0. Lower sigma_max or use another "
                f"noise_scale (types 1-5 and 7 hold for every sigma; type 6 fails above sigma ~ 1000)"
            )
        S, S_prime = step_integrals(phi, s, s_next, ctx.options["integral"])
        delta = s_next - s
        steps.append({
            "r": r,
            "std": math.sqrt(var),
            "c1": delta + p_next * S,
            "c2": 0.5 * delta**2 + p_next * S_prime,
        })
    return steps


def _step(ctx, x, i, order: int):
    s = ctx.sigmas[i]
    denoised = ctx.model(x, s)
    coef = ctx.state["coeffs"][i]
    past = ctx.history
    old = past[0] if len(past) > 0 else None
    # the previous step's first divided difference, recomputed from the same values in the same order
    old_d1 = (past[0] - past[1]) / (past.sigma(0) - past.sigma(1)) if len(past) > 1 and order >= 3 else None
    if coef is None:
        x = denoised
    else:
        r = coef["r"]
        x = torch.lerp(denoised.to(x.dtype), x, r)  # r x + (1 - r) D, as euler computes it
        if order >= 2 and old is not None:
            d1 = (denoised - old) / (s - ctx.sigmas[i - 1])
            if order >= 3 and old_d1 is not None:
                d2 = 2.0 * (d1 - old_d1) / (s - ctx.sigmas[i - 2])
                slope = d1
                if ctx.options["derivative"] == "corrected":
                    # Newton: D'(s) = f[s, s_-1] + f[s, s_-1, s_-2] (s - s_-1), second-order accurate.
                    slope = d1 + (0.5 * (s - ctx.sigmas[i - 1])) * d2
                x = x + coef["c1"] * slope + coef["c2"] * d2
            else:
                x = x + coef["c1"] * d1
        if coef["std"] > 0:
            x = x + ctx.noise(x, i) * coef["std"]
    past.push(s, denoised, keep=2)
    return x


_DERIVATIVE = Option(
    "reference", str,
    "estimate of D'(sigma_i) in ER-SDE-3: 'reference' = (D_i - D_{i-1})/(sigma_i - sigma_{i-1}) as in the "
    "paper's code (first-order accurate); 'corrected' adds the Newton term d2 (sigma_i - sigma_{i-1})/2, "
    "so the step is exact for D quadratic in sigma",
    choices=("reference", "corrected"),
)


def _options(order: int):
    extra = {"derivative": _DERIVATIVE} if order == 3 else {}
    return stochastic_options(
        **extra,
        noise_scale=Option(
            7, int,
            "noise-scale function phi (reference code func_type): "
            + "; ".join(f"{k}: {v[0]}" for k, v in NOISE_SCALES.items()),
            choices=tuple(NOISE_SCALES),
        ),
        integral=Option(
            "gauss_legendre", str,
            "how S and S' are integrated: 'gauss_legendre' (32 nodes in log sigma, round-off accurate; default) "
            "or 'riemann' (the reference code's 100-point left sum)",
            choices=("gauss_legendre", "riemann"),
        ),
    )


def _register(order: int):
    def step(ctx, x, i):
        return _step(ctx, x, i, order)

    # The reference functions (VE form; the VP ones are the same update in x/alpha): order 1, 2, 3.
    ref = {1: "ve_1_order", 2: "ve_2_order_taylor", 3: "ve_3_order_taylor"}[order]
    step.__doc__ = (
        f"ER-SDE-Solver-{order}: Taylor order {order - 1} in sigma for D, exact noise (see module docstring).\n\n"
        "Cui et al. (arXiv 2309.06169): the exact solution of the extended reverse SDE, its Taylor expansion of\n"
        f"order {order - 1} in sigma (noise-scale functions: App. A.8, as the reference code cites it);\n"
        f"reference QinpengCui/ER-SDE-Solver@25ca6c2 ``er_sde_solver.py`` ``{ref}``.")
    step.__name__ = step.__qualname__ = f"er_sde_{order}"
    register(
        f"er_sde_{order}",
        order=min(order, 2),
        stochastic=True,
        paper="Cui et al., 'Elucidating the Solution Space of Extended Reverse-Time SDE for Diffusion Models' "
        "(arXiv 2309.06169)",
        description=f"ER-SDE-Solver-{order}: exact-noise exponential integrator of the extended reverse SDE, "
        f"{'' if order == 1 else 'multistep, '}1 NFE per step; noise_scale=1 is the deterministic ODE version.",
        options=_options(order),
        init=_plan,
    )(step)
    return step


er_sde_1 = _register(1)
er_sde_2 = _register(2)
er_sde_3 = _register(3)
