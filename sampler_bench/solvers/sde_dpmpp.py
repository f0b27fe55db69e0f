"""SDE variants of DPM-Solver++: k-diffusion's dpmpp_sde, DPM-Solver++(2M) SDE and (3M) SDE.

All three discretise the reverse-SDE family d x = (1 + eta) eps d sigma + sqrt(2 sigma eta) dw
(docs/notation.md, "Reverse SDEs"; k-diffusion's ``eta`` = kappa) with exponential-integrator steps in
lambda = -log sigma; eta = 0 skips the noise branch and gives the deterministic solver
(docs/solvers.md, "SDE versions"). Formulas follow k-diffusion's ``sampling.py`` (Crowson) exactly.

Declared weak order for eta > 0: 1. No convergence theorem exists for these SDE variants;
with the exact denoiser of a Gaussian, 2M/3M SDE measure weak order 2 and dpmpp_sde 1
(tests/test_stochastic.py), so 1 is the bound that holds for all three.
"""

from __future__ import annotations

import math

from .ancestral import ancestral_split
from .noise import stochastic_options
from .registry import Option, register

_ETA = Option(1.0, float, "SDE noise amount kappa: 0 = probability-flow ODE, 1 = reverse-time SDE", low=0.0)
_S_NOISE = Option(1.0, float, "multiplier on the injected noise (k-diffusion's s_noise)", low=0.0)
_DPMPP_PAPER = "Lu et al., 'DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic Models' (arXiv 2211.01095)"


@register(
    "dpmpp_sde",
    order=lambda o: 2 if o["eta"] == 0 else 1,
    nfe_per_step=2,
    stochastic=True,
    paper=_DPMPP_PAPER + "; k-diffusion sample_dpmpp_sde (Crowson)",
    description="k-diffusion's stochastic DPM-Solver++: two ancestral stages per step (r, then 1). "
    "eta=0: DPM-Solver++(2S) with r. The step onto sigma=0 is one Euler step (2N-1 NFE).",
    options=stochastic_options(
        eta=_ETA,
        s_noise=_S_NOISE,
        r=Option(0.5, float, "position of the intermediate point as a fraction of h in lambda", low=0.0, open_low=True, high=1.0),
    ),
)
def dpmpp_sde(ctx, x, i):
    """Stage 1: ancestral exponential step to sigma_s = sigma_i e^{-r h}; stage 2: to sigma_{i+1} with
    D_d = (1 - 1/(2r)) D_i + 1/(2r) D(x_s, sigma_s). The stage-2 noise covers the whole interval
    (sigma_i, sigma_{i+1}), so with a Brownian source it is correlated with stage 1's, as in k-diffusion.

    eta = 0 is DPM-Solver++(2S) with stage point r (Lu et al., arXiv 2211.01095, Alg. 1); eta > 0 takes each
    stage as an ancestral step of the reverse SDE (Song et al., arXiv 2011.13456, eq. 6). Reference:
    crowsonkb/k-diffusion@4601bf0 ``k_diffusion/sampling.py`` ``sample_dpmpp_sde``.
    """
    s, s_next = ctx.sigmas[i], ctx.sigmas[i + 1]
    eta, s_noise, r = ctx.options["eta"], ctx.options["s_noise"], ctx.options["r"]
    denoised = ctx.model(x, s)
    if s_next == 0:
        return denoised
    h = math.log(s / s_next)
    sigma_mid = math.exp(math.log(s) - r * h)
    down, up = ancestral_split(s, sigma_mid, eta)
    x_mid = (down / s) * x + (1.0 - down / s) * denoised
    if up > 0:
        x_mid = x_mid + ctx.noise(x, i, s, sigma_mid) * (s_noise * up)
    denoised_mid = ctx.model(x_mid, sigma_mid)
    fac = 1.0 / (2.0 * r)
    denoised_d = (1.0 - fac) * denoised + fac * denoised_mid
    down, up = ancestral_split(s, s_next, eta)
    x = (down / s) * x + (1.0 - down / s) * denoised_d
    if up > 0:
        x = x + ctx.noise(x, i, s, s_next) * (s_noise * up)
    return x


def _sde_noise(ctx, x, i, s_next: float, eta_h: float):
    """The exact noise of the eta-SDE over one step: sigma_next sqrt(1 - e^{-2 eta h}) s_noise z."""
    return ctx.noise(x, i) * (s_next * math.sqrt(-math.expm1(-2.0 * eta_h)) * ctx.options["s_noise"])


