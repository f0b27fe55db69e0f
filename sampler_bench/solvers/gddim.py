"""Samplers for critically-damped Langevin diffusion: gDDIM (deterministic and stochastic), EM, Euler, Heun.

Zhang, Tao, Chen, "gDDIM: Generalized Denoising Diffusion Implicit Models" (arXiv 2206.05564), reference
code qsh-zh/gDDIM ``cld_jax/sampling.py``, ``sde_lib.py``, ``deis.py``; formulas in docs/solvers.md
("CLD samplers"), the process in :mod:`sampler_bench.processes.cld` (docs/processes.md). The
coefficients use gDDIM's R_t of eq. 17, not a Cholesky factor (the paper's Table 1 shows the latter
fails at low NFE).

How CLD fits the registry's contract (these solvers are registered with ``processes=("cld",)``):

* the state ``x`` passed to ``sample`` is the phase-space state u of shape ``[B, 2, *data_shape]``
  (``u[:, 0]`` = x, ``u[:, 1]`` = v) and the returned tensor has the same layout (data = ``u[:, 0]``);
* ``sigmas`` is the decreasing **time** grid, from T down to t_eps; a trailing 0 means "finish with
  gDDIM's denoising step" (``noise_removal=True``: one Euler step of the reverse-SDE drift from t_eps to 0,
  ``u <- u - t_eps (F u - G G^T score)``), used by every sampler here as in the reference code;
* the denoiser is a CLD model: ``model(u, t[B])`` returns the R_t-parameterised eps and ``model.cld`` is its
  :class:`~sampler_bench.processes.cld.CLD`.

NFE: one model call per step, the final denoising step included (gDDIM's ``nfe`` counts it), so ``nfe =
steps`` for gDDIM and EM and ``2 steps - 1`` for Heun on a grid ending at 0 (``2 steps`` otherwise). With
``sampler_bench.solvers.plan(name, nfe, schedule="karras", sigma_min=model.sigma_min,
sigma_max=model.sigma_max, schedule_params={"rho": 2.0})`` the grid is exactly gDDIM's ``ts_order=2`` grid
(:func:`cld_time_quadratic`); ``rho=1`` gives :func:`cld_time_uniform`.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
from scipy.integrate import solve_ivp

from ..processes.cld import CLD, apply2, inv2, psd_sqrt2
from . import schedules
from .registry import Option, SolverOptionError, register

#: Gauss-Legendre rule for the multistep coefficients, applied in log t on each interval (exact to ~1e-13
#: for the grids used here, checked against the closed-form order-0 coefficient in tests/test_gddim.py).
_GL_X, _GL_W = np.polynomial.legendre.leggauss(32)


# ---------------------------------------------------------------------------------------------
# Time grids
# ---------------------------------------------------------------------------------------------


def cld_time_quadratic(n: int, t_min: float = 1e-3, t_max: float = 1.0, append_zero: bool = True) -> torch.Tensor:
    """gDDIM's default grid (``ts_order=2``): uniform in sqrt(t) from ``t_max`` to ``t_min``.

    ``n`` is the number of steps, as for every schedule builder: with ``append_zero`` (the default) ``n``
    times from T to t_eps followed by 0, so that ``n`` = gDDIM's ``nfe`` with ``noise_removal=True``.
    Identical to ``schedules.karras(n, t_min, t_max, rho=2)``.
    """
    return schedules.karras(n, t_min, t_max, rho=2.0, append_zero=append_zero)


def cld_time_uniform(n: int, t_min: float = 1e-3, t_max: float = 1.0, append_zero: bool = True) -> torch.Tensor:
    """Uniform time grid (``ts_order=1``), same conventions as :func:`cld_time_quadratic`."""
    return schedules.karras(n, t_min, t_max, rho=1.0, append_zero=append_zero)


# ---------------------------------------------------------------------------------------------
# Coefficients (float64, cached per process and grid)
# ---------------------------------------------------------------------------------------------


def _t(m: np.ndarray) -> np.ndarray:
    return np.swapaxes(m, -1, -2)


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


# ---------------------------------------------------------------------------------------------
# Shared pieces: the process, grid checks, drifts, the final denoising step
# ---------------------------------------------------------------------------------------------


def _cld_model(ctx):
    """The object that carries ``.cld``: the counting wrapper's model, or the wrapper itself."""
    for obj in (ctx.model, getattr(ctx.model, "denoiser", None)):
        if isinstance(getattr(obj, "cld", None), CLD):
            return obj
    return None


def process_of(ctx) -> CLD:
    """The CLD process of the model being sampled (``model.cld``), or a ValueError saying what to pass."""
    model = _cld_model(ctx)
    if model is not None:
        return model.cld
    inner = getattr(ctx.model, "denoiser", ctx.model)
    raise SolverOptionError(
        f"solver {ctx.name!r} samples critically-damped Langevin diffusion only: pass a CLD model, i.e. an object "
        f"with a `.cld` attribute (its sampler_bench.processes.cld.CLD) whose __call__(u, t) returns the R_t eps "
        f"(e.g. sampler_bench.processes.cld.CLDAnalyticModel); got {type(inner).__name__}"
    )


