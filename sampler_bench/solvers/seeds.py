"""SEEDS: Stochastic Explicit Exponential Derivative-free Solvers (Gonzalez et al., NeurIPS 2023,
arXiv 2305.14267), data-prediction form, in the unscaled state (x, sigma).

SEEDS integrate the eta-family reverse SDE (the noise-amount family of DPM-Solver++ SDE)

    x_t = (sigma_t/sigma_s) e^{-eta h} x_s - expm1(-(1+eta) h) D + sigma_t sqrt(1 - e^{-2 eta h}) z

(h = lambda_t - lambda_s, lambda = -log sigma; the exact solution for a frozen D, paper §3, eq. 9-10)
with Runge-Kutta stages at lambda_s + r h whose linear part and noise are exact: each stage's noise
is the Brownian increment up to that stage, and the next stage *continues* it,
z <- e^{(r_j - r_{j+1}) eta h} z + sqrt(1 - e^{2 (r_j - r_{j+1}) eta h}) z', so the step's total noise has
exactly the variance 1 - e^{-2 eta h} of the exact solution (paper Alg. 2-4, the "exponentially
weighted" noise of Prop. 4.2). Stage weights are the derivative-free exponential Runge-Kutta ones:
SEEDS-2 with phi_1 (midpoint) or phi_2 (Heun-like) final weights, SEEDS-3 with phi_2 weights
(paper Alg. 3-4; the reference implementation followed is ComfyUI's ``sample_seeds_2`` /
``sample_seeds_3``, which tests/test_sde_samplers.py re-implements independently).

eta = 0 gives DPM-Solver++(2S) / (3S) (the 'dpmsolver' form for phi_1, 'taylor' for phi_2); the step
onto sigma = 0 is the single denoise x = D (2N-1 / 3N-2 NFE on a grid ending at 0).
"""

from __future__ import annotations

import math

import torch

from .noise import stochastic_options
from .registry import Option, SolverOptionError, register
from .updates import lincomb

SEEDS_PAPER = (
    "Gonzalez, Fernandez Pinto, Bhatt, Zhou, 'SEEDS: Exponential SDE Solvers for Fast High-Quality Sampling "
    "from Diffusion Models' (arXiv 2305.14267) §3-4, Alg. 2-4"
)

_ETA = Option(1.0, float, "noise amount of the SDE: 0 = probability-flow ODE (DPM-Solver++ singlestep), "
              "1 = the reverse SDE", low=0.0)
_S_NOISE = Option(1.0, float, "multiplier on the injected noise", low=0.0)


def _stage(x, denoised_terms, s: float, sigma_r: float, h_r: float, eta: float):
    """``(sigma_r/s) e^{-eta h_r} x + sum(c D)`` with the stage's weights already in ``denoised_terms``."""
    return lincomb([(sigma_r / s * math.exp(-eta * h_r), x), *denoised_terms])


class _NoiseChain:
    """The Brownian increment of one SEEDS step, continued stage by stage (exact variances)."""

    def __init__(self, ctx, x, i, eta: float, h: float):
        self.ctx, self.x, self.i, self.eta, self.h = ctx, x, i, eta, h
        self.active = eta > 0 and ctx.options["s_noise"] > 0
        self.z = None
        self.r = 0.0
        self.sigma = ctx.sigmas[i]

    def advance(self, r: float, sigma_r: float) -> torch.Tensor | None:
        """Noise (already times sigma_r * s_noise) to add to the stage at lambda_s + r h; None if none."""
        if not self.active:
            return None
        seg = (self.r - r) * self.eta * self.h  # <= 0
        fresh = self.ctx.noise(self.x, self.i, self.sigma, sigma_r) * math.sqrt(-math.expm1(2.0 * seg))
        self.z = fresh if self.z is None else self.z * math.exp(seg) + fresh
        self.r, self.sigma = r, sigma_r
        return self.z * (sigma_r * self.ctx.options["s_noise"])


def _check_seeds_3(ctx, x) -> None:
    r1, r2 = ctx.options["r_1"], ctx.options["r_2"]
    if not r1 < r2:
        raise SolverOptionError(f"solver {ctx.name!r}: r_1={r1!r} must be smaller than r_2={r2!r}")