@register(
    "dpmpp_2m_sde",
    order=lambda o: 2 if o["eta"] == 0 else 1,
    stochastic=True,
    paper=_DPMPP_PAPER + "; k-diffusion sample_dpmpp_2m_sde (Crowson)",
    description="DPM-Solver++(2M) SDE (k-diffusion): multistep, 1 NFE per step. eta=0: dpmpp_2m "
    "('midpoint' = variant 'dpmsolver', 'heun' = variant 'taylor').",
    options=stochastic_options(
        eta=_ETA,
        s_noise=_S_NOISE,
        solver_type=Option("midpoint", str, "second-order correction: 'midpoint' or 'heun' (exact for D linear in lambda)",
                           choices=("midpoint", "heun")),
    ),
)
def dpmpp_2m_sde(ctx, x, i):
    """x_{i+1} = (s'/s) e^{-eta h} x + (1 - e^{-H}) D_i + c(H) (D_i - D_{i-1})/r + noise, H = (1+eta) h.

    c = (1 - e^{-H})/2 ('midpoint') or 1 - (1 - e^{-H})/H ('heun'); r = h_{i-1}/h; first step
    first order; the step onto sigma = 0 returns D_i.

    eta = 0 is DPM-Solver++(2M) (Lu et al., arXiv 2211.01095, Alg. 2); eta > 0 integrates the linear part
    and the noise of the reverse SDE (Song et al., arXiv 2011.13456, eq. 6) exactly. Reference:
    crowsonkb/k-diffusion@4601bf0 ``k_diffusion/sampling.py`` ``sample_dpmpp_2m_sde``.
    """
    s, s_next = ctx.sigmas[i], ctx.sigmas[i + 1]
    eta = ctx.options["eta"]
    denoised = ctx.model(x, s)
    old = ctx.history[0] if ctx.history else None
    h_last = math.log(ctx.history.sigma(0) / s) if ctx.history else None  # the previous step's h
    if s_next == 0:
        x = denoised
    else:
        h = math.log(s / s_next)
        eta_h = eta * h
        H = h + eta_h
        one_minus = -math.expm1(-H)
        x = (s_next / s * math.exp(-eta_h)) * x + one_minus * denoised
        if old is not None:
            c = 1.0 - one_minus / H if ctx.options["solver_type"] == "heun" else 0.5 * one_minus
            x = x + (c * h / h_last) * (denoised - old)
        if eta > 0:
            x = x + _sde_noise(ctx, x, i, s_next, eta_h)
    ctx.history.push(s, denoised, keep=1)
    return x


@register(
    "dpmpp_3m_sde",
    # eta = 0: k-diffusion's coefficients are DPMS's reference 3M ones, globally second order
    # (see dpmpp.dpmpp_3m_update); kept as they are for parity with k-diffusion.
    order=lambda o: 2 if o["eta"] == 0 else 1,
    stochastic=True,
    paper=_DPMPP_PAPER + "; k-diffusion sample_dpmpp_3m_sde (Crowson)",
    description="DPM-Solver++(3M) SDE (k-diffusion): multistep with exact eta-SDE noise, 1 NFE per step; "
    "warm start orders 1, 2 (taylor form). eta=0: dpmpp_3m(variant='taylor').",
    options=stochastic_options(eta=_ETA, s_noise=_S_NOISE),
)
def dpmpp_3m_sde(ctx, x, i):
    """x_{i+1} = (s'/s) e^{-eta h} x + (1 - e^{-H}) D_i + phi2(H) d1 - phi3(H) d2 + noise, H = (1+eta) h,
    with k-diffusion's backward differences d1, d2 in units of h (docs/solvers.md, "SDE versions").

    eta = 0 is DPM-Solver++(3M) (Lu et al., arXiv 2211.01095, §4; the third-order multistep of the
    reference code) in its Taylor form; the noise is the reverse SDE's (Song et al., arXiv 2011.13456,
    eq. 6) exact increment. Reference: crowsonkb/k-diffusion@4601bf0 ``k_diffusion/sampling.py``
    ``sample_dpmpp_3m_sde``.
    """
    s, s_next = ctx.sigmas[i], ctx.sigmas[i + 1]
    eta = ctx.options["eta"]
    denoised = ctx.model(x, s)
    past = ctx.history  # D at the two previous levels and the steps between them (k-diffusion's h_1, h_2)
    d_1, d_2 = (past[0] if len(past) > 0 else None), (past[1] if len(past) > 1 else None)
    h_1 = math.log(past.sigma(0) / s) if len(past) > 0 else None
    h_2 = math.log(past.sigma(1) / past.sigma(0)) if len(past) > 1 else None
    if s_next == 0:
        x = denoised
    else:
        h = math.log(s / s_next)
        eta_h = eta * h
        H = h + eta_h
        x = (s_next / s * math.exp(-eta_h)) * x - math.expm1(-H) * denoised
        phi_2 = math.expm1(-H) / H + 1.0
        if h_2 is not None:
            r0, r1 = h_1 / h, h_2 / h
            d1_0 = (denoised - d_1) / r0
            d1_1 = (d_1 - d_2) / r1
            d1 = d1_0 + (d1_0 - d1_1) * (r0 / (r0 + r1))
            d2 = (d1_0 - d1_1) / (r0 + r1)
            phi_3 = phi_2 / H - 0.5
            x = x + phi_2 * d1 - phi_3 * d2
        elif h_1 is not None:
            x = x + (phi_2 * h / h_1) * (denoised - d_1)
        if eta > 0:
            x = x + _sde_noise(ctx, x, i, s_next, eta_h)
    past.push(s, denoised, keep=2)
    return x