def _init(ctx, u: torch.Tensor) -> None:
    cld = process_of(ctx)
    data_shape = getattr(_cld_model(ctx), "shape", None)
    if u.ndim < 2 or u.shape[1] != 2 or (data_shape is not None and tuple(u.shape[2:]) != tuple(data_shape)):
        raise SolverOptionError(
            f"solver {ctx.name!r}: the CLD state must have shape [B, 2, *data_shape] (x = u[:, 0], v = u[:, 1]); "
            f"got {tuple(u.shape)}" + (f" for data of shape {tuple(data_shape)}" if data_shape is not None else "")
            + " (start from model.prior(n))"
        )
    if ctx.sigmas[0] > cld.T * (1 + 1e-12):
        raise SolverOptionError(
            f"solver {ctx.name!r}: CLD grids are times from T = {cld.T:g} down to t_eps (then optionally 0), but this "
            f"grid starts at {ctx.sigmas[0]:g}; build it with sampler_bench.solvers.gddim.cld_time_quadratic or pass "
            f"sigma_min=model.sigma_min, sigma_max=model.sigma_max to plan()"
        )
    ctx.state["cld"] = cld


def _positive_times(ctx) -> tuple[float, ...]:
    return tuple(s for s in ctx.sigmas if s > 0)


def _drift_matrices(cld: CLD, t: float, score_weight: float) -> tuple[np.ndarray, np.ndarray]:
    """(F_t, w G G^T R_t^{-T}): drift = F u + w G G^T R^{-T} eps = F u - w G G^T score.

    w = 1/2 is the probability-flow ODE, w = (1 + lam^2)/2 the lam-family reverse SDE (gDDIM eq. 6).
    """
    return cld.F(t), score_weight * cld.GGT(t) @ _t(inv2(cld.R(t)))


def _drift(cld: CLD, u: torch.Tensor, t: float, eps: torch.Tensor, score_weight: float) -> torch.Tensor:
    f, g = _drift_matrices(cld, t, score_weight)
    return apply2(f, u) + apply2(g, eps)


def _denoise_to_zero(cld: CLD, u: torch.Tensor, t: float, eps: torch.Tensor) -> torch.Tensor:
    """gDDIM's ``noise_removal`` step from t_eps to 0: u - t (F u - G G^T score) (``get_denoising_step``)."""
    return u - t * _drift(cld, u, t, eps, 1.0)


# ---------------------------------------------------------------------------------------------
# Solvers
# ---------------------------------------------------------------------------------------------

_PAPER = "Zhang, Tao, Chen, 'gDDIM: Generalized Denoising Diffusion Implicit Models' (arXiv 2206.05564)"
_CLD_PAPER = "Dockhorn, Vahdat, Kreis, 'Score-Based Generative Modeling with Critically-Damped Langevin Diffusion' (arXiv 2112.07068)"


def _init_gddim(ctx, u: torch.Tensor) -> None:
    _init(ctx, u)
    cld, times = ctx.state["cld"], _positive_times(ctx)
    order, kt = ctx.options["order"], ctx.options["kt"]
    # Per-grid matrices depend on the grid, the options and the process: computed once (ctx.cached).
    ctx.state["coefficients"] = ctx.cached(
        ("gddim", cld.config()), lambda: multistep_coefficients(cld, times, order, kt) if len(times) > 1 else ())
    ctx.state["history"] = []
    if kt == "L":
        # A CLD network predicts eps_R; the L_t variant converts it: eps_L = L^T R^{-T} eps_R (LSDE.epsR2epsL).
        ctx.state["r_to_l"] = ctx.cached(("gddim_r_to_l", cld.config()),
                                         lambda: [_t(cld.L(t)) @ _t(inv2(cld.R(t))) for t in times])


