"""Ancestral samplers: DDIM(eta) = k-diffusion's euler_ancestral, and DPM-Solver++(2S) ancestral.

An ancestral step splits sigma_i -> sigma_{i+1} into a deterministic step down to ``sigma_down``
and fresh noise of std ``sigma_up``, with sigma_down^2 + sigma_up^2 = sigma_{i+1}^2 (k-diffusion's
``get_ancestral_step``). Formulas: docs/solvers.md; pitfalls: docs/findings.md (SDE noise, DDIM's eta).

``ddim`` and ``euler_ancestral`` are one step function under two names. Both default to eta = 1
(DDPM's ancestral sampler, k-diffusion's default): this registry entry is the *stochastic* DDIM
family; deterministic DDIM (eta = 0) is ``euler``, which ``ddim(eta=0)`` reproduces bit for bit.
Declared weak orders: 1 for both samplers (dpmpp_2s_ancestral measures 2 on a Gaussian, no theorem).
"""

from __future__ import annotations

import math

import torch

from .noise import stochastic_options
from .updates import first_order_update
from .registry import Option, register


def ancestral_split(sigma: float, sigma_next: float, eta: float) -> tuple[float, float]:
    """``(sigma_down, sigma_up)`` of an ancestral step from ``sigma`` to ``sigma_next`` (float64).

    sigma_up = min(sigma_next, eta * sigma_next * sqrt(1 - sigma_next^2/sigma^2)); eta = 1 is the
    DDPM posterior (DDIM's eta = 1), eta = 0 no noise (sigma_down = sigma_next exactly).
    """
    if eta == 0 or sigma_next == 0:
        return sigma_next, 0.0
    sigma_up = min(sigma_next, eta * math.sqrt(sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2))
    return math.sqrt(sigma_next**2 - sigma_up**2), sigma_up


def _eta(high: float | None, default: float = 1.0) -> Option:
    return Option(default, float, "noise amount: 0 = deterministic, 1 = DDPM's ancestral variance", low=0.0, high=high)


_S_NOISE = Option(1.0, float, "multiplier on the injected noise (k-diffusion's s_noise)", low=0.0)
_ANCESTRAL_PAPERS = (
    "Song, Meng, Ermon, 'Denoising Diffusion Implicit Models' (arXiv 2010.02502) eq. 12/16; "
    "Ho, Jain, Abbeel, 'Denoising Diffusion Probabilistic Models' (arXiv 2006.11239); "
    "k-diffusion sample_euler_ancestral (Crowson)"
)


def euler_ancestral(ctx, x, i):
    """DDIM(eta) in the unscaled state: Euler down to sigma_down, then sigma_up * s_noise * z.

    DDIM's generative step (Song et al., arXiv 2010.02502, eq. 12) with its noise sigma_t(eta) of eq. 16;
    eta = 1 is DDPM's posterior variance beta-tilde (Ho et al., arXiv 2006.11239, eq. 7).

    In (x, sigma) DDIM's posterior std c1/alpha_next equals sigma_up of ``ancestral_split`` (docs/solvers.md,
    euler_ancestral; docs/findings.md, "Pitfalls"), so DDIM(eta) is exactly k-diffusion's euler_ancestral(eta). The
    deterministic part is written like ``euler`` so that eta = 0 reproduces it bit for bit; the
    step onto sigma = 0 returns D and adds no noise.
    """
    s, s_next = ctx.sigmas[i], ctx.sigmas[i + 1]
    denoised = ctx.model(x, s)
    sigma_down, sigma_up = ancestral_split(s, s_next, ctx.options["eta"])
    x = first_order_update(x, denoised, s, sigma_down)
    if sigma_up > 0:  # eta = 0 or the final step: no noise drawn at all (k-diffusion's eta = 0 rule)
        x = x + ctx.noise(x, i) * (ctx.options["s_noise"] * sigma_up)
    return x


_ANCESTRAL_OPTIONS = stochastic_options(eta=_eta(None), s_noise=_S_NOISE)

register(
    "euler_ancestral",
    order=lambda o: 2 if o["eta"] == 0 else 1,
    stochastic=True,
    paper=_ANCESTRAL_PAPERS,
    description="Ancestral Euler (k-diffusion's name); identical to ddim. eta=1: DDPM ancestral sampling; eta=0: euler.",
    options=_ANCESTRAL_OPTIONS,
)(euler_ancestral)


