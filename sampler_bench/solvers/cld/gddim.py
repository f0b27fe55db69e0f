"""gDDIM on CLD: the multistep exponential integrator (eq. 19) and its stochastic version (Prop. 6).

Zhang, Tao, Chen, "gDDIM: Generalized Denoising Diffusion Implicit Models" (arXiv 2206.05564), reference
code qsh-zh/gDDIM ``cld_jax/sampling.py`` and ``deis.py``.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from scipy.integrate import solve_ivp

from ...processes.cld import CLD, apply2, inv2, psd_sqrt2
from ...processes.kind import CLD_PHASE_SPACE
from ..registry import Option, register
from .common import (_PAPER, _denoise_to_zero, _init, _positive_times, _t,  # noqa: F401  (grids re-exported)
                     cld_time_quadratic, cld_time_uniform)

#: Gauss-Legendre rule for the multistep coefficients, applied in log t on each interval (exact to ~1e-13
#: for the grids used here, checked against the closed-form order-0 coefficient in tests/test_gddim.py).
_GL_X, _GL_W = np.polynomial.legendre.leggauss(32)


def order0_eps_coefficient(cld: CLD, t: float, t_next: float) -> np.ndarray:
    """int_t^{t'} Psi(t', s) 1/2 G G^T R_s^{-T} ds in closed form: R_{t'} - Psi(t', t) R_t (gDDIM, arXiv 2206.05564, eq. 17)."""
    return cld.R(t_next) - cld.psi(t_next, t) @ cld.R(t)


def _quadrature(cld: CLD, t0: np.ndarray, t1: np.ndarray, kt: str):
    """Gauss-Legendre nodes/weights in log s on each [t0_i, t1_i] and the integrand Psi(t1, s) 1/2 GG^T K_s^{-T}."""
    lo, hi = np.log(t0), np.log(t1)
    s = lo[:, None] + 0.5 * (hi - lo)[:, None] * (_GL_X[None] + 1.0)
    tau = np.exp(s)
    w = 0.5 * (hi - lo)[:, None] * _GL_W[None] * tau  # ds = d(log s) * s
    integrand = cld.psi(t1[:, None], tau) @ (0.5 * cld.GGT(tau)) @ _t(inv2(cld.K(tau, kt)))
    return tau, w, integrand


def _lagrange(tau: np.ndarray, pts: np.ndarray, j: int) -> np.ndarray:
    out = np.ones_like(tau)
    for m, p in enumerate(pts):
        if m != j:
            out = out * (tau - p) / (pts[j] - p)
    return out


@functools.lru_cache(maxsize=64)
def multistep_coefficients(cld: CLD, times: tuple[float, ...], order: int, kt: str = "R"):
    """gDDIM eq. 19 on the positive grid ``times``: per step i, (Psi(t_{i+1}, t_i), [C_i0, ..., C_ik]).

    C_ij = int_{t_i}^{t_{i+1}} Psi(t_{i+1}, s) 1/2 G G^T K_s^{-T} l_j(s) ds with l_j the Lagrange basis on
    the k+1 = min(order, i+1) newest times (t_i, t_{i-1}, ...): the first steps warm up with fewer points
    as in the reference. The reference integrates with a 10,000-point left Riemann sum (first-order
    accurate: against the closed form its one-point coefficient is off by up to 1.8e-4 relative on the
    10-step quadratic grid, 4e-5 on the 50-step one); here a 32-node Gauss-Legendre rule in log s is used on
    each interval (1e-13 relative, tests/test_gddim.py), and the one-point R_t coefficient takes its exact
    closed form (:func:`order0_eps_coefficient`).
    """
    ts = np.asarray(times, dtype=np.float64)
    t0, t1 = ts[:-1], ts[1:]
    psi = cld.psi(t1, t0)
    tau, w, integrand = _quadrature(cld, t0, t1, kt)
    out = []
    for i in range(len(t0)):
        k = min(order - 1, i)
        if k == 0 and kt == "R":
            out.append((psi[i], order0_eps_coefficient(cld, t0[i], t1[i])[None]))
            continue
        pts = ts[i - k : i + 1][::-1]  # t_i, t_{i-1}, ..., t_{i-k}
        coefs = [np.einsum("m,mab->ab", w[i] * _lagrange(tau[i], pts, j), integrand[i]) for j in range(k + 1)]
        out.append((psi[i], np.stack(coefs)))
    return tuple(out)


def _w_and_q(cld: CLD, s: float, t: float, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """W(t, s) and Q(t) of the stochastic update in the R frame (derivation in :func:`stochastic_coefficients`)."""

    r_sol, b_max = cld._r_dense
    l2, two_gamma = lam * lam, 2.0 * cld.Gamma

    def rhs(tau, y):
        # H = R^{-1} G G^T R^{-T} = c h h^T with h = (-R_12, R_11), c = 2 Gamma beta / det(R)^2 (rank one:
        # noise enters through v only); written out on scalars because this runs ~10^3 times per interval.
        r11, r12, r21, r22 = r_sol(min(cld.beta_0 * tau + 0.5 * cld.beta_1 * tau * tau, b_max))
        det = r11 * r22 - r12 * r21
        c = two_gamma * (cld.beta_0 + cld.beta_1 * tau) / (det * det)
        h1, h2 = -r12, r11
        w11, w12, w21, w22, q11, q12, q21, q22 = y
        k = 0.5 * l2 * c
        hw1, hw2 = h1 * w11 + h2 * w21, h1 * w12 + h2 * w22  # h^T W
        hq1, hq2 = h1 * q11 + h2 * q21, h1 * q12 + h2 * q22  # h^T Q
        qh1, qh2 = q11 * h1 + q12 * h2, q21 * h1 + q22 * h2  # Q h
        return np.array([
            k * h1 * hw1, k * h1 * hw2, k * h2 * hw1, k * h2 * hw2,
            k * (h1 * hq1 + qh1 * h1) - l2 * c * h1 * h1, k * (h1 * hq2 + qh1 * h2) - l2 * c * h1 * h2,
            k * (h2 * hq1 + qh2 * h1) - l2 * c * h2 * h1, k * (h2 * hq2 + qh2 * h2) - l2 * c * h2 * h2,
        ])

    y0 = np.array([1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0])
    sol = solve_ivp(rhs, (s, t), y0, method="DOP853", rtol=1e-10, atol=1e-12)
    if not sol.success:  # pragma: no cover
        raise RuntimeError(f"stochastic gDDIM coefficient integration failed: {sol.message}")
    y = sol.y[:, -1]
    return y[:4].reshape(2, 2), y[4:].reshape(2, 2)


@functools.lru_cache(maxsize=64)
def stochastic_coefficients(cld: CLD, times: tuple[float, ...], lam: float):
    """Stochastic gDDIM (Prop. 6, eq. 22-23) on the positive grid ``times``: per step (Psi, C, P^{1/2}).

    u(t) ~ N(Psi(t, s) u(s) + [Psi_hat(t, s) - Psi(t, s)] R_s eps, P), Psi_hat the transition of
    F_hat = F + (1 + lam^2)/2 G G^T Sigma^{-1}. Writing Psi_hat(t, s) = R_t W(t, s) R_s^{-1} (R_t is the
    transition of the lam = 0 field, eq. 17) leaves dW/dt = lam^2/2 H W with H = R^{-1} G G^T R^{-T}, and
    the covariance P = R_t Q R_t^T with dQ/dt = lam^2/2 (H Q + Q H) - lam^2 H (Q(s) = 0, t running down
    from s). So C = R_t W - Psi R_s, and at lam = 0 (W = I, Q = 0) this is exactly the deterministic
    one-point gDDIM step. The reference (``LambdaSDE.cond_rev_cov``) integrates P directly with RK4; its
    ``P @ F_hat`` term lacks the transpose of the formula it implements, which this derivation avoids.
    As in the reference, the last step's covariance is set to zero.
    """
    ts = np.asarray(times, dtype=np.float64)
    out = []
    for i in range(len(ts) - 1):
        s, t = float(ts[i]), float(ts[i + 1])
        psi = cld.psi(t, s)
        if lam == 0.0:
            out.append((psi, order0_eps_coefficient(cld, s, t), None))
            continue
        W, Q = _w_and_q(cld, s, t, lam)
        r_t = cld.R(t)
        coef = r_t @ W - psi @ cld.R(s)
        last = i == len(ts) - 2
        out.append((psi, coef, None if last else psd_sqrt2(r_t @ Q @ r_t.T)))
    return tuple(out)


def _init_gddim(ctx, u: torch.Tensor) -> None:
    _init(ctx, u)
    cld, times = ctx.state["cld"], _positive_times(ctx)
    order, kt = ctx.options["order"], ctx.options["kt"]
    # Per-grid matrices depend on the grid, the options and the process: computed once (ctx.cached).
    ctx.state["coefficients"] = ctx.cached(
        ("gddim", cld.config()), lambda: multistep_coefficients(cld, times, order, kt) if len(times) > 1 else ())
    if kt == "L":
        # A CLD network predicts eps_R; the L_t variant converts it: eps_L = L^T R^{-T} eps_R (LSDE.epsR2epsL).
        ctx.state["r_to_l"] = ctx.cached(("gddim_r_to_l", cld.config()),
                                         lambda: [_t(cld.L(t)) @ _t(inv2(cld.R(t))) for t in times])


@register(
    "gddim",
    order=lambda opts: opts["order"],
    paper=_PAPER + " eq. 19; code cld_jax/sampling.py `_impl_deis_sampler`",
    description="gDDIM on CLD: multistep exponential integrator in t with the R_t score parameterisation "
    "(order = number of eps points; the README's deis_order=2 is order=3). CLD models only.",
    options={
        "order": Option(3, int, "number of eps values in the polynomial (gDDIM deis_order + 1); global order in t",
                        choices=(1, 2, 3)),
        "kt": Option("R", str, "K_t of score = -K_t^{-T} eps: 'R' (gDDIM eq. 17) or 'L' (Cholesky; paper Table 1)",
                     choices=("R", "L")),
    },
    needs=(CLD_PHASE_SPACE,),
    init=_init_gddim,
)
def gddim(ctx, u, i):
    """u_{i+1} = Psi u_i + sum_j C_ij eps(u_{i-j}, t_{i-j}); onto t = 0 gDDIM's denoising step.

    gDDIM's multistep predictor (Zhang, Tao, Chen, arXiv 2206.05564, eq. 19; one eps point is the
    deterministic gDDIM of eq. 18) with the score parameterised by R_t of eq. 17, on the CLD process of
    Dockhorn et al. (arXiv 2112.07068).
    """
    t, t_next = ctx.sigmas[i], ctx.sigmas[i + 1]
    eps = ctx.model(u, t)
    if t_next == 0.0:
        return _denoise_to_zero(ctx.state["cld"], u, t, eps)
    if ctx.options["kt"] == "L":
        eps = apply2(ctx.state["r_to_l"][i], eps)
    history = ctx.history.push(t, eps, ctx.options["order"])
    psi, coefs = ctx.state["coefficients"][i]
    out = apply2(psi, u)
    for c, e in zip(coefs, history):
        out = out + apply2(c, e)
    return out


def _init_gddim_sde(ctx, u: torch.Tensor) -> None:
    _init(ctx, u)
    times = _positive_times(ctx)
    lam = ctx.options["lambda_coef"]
    cld = ctx.state["cld"]
    ctx.state["coefficients"] = ctx.cached(
        ("gddim_sde", cld.config()), lambda: stochastic_coefficients(cld, times, lam) if len(times) > 1 else ())


@register(
    "gddim_sde",
    order=1,
    stochastic=True,
    paper=_PAPER + " Prop. 6, eq. 22-23; code cld_jax/sampling.py `get_sdeis_sampler` (order 0)",
    description="Stochastic gDDIM on CLD: exact Gaussian update of the lambda-family reverse SDE with eps frozen; "
    "lambda_coef = 0 is the deterministic one-point gDDIM. CLD models only.",
    options={
        "lambda_coef": Option(1.0, float, "noise scale lambda of gDDIM eq. 6 (0: probability-flow ODE; 1: reverse SDE)",
                              low=0.0),
    },
    needs=(CLD_PHASE_SPACE,),
    init=_init_gddim_sde,
)
def gddim_sde(ctx, u, i):
    """u_{i+1} ~ N(Psi u_i + C_i eps_i, P_i): stochastic gDDIM (Zhang, Tao, Chen, arXiv 2206.05564, Prop. 6,
    eqs. 22-23) with eps frozen over the step, the exact Gaussian update of the lambda-family reverse SDE
    (eq. 6) on CLD (Dockhorn et al., arXiv 2112.07068); onto t = 0 the denoising step."""
    t, t_next = ctx.sigmas[i], ctx.sigmas[i + 1]
    eps = ctx.model(u, t)
    if t_next == 0.0:
        return _denoise_to_zero(ctx.state["cld"], u, t, eps)
    psi, coef, noise_sqrt = ctx.state["coefficients"][i]
    out = apply2(psi, u) + apply2(coef, eps)
    if noise_sqrt is not None:
        out = out + apply2(noise_sqrt, ctx.noise(u, i))
    return out