@register(
    "seeds_2",
    order=lambda o: 2 if o["eta"] == 0 else 1,
    nfe_per_step=2,
    stochastic=True,
    paper=SEEDS_PAPER,
    description="SEEDS-2: two-stage exponential SDE solver with exact Brownian increments; eta=0 is "
    "DPM-Solver++(2S). 2 NFE per step; the step onto sigma=0 is one denoise (2N-1 NFE).",
    options=stochastic_options(
        eta=_ETA,
        s_noise=_S_NOISE,
        r=Option(0.5, float, "position of the second stage in lambda, as a fraction of the step", low=0.0,
                 high=1.0, open_low=True),
        solver_type=Option("phi_1", str, "final weights: 'phi_1' (midpoint form) or 'phi_2' (Heun-like form)",
                           choices=("phi_1", "phi_2")),
    ),
)
def seeds_2(ctx, x, i):
    """SEEDS-2 step (Alg. 3): stage at lambda_s + r h, then the final combination; exact noise per segment.

    Gonzalez et al. (arXiv 2305.14267) Alg. 3; reference comfyanonymous/ComfyUI@02159d81
    ``comfy/k_diffusion/sampling.py`` ``sample_seeds_2``.
    """
    s, t = ctx.sigmas[i], ctx.sigmas[i + 1]
    denoised = ctx.model(x, s)
    if t == 0:
        return denoised
    o = ctx.options
    eta, r = o["eta"], o["r"]
    h = math.log(s / t)
    noise = _NoiseChain(ctx, x, i, eta, h)
    s1 = s * math.exp(-r * h)
    x_1 = _stage(x, [(-math.expm1(-r * h * (1 + eta)), denoised)], s, s1, r * h, eta)
    z = noise.advance(r, s1)
    if z is not None:
        x_1 = x_1 + z
    denoised_1 = ctx.model(x_1, s1)
    he = h * (1 + eta)
    phi_1 = math.expm1(-he)
    if o["solver_type"] == "phi_1":  # D_d = D + (D_1 - D)/(2r)
        w1 = 1.0 / (2.0 * r)
        terms = [(-phi_1 * (1 - w1), denoised), (-phi_1 * w1, denoised_1)]
    else:  # b2 = h phi_2(-he)/r with h phi_2(-a) = (expm1(-a) + a)/(-a)
        b2 = (phi_1 + he) / (-he) / r
        terms = [(-(phi_1 - b2), denoised), (-b2, denoised_1)]
    out = _stage(x, terms, s, t, h, eta)
    z = noise.advance(1.0, t)
    return out if z is None else out + z


@register(
    "seeds_3",
    order=lambda o: 3 if o["eta"] == 0 else 1,
    nfe_per_step=3,
    stochastic=True,
    paper=SEEDS_PAPER,
    description="SEEDS-3: three-stage exponential SDE solver with exact Brownian increments; eta=0 is "
    "DPM-Solver++(3S). 3 NFE per step; the step onto sigma=0 is one denoise (3N-2 NFE).",
    options=stochastic_options(
        eta=_ETA,
        s_noise=_S_NOISE,
        r_1=Option(1.0 / 3.0, float, "position of the second stage in lambda (fraction of the step)", low=0.0,
                   high=1.0, open_low=True, open_high=True),
        r_2=Option(2.0 / 3.0, float, "position of the third stage in lambda (fraction of the step), > r_1",
                   low=0.0, high=1.0, open_low=True, open_high=True),
    ),
    init=_check_seeds_3,
)
def seeds_3(ctx, x, i):
    """SEEDS-3 step (Alg. 4): stages at lambda_s + r_1 h and lambda_s + r_2 h with phi_2 weights.

    Gonzalez et al. (arXiv 2305.14267) Alg. 4; reference comfyanonymous/ComfyUI@02159d81
    ``comfy/k_diffusion/sampling.py`` ``sample_seeds_3``.
    """
    s, t = ctx.sigmas[i], ctx.sigmas[i + 1]
    denoised = ctx.model(x, s)
    if t == 0:
        return denoised
    o = ctx.options
    eta, r1, r2 = o["eta"], o["r_1"], o["r_2"]
    h = math.log(s / t)
    noise = _NoiseChain(ctx, x, i, eta, h)

    def h_phi_1(a):  # h phi_1(-a) = expm1(-a)
        return math.expm1(-a)

    def h_phi_2(a):  # h phi_2(-a) = (expm1(-a) + a)/(-a)
        return (math.expm1(-a) + a) / (-a)

    s1, s2 = s * math.exp(-r1 * h), s * math.exp(-r2 * h)
    x_1 = _stage(x, [(-h_phi_1(r1 * h * (1 + eta)), denoised)], s, s1, r1 * h, eta)
    z = noise.advance(r1, s1)
    if z is not None:
        x_1 = x_1 + z
    denoised_1 = ctx.model(x_1, s1)
    a32 = r2 / r1 * h_phi_2(r2 * h * (1 + eta))
    a31 = h_phi_1(r2 * h * (1 + eta)) - a32
    x_2 = _stage(x, [(-a31, denoised), (-a32, denoised_1)], s, s2, r2 * h, eta)
    z = noise.advance(r2, s2)
    if z is not None:
        x_2 = x_2 + z
    denoised_2 = ctx.model(x_2, s2)
    b3 = h_phi_2(h * (1 + eta)) / r2
    b1 = h_phi_1(h * (1 + eta)) - b3
    out = _stage(x, [(-b1, denoised), (-b3, denoised_2)], s, t, h, eta)
    z = noise.advance(1.0, t)
    return out if z is None else out + z