def ddim(ctx, x, i):
    """DDIM with eta (Song et al. 2020, arXiv 2010.02502, eq. 12 with sigma_t(eta) of eq. 16): the same step
    as ``euler_ancestral``."""
    return euler_ancestral(ctx, x, i)


register(
    "ddim",
    order=1,
    stochastic=True,
    paper=_ANCESTRAL_PAPERS,
    description="DDIM(eta) in (x, sigma) = euler_ancestral(eta). Default eta=1 (DDPM posterior); "
    "deterministic DDIM (eta=0) is `euler`.",
    options=_ANCESTRAL_OPTIONS,
)(ddim)


@register(
    "dpmpp_2s_ancestral",
    order=1,
    nfe_per_step=2,
    stochastic=True,
    paper="Lu et al., 'DPM-Solver++' (arXiv 2211.01095) 2S with r=1/2, made ancestral as in "
    "k-diffusion sample_dpmpp_2s_ancestral (Crowson)",
    description="DPM-Solver++(2S) down to sigma_down, then ancestral noise. eta=0: dpmpp_2s. "
    "2 NFE per step; the step onto sigma=0 is one Euler step (2N-1 NFE).",
    # eta <= 1 keeps sigma_down > 0 whenever sigma_next > 0, so every step but the last costs
    # exactly 2 NFE (k-diffusion falls back to a 1-NFE Euler step when sigma_down = 0).
    options=stochastic_options(eta=_eta(1.0), s_noise=_S_NOISE),
)
def dpmpp_2s_ancestral(ctx, x, i):
    """Midpoint in lambda = -log sigma between sigma_i and sigma_down (data prediction), then noise.

    The deterministic part is DPM-Solver++(2S) (Lu et al., arXiv 2211.01095, Alg. 1 with r = 1/2) from
    sigma_i to sigma_down; the split and the noise are k-diffusion's ``sample_dpmpp_2s_ancestral``.
    """
    s, s_next = ctx.sigmas[i], ctx.sigmas[i + 1]
    denoised = ctx.model(x, s)
    sigma_down, sigma_up = ancestral_split(s, s_next, ctx.options["eta"])
    if sigma_down == 0:  # only the step onto sigma = 0: Euler, i.e. the denoised value
        return denoised
    h = math.log(s / sigma_down)
    sigma_mid = math.exp(math.log(s) - 0.5 * h)
    x_mid = (sigma_mid / s) * x - math.expm1(-0.5 * h) * denoised
    denoised_mid = ctx.model(x_mid, sigma_mid)
    x = (sigma_down / s) * x - math.expm1(-h) * denoised_mid
    if sigma_up > 0:
        x = x + ctx.noise(x, i) * (ctx.options["s_noise"] * sigma_up)
    return x


@register(
    "dpm_2_ancestral",
    order=lambda o: 2 if o["eta"] == 0 else 1,
    nfe_per_step=2,
    stochastic=True,
    paper="k-diffusion sample_dpm_2_ancestral (Crowson): the midpoint in log sigma of "
    "Lu et al., 'DPM-Solver' (arXiv 2206.00927) Alg. 1 (DPM-Solver-2, r1=1/2) down to sigma_down, then ancestral noise",
    description="DPM-Solver-2 (k-diffusion's midpoint in log sigma) down to sigma_down, then ancestral noise. "
    "eta=0: dpm_2. 2 NFE per step; the step onto sigma=0 is one Euler step (2N-1 NFE).",
    # eta <= 1 keeps sigma_down > 0 whenever sigma_next > 0, so only the final step onto 0 is a
    # 1-NFE Euler step and the NFE law is the 2-stage default (k-diffusion's fallback is sigma_down == 0).
    options=stochastic_options(eta=_eta(1.0), s_noise=_S_NOISE),
)
def dpm_2_ancestral(ctx, x, i):
    """Midpoint in log sigma from sigma_i to sigma_down, then sigma_up * s_noise * z (k-diffusion).

    x2 = x + (sigma_mid - s) d(x), x' = x + (sigma_down - s) d(x2, sigma_mid), sigma_mid the
    geometric mean of s and sigma_down; written like ``dpm_2`` so that eta = 0 reproduces it bit for bit.
    The midpoint is DPM-Solver-2's (Lu et al., arXiv 2206.00927, Alg. 1, r1 = 1/2) stage in log sigma,
    taken as Euler substeps on dx/dsigma, as k-diffusion's ``sample_dpm_2``.
    """
    s, s_next = ctx.sigmas[i], ctx.sigmas[i + 1]
    denoised = ctx.model(x, s)
    sigma_down, sigma_up = ancestral_split(s, s_next, ctx.options["eta"])
    if sigma_down == 0.0:  # only the step onto sigma = 0: Euler, i.e. the denoised value
        return first_order_update(x, denoised, s, 0.0)
    sigma_mid = math.exp(0.5 * (math.log(s) + math.log(sigma_down)))
    x_mid = first_order_update(x, denoised, s, sigma_mid)
    x = torch.add(x, x_mid - ctx.model(x_mid, sigma_mid), alpha=(sigma_down - s) / sigma_mid)
    if sigma_up > 0:
        x = x + ctx.noise(x, i) * (ctx.options["s_noise"] * sigma_up)
    return x


