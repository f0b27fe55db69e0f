"""Euler, Heun and Euler-Maruyama in t on CLD's probability-flow ODE and lambda-family reverse SDE
(Dockhorn et al., arXiv 2112.07068; the lambda family of Zhang et al., arXiv 2206.05564, eq. 6).
"""

from __future__ import annotations

import math

from ...processes.cld import apply2
from ...processes.kind import CLD_PHASE_SPACE
from ..registry import Option, register
from .common import _CLD_PAPER, _PAPER, _denoise_to_zero, _drift, _init

@register(
    "cld_euler_maruyama",
    order=1,
    stochastic=True,
    paper=_CLD_PAPER + "; " + _PAPER + " eq. 6; code cld_jax/sampling.py `get_em_sampler`",
    description="Euler-Maruyama in t on the CLD lambda-family reverse SDE (noise only in v). CLD models only.",
    options={
        "lambda_coef": Option(1.0, float, "noise scale lambda (1: the reverse SDE; 0: Euler on the probability-flow ODE)",
                              low=0.0),
    },
    needs=(CLD_PHASE_SPACE,),
    init=_init,
)
def cld_euler_maruyama(ctx, u, i):
    """u + dt (F u - (1+lam^2)/2 G G^T score) + lam G sqrt(|dt|) z.

    Euler–Maruyama on the lambda-family reverse SDE of gDDIM (Zhang, Tao, Chen, arXiv 2206.05564, eq. 6) for
    the CLD process of Dockhorn et al. (arXiv 2112.07068); onto t = 0 gDDIM's denoising step.
    """
    return _euler_maruyama_step(ctx, u, i, ctx.options["lambda_coef"])


def _euler_maruyama_step(ctx, u, i, lam: float):
    """One Euler(-Maruyama) step of the lambda-family; lam = 0 is Euler on the probability-flow ODE."""
    cld = ctx.state["cld"]
    t, t_next = ctx.sigmas[i], ctx.sigmas[i + 1]
    eps = ctx.model(u, t)
    if t_next == 0.0:
        return _denoise_to_zero(cld, u, t, eps)
    out = u + (t_next - t) * _drift(cld, u, t, eps, 0.5 * (1.0 + lam**2))
    if lam > 0:
        out = out + apply2(lam * math.sqrt(t - t_next) * cld.G(t), ctx.noise(u, i))
    return out


@register(
    "cld_euler",
    order=1,
    paper=_CLD_PAPER + "; " + _PAPER,
    description="Euler in t on the CLD probability-flow ODE du/dt = F u + 1/2 G G^T R^{-T} eps. CLD models only.",
    needs=(CLD_PHASE_SPACE,),
    init=_init,
)
def cld_euler(ctx, u, i):
    """Euler in t on CLD's probability-flow ODE: gDDIM's lambda-family (arXiv 2206.05564, eq. 6) at
    lambda = 0, the 'Euler' baseline of its Table 3, for the process of Dockhorn et al. (arXiv 2112.07068)."""
    return _euler_maruyama_step(ctx, u, i, 0.0)


@register(
    "cld_heun",
    order=2,
    nfe_per_step=2,
    paper=_CLD_PAPER + "; " + _PAPER + " (Table 3 'Heun' baseline)",
    description="Heun (trapezoid RK2) in t on the CLD probability-flow ODE; the step onto t = 0 is the 1-NFE "
    "denoising step (2N-1 NFE for N steps). CLD models only.",
    needs=(CLD_PHASE_SPACE,),
    init=_init,
)
def cld_heun(ctx, u, i):
    """Heun (trapezoid) in t on CLD's probability-flow ODE (gDDIM, arXiv 2206.05564, eq. 6 at lambda = 0;
    the 'Heun' baseline of its Table 3); onto t = 0 the 1-NFE denoising step (Dockhorn et al., arXiv
    2112.07068, process)."""
    cld = ctx.state["cld"]
    t, t_next = ctx.sigmas[i], ctx.sigmas[i + 1]
    eps = ctx.model(u, t)
    if t_next == 0.0:
        return _denoise_to_zero(cld, u, t, eps)
    dt = t_next - t
    d = _drift(cld, u, t, eps, 0.5)
    u_euler = u + dt * d
    d_next = _drift(cld, u_euler, t_next, ctx.model(u_euler, t_next), 0.5)
    return u + 0.5 * dt * (d + d_next)
