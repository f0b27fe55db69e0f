"""First-order and EDM-family deterministic samplers on dx/dsigma = (x - D(x, sigma))/sigma.

Formulas: docs/solvers.md (euler, heun).
"""

from __future__ import annotations

from .registry import register
from .updates import first_order_update


@register(
    "euler",
    order=1,
    paper="Song, Meng, Ermon, 'Denoising Diffusion Implicit Models' (arXiv 2010.02502); "
    "Karras et al., 'Elucidating the Design Space of Diffusion-Based Generative Models' (arXiv 2206.00364) Alg. 1",
    description="Euler on the probability-flow ODE in sigma; identical to DDIM (eta=0) and DPM-Solver-1.",
)
def euler(ctx, x, i):
    """xh_{i+1} = (s_{i+1}/s_i) xh_i + (1 - s_{i+1}/s_i) D_i; to sigma = 0 this returns D_i.

    The Euler (predictor) step of EDM's Alg. 1 (Karras et al., arXiv 2206.00364, sigma(t) = t, s(t) = 1) on
    the probability-flow ODE dx/dsigma = (x - D)/sigma (EDM eq. 1 with sigma(t) = t); it is also DDIM
    (Song et al., arXiv 2010.02502, §4.3, eq. 13 with eta = 0) and DPM-Solver-1 (Lu et al., arXiv
    2206.00927, eq. 3.4 with eps frozen) written in the unscaled state.
    """
    s = ctx.sigmas[i]
    return first_order_update(x, ctx.model(x, s), s, ctx.sigmas[i + 1])


@register(
    "heun",
    order=2,
    nfe_per_step=2,
    paper="Karras et al., 'Elucidating the Design Space of Diffusion-Based Generative Models' (arXiv 2206.00364) Alg. 2",
    description="EDM's 2nd-order Heun; the step onto sigma = 0 is a single Euler step (2N-1 NFE for N steps).",
)
def heun(ctx, x, i):
    """EDM's deterministic sampler (Karras et al., arXiv 2206.00364, Alg. 1 with sigma(t) = t, s(t) = 1;
    Alg. 2 with S_churn = 0): an Euler predictor, then the trapezoidal (Heun) corrector with the slope at
    sigma_{i+1}; onto sigma = 0 only the Euler step, as Alg. 1's sigma(t_{i+1}) != 0 test."""
    s, s_next = ctx.sigmas[i], ctx.sigmas[i + 1]
    d = (x - ctx.model(x, s)) / s
    x_euler = x + (s_next - s) * d
    if s_next == 0:
        return x_euler
    d_next = (x_euler - ctx.model(x_euler, s_next)) / s_next
    return x + (s_next - s) * 0.5 * (d + d_next)
