"""gDDIM on blurring diffusion: the per-frequency exponential integrator (DDIM in every DCT coefficient)
and its multistep extension.

Zhang, Tao, Chen, "gDDIM" (arXiv 2206.05564): for a linear SDE du = F u dt + G dW with score = -R_t^{-T}
eps, the probability-flow ODE integrated with eps frozen is exact in its linear part (eq. 19 with one eps
point). BDM is diagonal in the DCT basis with R_t = sigma_t I, so per coefficient, with a_t the signal gain
and rho_t = sigma_t / a_t,

    u_s = (a_s / a_t) u_t + a_s int_t^s eps(tau) d rho(tau)

(derived in docs/solvers.md, "BDM samplers"). With eps constant this is DDIM per frequency,
u_s = (a_s/a_t) u_t + (sigma_s - (a_s/a_t) sigma_t) eps: gDDIM's ``blur_jax/sampling.py`` order-0 sampler.
With ``order`` = k + 1 > 1, eps is the Lagrange polynomial in t through the k + 1 newest values, as gDDIM's
multistep (DEIS tAB) coefficients for CLD; the first steps warm up with fewer points.
"""

from __future__ import annotations

import functools

import numpy as np

from ...processes.bdm import BDM, dct2, idct2
from ...processes.kind import BDM_FREQUENCY_SPACE
from ..registry import Option, register
from .common import _BDM_PAPER, _PAPER, as_tensor, denoise_to_zero, init, positive_times

#: Composite Gauss-Legendre rule in log(sigma/alpha) on each interval for the multistep coefficients:
#: 32 panels of 16 nodes, because a high frequency's rho = sigma/(alpha d_t) jumps by up to 1/d_min = 1000
#: inside one coarse step (the blur transition). Checked against the closed-form one-point coefficient
#: (tests/test_bdm.py: ~1e-12 relative).
_PANELS = 32
_x, _w = np.polynomial.legendre.leggauss(16)
_GL_X = ((np.arange(_PANELS)[:, None] + 0.5 * (_x[None] + 1.0)) * (2.0 / _PANELS) - 1.0).ravel()
_GL_W = np.tile(_w / _PANELS, _PANELS)


def _lagrange(tau: np.ndarray, pts: np.ndarray, j: int) -> np.ndarray:
    out = np.ones_like(tau)
    for m, p in enumerate(pts):
        if m != j:
            out = out * (tau - p) / (pts[j] - p)
    return out


def order1_eps_coefficient(bdm: BDM, t: float, s: float, hw) -> np.ndarray:
    """a_s (rho_s - rho_t) = sigma_s - (a_s / a_t) sigma_t per frequency [H, W]: DDIM's eps coefficient."""
    return bdm.sigma(s) - bdm.a(s, hw) / bdm.a(t, hw) * bdm.sigma(t)


@functools.lru_cache(maxsize=64)
def multistep_coefficients(bdm: BDM, times: tuple[float, ...], order: int, hw: tuple[int, int]):
    """Per step i of the positive grid: (a_{i+1}/a_i, [C_i0, ..., C_ik]) per frequency, each [H, W].

    C_ij = a_{t_{i+1}} int_{t_i}^{t_{i+1}} l_j(tau) rho'(tau) dtau, l_j the Lagrange basis on the
    k + 1 = min(order, i + 1) newest times (t_i, t_{i-1}, ...); the one-point coefficient in closed form.
    """
    ts = np.asarray(times, dtype=np.float64)
    out = []
    for i in range(len(ts) - 1):
        t, s = ts[i], ts[i + 1]
        psi = bdm.a(s, hw) / bdm.a(t, hw)
        k = min(order - 1, i)
        if k == 0:
            out.append((psi, order1_eps_coefficient(bdm, t, s, hw)[None]))
            continue
        # in the clock r = log(sigma/alpha), rho(r) ~ e^r / d_t: smooth, where rho(t) blows up at t_start
        lo, hi = bdm.log_noise_ratio(t), bdm.log_noise_ratio(s)
        tau = bdm.time_of_log_noise_ratio(lo + 0.5 * (hi - lo) * (_GL_X + 1.0))
        w = 0.5 * (hi - lo) * _GL_W * bdm.dt_dlog_noise_ratio(tau)  # d tau = (dt/dr) dr
        rho_dot = bdm.rho_dot(tau, hw)  # [nodes, H, W]
        pts = ts[i - k: i + 1][::-1]
        coefs = [bdm.a(s, hw) * np.einsum("m,mhw->hw", w * _lagrange(tau, pts, j), rho_dot) for j in range(k + 1)]
        out.append((psi, np.stack(coefs)))
    return tuple(out)


def _init_gddim(ctx, z) -> None:
    init(ctx, z)
    bdm, hw, times = ctx.state["bdm"], ctx.state["hw"], positive_times(ctx)
    order = ctx.options["order"]
    ctx.state["coefficients"] = ctx.cached(
        ("gddim_bdm", bdm.config(), hw), lambda: multistep_coefficients(bdm, times, order, hw) if len(times) > 1 else ())


@register(
    "gddim_bdm",
    order=lambda opts: opts["order"],
    paper=_PAPER + " eq. 19 (one eps point: code blur_jax/sampling.py `get_order0_sampler`) on " + _BDM_PAPER,
    description="gDDIM on blurring diffusion: exponential integrator per DCT coefficient (order 1 = DDIM per "
    "frequency, gDDIM's BDM sampler; 2, 3: multistep in t). BDM models only.",
    options={
        "order": Option(1, int, "number of eps values in the polynomial in t (1: gDDIM's BDM sampler); global order",
                        choices=(1, 2, 3)),
    },
    needs=(BDM_FREQUENCY_SPACE,),
    init=_init_gddim,
)
def gddim_bdm(ctx, z, i):
    """u_{i+1} = (a_{i+1}/a_i) u_i + sum_j C_ij eps~(z_{i-j}) per DCT coefficient; onto t = 0 the denoising step.

    gDDIM (Zhang, Tao, Chen, arXiv 2206.05564) eq. 18 (one eps point, DDIM per frequency) and the multistep
    eq. 19 (two or three points), on blurring diffusion (Hoogeboom & Salimans, arXiv 2209.05557).
    """
    t, t_next = ctx.sigmas[i], ctx.sigmas[i + 1]
    eps = ctx.model(z, t)
    if t_next == 0.0:
        return denoise_to_zero(ctx.state["bdm"], z, t, eps)
    history = ctx.history.push(t, dct2(eps), ctx.options["order"])
    psi, coefs = ctx.state["coefficients"][i]
    u = as_tensor(psi, z) * dct2(z)
    for c, e in zip(coefs, history):
        u = u + as_tensor(c, z) * e
    return idct2(u)
