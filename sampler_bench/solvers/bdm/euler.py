"""Euler, Heun and Euler-Maruyama in t on blurring diffusion's probability-flow ODE and reverse SDE,
per DCT coefficient (Hoogeboom & Salimans, arXiv 2209.05557; the generic baselines of gDDIM, arXiv
2206.05564, Table 3). They integrate du/dt = f u - w g^2 score with score = -eps/sigma (docs/solvers.md).
"""

from __future__ import annotations

import math

from ...processes.bdm import dct2, idct2
from ...processes.kind import BDM_FREQUENCY_SPACE
from ..registry import register
from .common import _BDM_PAPER, _PAPER, as_tensor, denoise_to_zero, drift, init


def _euler_step(ctx, z, i, stochastic: bool):
    bdm, hw = ctx.state["bdm"], ctx.state["hw"]
    t, t_next = ctx.sigmas[i], ctx.sigmas[i + 1]
    eps = ctx.model(z, t)
    if t_next == 0.0:
        return denoise_to_zero(bdm, z, t, eps)
    u = dct2(z)
    u = u + (t_next - t) * drift(bdm, hw, u, t, dct2(eps), 1.0 if stochastic else 0.5)
    if stochastic:  # g dW over |dt|; the DCT is orthogonal, so pixel-space N(0, I) noise is N(0, I) per frequency
        u = u + as_tensor(bdm.g2(t, hw) ** 0.5, z) * math.sqrt(t - t_next) * dct2(ctx.noise(z, i))
    return idct2(u)


@register(
    "bdm_euler_maruyama",
    order=1,
    stochastic=True,
    paper=_BDM_PAPER + "; reverse SDE of Song et al. (arXiv 2011.13456) eq. 6 per DCT coefficient",
    description="Euler-Maruyama in t on the BDM reverse SDE du = (f u - g^2 score) dt + g dW per DCT coefficient. "
    "BDM models only.",
    needs=(BDM_FREQUENCY_SPACE,),
    init=init,
)
def bdm_euler_maruyama(ctx, z, i):
    """Euler–Maruyama in t on the reverse SDE (Song et al., arXiv 2011.13456, eq. 6) of blurring diffusion
    (Hoogeboom & Salimans, arXiv 2209.05557), per DCT coefficient; onto t = 0 the denoising step."""
    return _euler_step(ctx, z, i, True)


@register(
    "bdm_euler",
    order=1,
    paper=_BDM_PAPER + "; " + _PAPER + " (Table 3 'Euler' baseline)",
    description="Euler in t on the BDM probability-flow ODE du/dt = f u + 1/2 g^2 eps / sigma per DCT coefficient. "
    "BDM models only.",
    needs=(BDM_FREQUENCY_SPACE,),
    init=init,
)
def bdm_euler(ctx, z, i):
    """Euler in t on the probability-flow ODE (Song et al., arXiv 2011.13456, eq. 13) of blurring diffusion
    (Hoogeboom & Salimans, arXiv 2209.05557) per DCT coefficient: gDDIM's (arXiv 2206.05564) Table 3
    'Euler' baseline; onto t = 0 the denoising step."""
    return _euler_step(ctx, z, i, False)


@register(
    "bdm_heun",
    order=2,
    nfe_per_step=2,
    paper=_BDM_PAPER + "; " + _PAPER + " (Table 3 'Heun' baseline)",
    description="Heun (trapezoid RK2) in t on the BDM probability-flow ODE; the step onto t = 0 is the 1-NFE "
    "denoising step (2N-1 NFE for N steps). BDM models only.",
    needs=(BDM_FREQUENCY_SPACE,),
    init=init,
)
def bdm_heun(ctx, z, i):
    """Heun (trapezoid) in t on blurring diffusion's probability-flow ODE (Song et al., arXiv 2011.13456,
    eq. 13; Hoogeboom & Salimans, arXiv 2209.05557) per DCT coefficient: gDDIM's (arXiv 2206.05564)
    Table 3 'Heun' baseline; onto t = 0 the 1-NFE denoising step."""
    bdm, hw = ctx.state["bdm"], ctx.state["hw"]
    t, t_next = ctx.sigmas[i], ctx.sigmas[i + 1]
    eps = ctx.model(z, t)
    if t_next == 0.0:
        return denoise_to_zero(bdm, z, t, eps)
    dt = t_next - t
    u = dct2(z)
    d = drift(bdm, hw, u, t, dct2(eps), 0.5)
    z_euler = idct2(u + dt * d)
    d_next = drift(bdm, hw, dct2(z_euler), t_next, dct2(ctx.model(z_euler, t_next)), 0.5)
    return idct2(u + 0.5 * dt * (d + d_next))