#: DDPM's two fixed reverse-process variances (Ho et al. 2020 §3.2): the posterior's beta-tilde and beta.
DDPM_VARIANCES = ("fixed_small", "fixed_large")


@register(
    "ddpm",
    order=1,
    stochastic=True,
    paper="Ho, Jain, Abbeel, 'Denoising Diffusion Probabilistic Models' (arXiv 2006.11239) eq. 6-7 "
    "(posterior mean and variance) and §3.2 (sigma_t^2 = beta-tilde or beta); diffusers DDPMScheduler.step",
    description="Ancestral DDPM: a draw from the DDPM posterior given x_t and x0 = D between consecutive levels "
    "(diffusers' DDPMScheduler in VP time); variance 'fixed_small' (= ddim eta=1) or 'fixed_large'.",
    options=stochastic_options(
        variance=Option("fixed_small", str, "reverse variance: posterior beta-tilde ('fixed_small', diffusers' "
                        "default) or beta ('fixed_large')", choices=DDPM_VARIANCES),
        clip_denoised=Option(None, float, "clamp D to [-c, c] (diffusers' clip_sample_range; diffusers clips at "
                             "1 by default, here none)", low=0.0, open_low=True, nullable=True),
        s_noise=_S_NOISE,
    ),
)
def ddpm(ctx, x, i):
    """One DDPM posterior step from sigma to sigma' in the unscaled state x = x_VP / sqrt(alpha_bar).

    With alpha_bar = 1/(1 + sigma^2) and beta = 1 - alpha_bar/alpha_bar' (diffusers' ``current_beta_t``)
    the posterior mean of Ho et al. (arXiv 2006.11239) eq. 7, divided by sqrt(alpha_bar'), is
    (sigma'^2/sigma^2) x + (1 - sigma'^2/sigma^2) D; the variances divided by alpha_bar' are
    beta-tilde/alpha_bar' = sigma'^2 (sigma^2 - sigma'^2)/sigma^2 and beta/alpha_bar' =
    (sigma^2 - sigma'^2)(1 + sigma'^2)/(1 + sigma^2) (the two choices of §3.2). No noise onto sigma = 0
    (t = 0 in DDPM, Alg. 2 line 3).
    """
    s, s_next = ctx.sigmas[i], ctx.sigmas[i + 1]
    denoised = ctx.model(x, s)
    clip = ctx.options["clip_denoised"]
    if clip is not None:
        denoised = denoised.clamp(-clip, clip)
    ratio = (s_next / s) ** 2
    x = torch.lerp(denoised.to(x.dtype), x, ratio)
    if s_next == 0:
        return x
    if ctx.options["variance"] == "fixed_small":
        std = math.sqrt(s_next**2 * (s**2 - s_next**2)) / s
    else:
        std = math.sqrt((s**2 - s_next**2) * (1 + s_next**2) / (1 + s**2))
    if ctx.options["s_noise"] > 0:
        x = x + ctx.noise(x, i) * (ctx.options["s_noise"] * std)
    return x