@register(
    "gddim",
    order=3,
    paper=_PAPER + " eq. 19; code cld_jax/sampling.py `_impl_deis_sampler`",
    description="gDDIM on CLD: multistep exponential integrator in t with the R_t score parameterisation "
    "(order = number of eps points; the README's deis_order=2 is order=3). CLD models only.",
    options={
        "order": Option(3, int, "number of eps values in the polynomial (gDDIM deis_order + 1); global order in t",
                        choices=(1, 2, 3)),
        "kt": Option("R", str, "K_t of score = -K_t^{-T} eps: 'R' (gDDIM eq. 17) or 'L' (Cholesky; paper Table 1)",
                     choices=("R", "L")),
    },
    processes=("cld",),
    init=_init_gddim,
    order_of=lambda opts: opts["order"],
)
def gddim(ctx, u, i):
    """u_{i+1} = Psi u_i + sum_j C_ij eps(u_{i-j}, t_{i-j}); onto t = 0 gDDIM's denoising step."""
    t, t_next = ctx.sigmas[i], ctx.sigmas[i + 1]
    eps = ctx.model(u, t)
    if t_next == 0.0:
        return _denoise_to_zero(ctx.state["cld"], u, t, eps)
    if ctx.options["kt"] == "L":
        eps = apply2(ctx.state["r_to_l"][i], eps)
    history = ctx.state["history"]
    history.insert(0, eps)
    del history[ctx.options["order"]:]
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
    processes=("cld",),
    init=_init_gddim_sde,
)
def gddim_sde(ctx, u, i):
    t, t_next = ctx.sigmas[i], ctx.sigmas[i + 1]
    eps = ctx.model(u, t)
    if t_next == 0.0:
        return _denoise_to_zero(ctx.state["cld"], u, t, eps)
    psi, coef, noise_sqrt = ctx.state["coefficients"][i]
    out = apply2(psi, u) + apply2(coef, eps)
    if noise_sqrt is not None:
        out = out + apply2(noise_sqrt, ctx.noise(u, i))
    return out


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
    processes=("cld",),
    init=_init,
)
def cld_euler_maruyama(ctx, u, i):
    """u + dt (F u - (1+lam^2)/2 G G^T score) + lam G sqrt(|dt|) z."""
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
    processes=("cld",),
    init=_init,
)
def cld_euler(ctx, u, i):
    return _euler_maruyama_step(ctx, u, i, 0.0)


@register(
    "cld_heun",
    order=2,
    nfe_per_step=2,
    paper=_CLD_PAPER + "; " + _PAPER + " (Table 3 'Heun' baseline)",
    description="Heun (trapezoid RK2) in t on the CLD probability-flow ODE; the step onto t = 0 is the 1-NFE "
    "denoising step (2N-1 NFE for N steps). CLD models only.",
    processes=("cld",),
    init=_init,
)
def cld_heun(ctx, u, i):
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


# ---------------------------------------------------------------------------------------------
# The yardstick: adaptive DOP853 on the CLD probability-flow ODE
# ---------------------------------------------------------------------------------------------


@register(
    "cld_reference",
    order=8,
    paper="Dormand & Prince (1980) 8(5,3) pair via scipy.integrate.solve_ivp(method='DOP853'), on the CLD "
    "probability-flow ODE of " + _PAPER + " eq. 6 (lambda = 0)",
    description="Adaptive float64 DOP853 on the CLD probability-flow ODE du/dt = F u + 1/2 G G^T R_t^{-T} eps; "
    "the yardstick for endpoint errors of the deterministic CLD samplers. CLD models only.",
    options={
        "rtol": Option(1e-10, float, "relative tolerance", low=0.0, open_low=True, high=1.0),
        "atol": Option(1e-10, float, "absolute tolerance", low=0.0, open_low=True),
    },
    nfe=lambda steps, ends_at_zero, opts: 0,
    processes=("cld",),
    init=_init,
    kind="run",
    adaptive=True,
)
def cld_reference(ctx, u):
    """Integrate from sigmas[0] to the last positive time (intermediate grid times are not visited).

    The ODE is integrated in s = log t (du/ds = t (F u + 1/2 G G^T R^{-T} eps)): near t_eps the solution
    varies on the scale t itself, so the step size in log t stays roughly constant down to t_eps. On a
    grid ending at 0 it then takes the same denoising step from the last positive time to 0 as every
    CLD sampler here (gDDIM's ``noise_removal``), so endpoint errors compare like with like.
    """
    cld = ctx.state["cld"]
    t0, t_end = ctx.sigmas[0], ctx.sigmas[-1]
    denoise_at_end = t_end == 0.0
    if denoise_at_end:
        t_end = ctx.sigmas[-2]
    shape, dtype, device = u.shape, u.dtype, u.device

    def rhs(s, y):
        t = math.exp(s)
        state = torch.from_numpy(y).reshape(shape).to(device=device)
        eps = ctx.model(state.to(dtype), t).to(torch.float64)
        return (t * _drift(cld, state, t, eps, 0.5)).reshape(-1).cpu().numpy()

    y0 = u.detach().to(torch.float64).reshape(-1).cpu().numpy()
    sol = solve_ivp(rhs, (math.log(t0), math.log(t_end)), y0, method="DOP853",
                    rtol=ctx.options["rtol"], atol=ctx.options["atol"])
    if not sol.success:
        raise RuntimeError(f"CLD reference integrator failed: {sol.message}")
    out = torch.from_numpy(np.ascontiguousarray(sol.y[:, -1])).reshape(shape).to(device=device, dtype=torch.float64)
    if denoise_at_end:
        out = _denoise_to_zero(cld, out, t_end, ctx.model(out.to(dtype), t_end).to(torch.float64))
    return out.to(dtype)
