"""Adams–Bashforth multistep samplers: k-diffusion LMS (= rhoAB-DEIS), tAB-DEIS and iPNDM.

All three advance the unscaled state with a combination of the stored noise predictions
``eps_k = (x_k - D(x_k, sigma_k)) / sigma_k`` (the PF-ODE velocity ``dx/dsigma``), one denoiser
call per step (NFE = steps, no extra call on the step onto sigma = 0):

    x_{i+1} = x_i + sum_j c_ij eps_{i-j}

and differ only in the weights ``c_ij`` (docs/solvers.md, "Adams and DEIS family"):

* ``lms`` / ``deis_rho``: Adams–Bashforth in sigma, ``c_ij = int_{sigma_i}^{sigma_{i+1}} l_j(s) ds``
  with ``l_j`` the Lagrange basis on the recent sigmas;
* ``deis``: the same polynomial extrapolation of eps but in the VP time t, integrated against the
  VP schedule, ``c_ij = int_{t_i}^{t_{i+1}} sigma'(t) l_j(t) dt``;
* ``ipndm``: fixed uniform-step Adams–Bashforth weights times the DDIM step ``sigma_{i+1} - sigma_i``.

Every multistep solver here starts with lower orders: step i uses ``min(i + 1, order)`` stored eps.
"""

from __future__ import annotations

import math

import numpy as np

from . import schedules
from .registry import Option, SolverOptionError, register

# ---------------------------------------------------------------------------------------------
# Shared pieces: eps history and exact integrals of a Lagrange basis.
# ---------------------------------------------------------------------------------------------


def _eps_history(ctx, x, i: int, keep: int) -> list:
    """Evaluate eps at (x, sigma_i), record it as the newest in ``ctx.history``; keep the ``keep`` newest."""
    s = ctx.sigmas[i]
    eps = (x - ctx.model(x, s)) / s
    return ctx.history.push(s, eps, keep)


def _combine(x, coeffs, history):
    """x + sum_j c_j eps_j, with the newest eps first (the order k-diffusion sums in)."""
    return x + sum(c * e for c, e in zip(coeffs, history))


def lagrange_integrals(nodes, a: float, b: float) -> list[float]:
    """``[int_a^b l_j(s) ds for j]`` for the Lagrange basis ``l_j`` on ``nodes``, exact in float64.

    Each basis polynomial is expanded into monomials and integrated term by term (exact polynomial
    integration, no quadrature error) after the affine map s = a + v (b - a): the nodes become O(1)
    numbers v_k = (node_k - a)/(b - a), so the expansion stays well conditioned whatever the sigma
    range (80 down to 0). Plain float arithmetic: at most 4 nodes, called once per step.
    """
    width = b - a
    v = [(n - a) / width for n in nodes]
    out = []
    for j, vj in enumerate(v):
        poly = [1.0]  # coefficients of prod_{k != j} (s - v_k), lowest degree first
        denominator = 1.0
        for k, vk in enumerate(v):
            if k == j:
                continue
            poly = [(poly[m - 1] if m > 0 else 0.0) - vk * (poly[m] if m < len(poly) else 0.0)
                    for m in range(len(poly) + 1)]
            denominator *= vj - vk
        out.append(width * sum(c / (m + 1) for m, c in enumerate(poly)) / denominator)
    return out


# ---------------------------------------------------------------------------------------------
# lms: Adams–Bashforth in sigma (k-diffusion sample_lms) and its DEIS name, rhoAB-DEIS.
# ---------------------------------------------------------------------------------------------


def adams_bashforth_sigma_step(ctx, x, i: int, order: int):
    """One variable-step Adams–Bashforth step in sigma on dx/dsigma = eps, ``min(i + 1, order)`` points."""
    history = _eps_history(ctx, x, i, order)
    return _combine(x, ctx.cached(("adams_bashforth_sigma", order), lambda: _ab_sigma_coefficients(ctx.sigmas, order))[i],
                    history)


def _ab_sigma_coefficients(sigmas, order: int) -> list[list[float]]:
    """Every step's Adams–Bashforth weights on the grid (computed once per grid: ``ctx.cached``)."""
    out = []
    for i in range(len(sigmas) - 1):
        nodes = [sigmas[i - k] for k in range(min(i + 1, order))]  # sigma_i, sigma_{i-1}, ...
        out.append(lagrange_integrals(nodes, sigmas[i], sigmas[i + 1]))
    return out


@register(
    "lms",
    order=lambda opts: opts["order"],
    paper="Katherine Crowson, k-diffusion `sample_lms` (linear multistep, Adams–Bashforth in sigma); "
    "= rhoAB-DEIS of Zhang & Chen, 'Fast Sampling of Diffusion Models with Exponential Integrator' (arXiv 2204.13902)",
    description="k-diffusion's linear multistep: variable-step Adams–Bashforth in sigma on eps, warm start; "
    "1 NFE/step.",
    options={"order": Option(4, int, "number of stored eps (Adams–Bashforth order)", low=1, high=4)},
)
def lms(ctx, x, i):
    """x_{i+1} = x_i + sum_j (int_{sigma_i}^{sigma_{i+1}} l_j) eps_{i-j}, l_j the Lagrange basis on sigma_{i-j}.

    k-diffusion integrates the basis with ``scipy.integrate.quad``; the integrand is a polynomial,
    so here it is integrated exactly (:func:`lagrange_integrals`; the same numbers to float64
    round-off). The step onto sigma = 0 is the same Adams–Bashforth step (k-diffusion does not
    special-case it either). Reference: crowsonkb/k-diffusion@4601bf0 ``k_diffusion/sampling.py``
    ``sample_lms`` / ``linear_multistep_coeff``; the same update is rhoAB-DEIS of Zhang & Chen
    (arXiv 2204.13902) in DEIS's ``th_deis/sampler.py`` ``get_sampler_rho_ab``.
    """
    return adams_bashforth_sigma_step(ctx, x, i, ctx.options["order"])


@register(
    "deis_rho",
    order=lambda opts: opts["order"] + 1,
    paper="Zhang & Chen, 'Fast Sampling of Diffusion Models with Exponential Integrator' (arXiv 2204.13902), "
    "rhoAB-DEIS",
    description="rhoAB-DEIS: Adams–Bashforth in rho = sigma (identical to lms with order r+1); 1 NFE/step.",
    options={"order": Option(3, int, "DEIS order r: degree of the eps polynomial (r+1 stored eps; global order r+1)",
                             low=0, high=3)},
)
def deis_rho(ctx, x, i):
    """rhoAB-DEIS in the unscaled state x = v (DEIS ``x2v``) with rho = sigma: exactly ``lms(order=r+1)``.

    DEIS names the order by the polynomial degree r (``ab_order``), so ``deis_rho(order=r)`` is
    ``lms(order=r+1)`` (docs/findings.md, "Pitfalls": DEIS's ab_order). Zhang & Chen (arXiv
    2204.13902), rhoAB-DEIS; reference qsh-zh/deis@a30709f ``th_deis/sampler.py`` ``get_sampler_rho_ab``
    (the paper's equation numbers are not cited here: not verified against the paper's text).
    """
    return adams_bashforth_sigma_step(ctx, x, i, ctx.options["order"] + 1)


# ---------------------------------------------------------------------------------------------
# deis: tAB-DEIS, polynomial in the VP time t integrated against the VP schedule.
# ---------------------------------------------------------------------------------------------

#: Gauss–Legendre rule for the tAB-DEIS coefficients: 32 nodes per panel, panels <= 0.25 wide in
#: sqrt(t). With these, int sigma'(t) dt reproduces sigma_{i+1} - sigma_i to ~1e-15 relative even
#: for one step from sigma = 80 to 0. DEIS itself uses a 10,000-point left Riemann sum in t, a
#: first-order rule (relative error ~1e-4, and no good near the t^(-1/2) singularity at t = 0).
_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(32)
_GL_PANEL = 0.25


def _vp_dsigma_dsqrt_t(s: np.ndarray, beta_d: float, beta_min: float) -> np.ndarray:
    """d sigma(t)/d sqrt(t) at sqrt(t) = s for EDM's VP sigma(t) = sqrt(exp(beta_d t^2/2 + beta_min t) - 1).

    In u = sqrt(t) the integrand is smooth up to t = 0, where sigma'(t) ~ 1/sqrt(t) is singular;
    that is what makes the step onto sigma = 0 integrable to round-off with Gauss–Legendre.
    """
    t = s * s
    q = 0.5 * beta_d * t * t + beta_min * t
    return s * np.exp(q) * (beta_d * t + beta_min) / np.sqrt(np.expm1(q))


def tab_deis_coefficients(t_nodes, t_from: float, t_to: float, dsigma: float, beta_d: float, beta_min: float):
    """``[int_{t_from}^{t_to} sigma'(t) l_j(t) dt for j]``, l_j the Lagrange basis in t on ``t_nodes``.

    Integrated in u = sqrt(t) with composite Gauss–Legendre. The basis sums to 1, so the exact
    total ``dsigma = sigma_to - sigma_from`` fixes the first coefficient (which makes order r = 0
    exactly DDIM and keeps the step consistent whatever the quadrature error).
    """
    u_from, u_to = math.sqrt(t_from), math.sqrt(t_to)
    panels = max(1, math.ceil(abs(u_to - u_from) / _GL_PANEL))
    edges = np.linspace(u_from, u_to, panels + 1)
    half = 0.5 * (edges[1:] - edges[:-1])
    u = (0.5 * (edges[1:] + edges[:-1]))[:, None] + half[:, None] * _GL_NODES[None, :]
    weights = (half[:, None] * _GL_WEIGHTS[None, :]) * _vp_dsigma_dsqrt_t(u, beta_d, beta_min)
    t = u * u
    coeffs = [0.0]
    for j, tj in enumerate(t_nodes):
        if j == 0:
            continue
        basis = np.ones_like(t)
        for k, tk in enumerate(t_nodes):
            if k != j:
                basis = basis * (t - tk) / (tj - tk)
        coeffs.append(float(np.sum(weights * basis)))
    coeffs[0] = dsigma - math.fsum(coeffs[1:])
    return coeffs


def _deis_init(ctx, x):
    """Every step's coefficients, computed once per grid and options (as DEIS does), in float64."""
    ctx.state["deis_coeffs"] = ctx.cached("deis", lambda: _deis_coefficients(ctx))


def _deis_coefficients(ctx) -> list[list[float]]:
    r, beta_d, beta_min = ctx.options["order"], ctx.options["beta_d"], ctx.options["beta_min"]
    t = [float(v) for v in schedules.vp_time(ctx.sigmas, beta_d, beta_min)]
    coeffs = []
    for i in range(ctx.steps):
        degree = min(i, r)
        nodes = [t[i - k] for k in range(degree + 1)]
        coeffs.append(tab_deis_coefficients(nodes, t[i], t[i + 1], ctx.sigmas[i + 1] - ctx.sigmas[i], beta_d, beta_min))
    return coeffs


@register(
    "deis",
    order=lambda opts: opts["order"] + 1,
    paper="Zhang & Chen, 'Fast Sampling of Diffusion Models with Exponential Integrator' (arXiv 2204.13902), tAB-DEIS",
    description="tAB-DEIS: eps extrapolated by a degree-r polynomial in VP time t, integrated exactly "
    "against the VP schedule; 1 NFE/step.",
    options={
        "order": Option(3, int, "DEIS order r: degree of the eps polynomial in t (r+1 stored eps; global order r+1); "
                        "DEIS README default ab_order=3", low=0, high=3),
        "beta_d": Option(schedules.VP_BETA_D, float, "VP schedule beta_d (= beta_1 - beta_0) of the t <-> sigma map",
                         low=0.0, open_low=True),
        "beta_min": Option(schedules.VP_BETA_MIN, float, "VP schedule beta_min (= beta_0) of the t <-> sigma map",
                           low=0.0),
    },
    init=_deis_init,
)
def deis(ctx, x, i):
    """x_{i+1} = x_i + sum_j C_ij eps_{i-j}, C_ij = int_{t_i}^{t_{i+1}} sigma'(t) l_j(t) dt.

    This is DEIS's VP update ``Psi x + sum C eps`` divided by alpha_{i+1} (docs/solvers.md, deis);
    t(sigma) is EDM's VP time (``schedules.vp_time``). ``order`` is DEIS's ``ab_order`` r, the polynomial degree, so the global order is r + 1; step i uses degree ``min(i, r)``.
    Zhang & Chen (arXiv 2204.13902), tAB-DEIS; reference qsh-zh/deis@a30709f ``th_deis/sampler.py``
    ``get_sampler_t_ab`` with ``th_deis/multistep.py`` ``get_ab_eps_coef`` (which integrates C_ij by a
    10,000-point Riemann sum; here exactly).
    """
    coeffs = ctx.state["deis_coeffs"][i]
    history = _eps_history(ctx, x, i, ctx.options["order"] + 1)
    return _combine(x, coeffs, history)


# ---------------------------------------------------------------------------------------------
# ipndm: fixed Adams–Bashforth weights on the DDIM step.
# ---------------------------------------------------------------------------------------------

#: Uniform-step Adams–Bashforth weights, newest eps first (Liu et al. PNDM; DEIS ``get_sampler_ipndm``).
IPNDM_WEIGHTS = {
    1: (1.0,),
    2: (3 / 2, -1 / 2),
    3: (23 / 12, -16 / 12, 5 / 12),
    4: (55 / 24, -59 / 24, 37 / 24, -9 / 24),
}


@register(
    "ipndm",
    # Declared: what holds on the grids sampler-bench builds (none is uniform in sigma), see below.
    order=lambda opts: min(opts["order"], 2),
    paper="Zhang & Chen (arXiv 2204.13902), improved PNDM; Liu et al., 'Pseudo Numerical Methods for "
    "Diffusion Models on Manifolds' (arXiv 2202.09778)",
    description="iPNDM: fixed uniform-step Adams–Bashforth weights on eps times the DDIM step; global order 2 "
    "on non-uniform grids (nominal order 4 needs equal sigma steps); 1 NFE/step.",
    options={"order": Option(4, int, "number of stored eps (fixed Adams–Bashforth weights of this order)",
                             low=1, high=4)},
)
def ipndm(ctx, x, i):
    """x_{i+1} = x_i + (sigma_{i+1} - sigma_i) sum_j w_j eps_{i-j}, w = [1], [3,-1]/2, [23,-16,5]/12, [55,-59,37,-9]/24.

    In the unscaled state DEIS's DDIM coefficient is ``sigma_{i+1} - sigma_i``, so these are exact
    Adams–Bashforth weights only when the sigma steps are equal (then iPNDM *is* ``lms``, nominal
    order ``order``). On any other smooth grid (Karras, log-SNR, EDM VP/VE, DEIS's own uniform-t
    grid: every schedule in sampler_bench) the fixed weights miss the step-size ratios by O(h), the
    first-moment condition fails at O(h^3) per step, and the global order is 2 for ``order >= 2``.
    That is the declared order (``min(order, 2)``); tests/test_solver_properties.py measures it on
    the Karras grid and checks iPNDM == lms on a sigma-uniform grid. (Even there the warm start's
    first Euler step caps the strict N -> infinity order at 2 unless its error is damped, as it is
    from sigma_max = 80.) Zhang & Chen (arXiv 2204.13902), improved PNDM: PNDM's PLMS weights (Liu et al.,
    arXiv 2202.09778, eqs. 12-13) on DEIS's DDIM step with an Adams warm start; reference qsh-zh/deis@a30709f
    ``th_deis/sampler.py`` ``get_sampler_ipndm``.
    """
    order = ctx.options["order"]
    history = _eps_history(ctx, x, i, order)
    step = ctx.sigmas[i + 1] - ctx.sigmas[i]
    return _combine(x, [step * w for w in IPNDM_WEIGHTS[min(i + 1, order)]], history)


# ---------------------------------------------------------------------------------------------
# ipndm_v: diff-sampler's variable-step iPNDM.
# ---------------------------------------------------------------------------------------------


def ipndm_v_weights(steps: list[float], order: int) -> list[float]:
    """diff-sampler's variable-step iPNDM weights on (eps_i, eps_{i-1}, ...), newest first.

    ``steps`` are the sigma steps h_n = sigma_{i+1} - sigma_i, h_{n-1} = sigma_i - sigma_{i-1}, ...
    (``order`` of them). The reference builds the weights as Adams–Bashforth 2 plus multiples
    (``temp1``, ``temp2``) of the second and third backward differences of eps:

    * order 2 is exact variable-step Adams–Bashforth;
    * order 3: ``temp1`` is 5/12 on uniform steps (AB3) but not the variable-step AB3 weight; the
      defect vanishes with the step-size variation, so on smooth grids the method is third order,
      while on an uneven grid it integrates only polynomials of degree 1 exactly;
    * order 4: the ``temp2`` term is not a third difference: on uniform steps it is 11/24 of one
      (AB4 needs 3/8: weights (57, -65, 43, -11)/24 instead of (55, -59, 37, -9)/24), and where the
      step ratio changes from step to step (Karras grids) its weights do not even sum to zero, so
      the weights of the step miss 1 by O(h^2): globally second order on such grids, third order on
      grids with a constant step ratio (uniform or geometric in sigma).
    """
    h = steps
    if order == 1:
        return [1.0]
    r = h[0] / h[1]
    if order == 2:
        return [1.0 + 0.5 * r, -0.5 * r]
    # Ratios of the recent steps that the second and third differences are built from.
    t1 = (1.0 - h[0] / (3.0 * (h[0] + h[1])) * (h[0] * (h[0] + h[1])) / (h[1] * (h[1] + h[2]))) / 2.0
    if order == 3:
        return [1.0 + 0.5 * r + t1, -0.5 * r - (1.0 + h[1] / h[2]) * t1, t1 * h[1] / h[2]]
    a = h[0] + h[1]
    b = h[1] * (h[1] + h[2]) / (h[2] * (h[2] + h[3]))
    t2 = ((1.0 - h[0] / (3.0 * a)) / 2.0 + (1.0 - h[0] / (2.0 * a)) * h[0] / (6.0 * (a + h[2]))) * (
        h[0] * a * (a + h[2])) / (h[1] * (h[1] + h[2]) * (h[1] + h[2] + h[3]))
    return [
        1.0 + 0.5 * r + t1 + t2,
        -0.5 * r - (1.0 + h[1] / h[2]) * t1 - (1.0 + h[1] / h[2] + b) * t2,
        t1 * h[1] / h[2] + (h[1] / h[2] + b * (1.0 + h[2] / h[3])) * t2,
        -t2 * b * h[1] / h[2],
    ]


def _ipndm_v_coefficients(sigmas, order: int) -> list[list[float]]:
    out = []
    for i in range(len(sigmas) - 1):
        k = min(i + 1, order)
        steps = [sigmas[i + 1 - j] - sigmas[i - j] for j in range(k)]
        out.append([(sigmas[i + 1] - sigmas[i]) * w for w in ipndm_v_weights(steps, k)])
    return out


#: Global order of ipndm_v by its ``order`` option on smooth grids whose step ratio varies (Karras);
#: see :func:`ipndm_v_weights`.
IPNDM_V_ORDER = {1: 1, 2: 2, 3: 3, 4: 2}


@register(
    "ipndm_v",
    order=lambda opts: IPNDM_V_ORDER[opts["order"]],
    paper="Zhou et al., 'Fast ODE-based Sampling for Diffusion Models in Around 5 Steps' (arXiv 2312.00094), "
    "diff-sampler (zju-pi) variable-step iPNDM; Zhang & Chen (arXiv 2204.13902) iPNDM",
    description="diff-sampler's variable-step iPNDM: Adams–Bashforth-like weights built from the step ratios "
    "(exact variable-step AB at order 2 only; the default order 4 is second order on Karras grids); the step "
    "onto sigma=0 is the denoise; 1 NFE/step.",
    options={"order": Option(4, int, "maximum number of stored eps (max_order)", low=1, high=4)},
)
def ipndm_v(ctx, x, i):
    """x_{i+1} = x_i + (sigma_{i+1} - sigma_i) sum_j w_j eps_{i-j}, w from :func:`ipndm_v_weights`.

    The variable-step iPNDM of Zhou et al.'s diff-sampler (arXiv 2312.00094; DEIS's iPNDM, Zhang & Chen,
    arXiv 2204.13902, with weights from the step ratios; no equation in either paper states these weights).
    Reference: zju-pi/diff-sampler@68d5ce4 ``diff-solvers-main/solvers.py`` ``ipndm_v_sampler`` (as ported to
    ComfyUI ``sample_ipndm_v``, comfyanonymous/ComfyUI@02159d81 ``comfy/k_diffusion/sampling.py``):
    step i uses ``min(order, i + 1)`` eps; onto sigma = 0 it returns the denoiser output.
    Declared global order (``IPNDM_V_ORDER``): ``order`` for 1-3; 2 for the default order 4, whose
    weights miss consistency by O(h^2) where the step ratio varies (see :func:`ipndm_v_weights`);
    tests measure the global order on the Karras grid and the one-step order.
    """
    order = ctx.options["order"]
    s, t = ctx.sigmas[i], ctx.sigmas[i + 1]
    denoised = ctx.model(x, s)
    history = ctx.history.push(s, (x - denoised) / s, order)
    if t == 0.0:
        return denoised
    coeffs = ctx.cached(("ipndm_v", order), lambda: _ipndm_v_coefficients(ctx.sigmas, order))[i]
    return _combine(x, coeffs, history)


# ---------------------------------------------------------------------------------------------
# gradient_estimation: Permenter & Yuan's extrapolated denoiser step.
# ---------------------------------------------------------------------------------------------


@register(
    "gradient_estimation",
    order=1,
    paper="Permenter & Yuan, 'Interpreting and Improving Diffusion Models from an Optimization Perspective' "
    "(arXiv 2306.04848), §5 (the gradient-estimation sampler)",
    description="Gradient estimation: Euler with eps replaced by gamma*eps_i + (1-gamma)*eps_{i-1} (gamma=2); "
    "first order on general grids; the step onto sigma=0 is the denoise; 1 NFE/step.",
    options={"gamma": Option(2.0, float, "extrapolation weight gamma of the current eps (1 = euler)", low=0.0,
                             open_low=True)},
)
def gradient_estimation(ctx, x, i):
    """x_{i+1} = x_i + (sigma_{i+1} - sigma_i) (gamma eps_i + (1 - gamma) eps_{i-1}); step 0 is Euler.

    Permenter & Yuan (arXiv 2306.04848) §5: the denoiser error is estimated from the last two
    steps, ``eps_bar = gamma eps_t + (1 - gamma) eps_{t+1}``. As ComfyUI ``sample_gradient_estimation``
    (comfyanonymous/ComfyUI@02159d81 ``comfy/k_diffusion/sampling.py``): onto sigma = 0 it returns the
    denoiser output. Read as a two-step method on dx/dsigma = eps it is consistent but second order
    only when gamma = 1 + (sigma_{i-1} - sigma_i)/(2 (sigma_i - sigma_{i+1})) (gamma = 3/2 on a
    sigma-uniform grid), so its global order is 1 (local error O(h^2)); tests measure both.
    """
    s, t = ctx.sigmas[i], ctx.sigmas[i + 1]
    denoised = ctx.model(x, s)
    eps = (x - denoised) / s
    history = ctx.history.push(s, eps, keep=2)
    if t == 0.0:
        return denoised
    if len(history) < 2:
        return x + (t - s) * eps
    gamma = ctx.options["gamma"]
    return x + (t - s) * (gamma * history[0] + (1.0 - gamma) * history[1])


# ---------------------------------------------------------------------------------------------
# pndm: PNDM / PLMS with its pseudo Runge–Kutta warm-up.
# ---------------------------------------------------------------------------------------------

#: Steps of PNDM's pseudo Runge–Kutta warm-up (4 evaluations each) before the 4-point PLMS steps.
PNDM_WARMUP = 3


def _pndm_nfe(steps: int, ends_at_zero: bool, opts) -> int:
    """4 evaluations per warm-up step, 1 per PLMS step (the step onto sigma = 0 is a PLMS step too)."""
    warmup = min(steps, PNDM_WARMUP)
    return 4 * warmup + (steps - warmup)


@register(
    "pndm",
    order=2,
    paper="Liu et al., 'Pseudo Numerical Methods for Diffusion Models on Manifolds' (arXiv 2202.09778), "
    "transfer function eq. (9) with its pseudo Runge–Kutta and pseudo linear multistep methods (§3), "
    "as diffusers' PNDMScheduler",
    description="PNDM: three pseudo Runge–Kutta (4-evaluation) warm-up steps, then PLMS (fixed 4-point "
    "Adams–Bashforth weights on eps times the DDIM step); NFE = steps + 9, at least 13; second order on non-uniform grids.",
    options={
        "midpoints": Option(None, "float_list", "noise levels of the three Runge–Kutta midpoints (default: "
                            "sqrt(sigma_i sigma_{i+1}), the midpoint in log sigma)", low=0.0, open_low=True,
                            nullable=True),
    },
    nfe=_pndm_nfe,
    # The warm-up and at least one PLMS step, as diffusers' PNDMScheduler (which fails below 4 steps). On
    # coarser grids a warm-up step spans most of the noise range and, with eps evaluated at the step's
    # small end, blows up: on gmm2d over karras(2, 0.002, 80) the samples reach |x| ~ 5e4.
    min_steps=lambda opts: PNDM_WARMUP + 1,
)
def pndm(ctx, x, i):
    """PNDM in the unscaled state, where its transfer function phi (DDIM, PNDM eq. 9) is
    ``phi(x, e, s -> t) = x + (t - s) e``:

    * steps 0-2, pseudo Runge–Kutta (PNDM §3; diffusers ``step_prk``), m the step's midpoint:
      e1 = eps(x, s), e2 = eps(phi(x, e1, s -> m), m), e3 = eps(phi(x, e2, s -> m), m),
      e4 = eps(phi(x, e3, s -> t), t), x' = phi(x, (e1 + 2 e2 + 2 e3 + e4)/6, s -> t);
    * later steps, PLMS (PNDM §3; diffusers ``step_plms``): e' = (55 e_i - 59 e_{i-1} + 37 e_{i-2}
      - 9 e_{i-3})/24 over the eps at the last four grid points (the warm-up's e1's included),
      x' = phi(x, e', s -> t). The step onto sigma = 0 is the same PLMS step, as in diffusers.

    A grid needs at least 4 steps (13 NFE), as diffusers' ``set_timesteps``: 3 warm-up steps and one
    PLMS step; smaller budgets are refused.

    diffusers places the midpoints at the discrete timestep halfway between the step's ends; here
    they are an option (``midpoints``; tests pass diffusers' levels and match PNDMScheduler). The
    fixed weights are Adams–Bashforth weights only for equal sigma steps, so, as ``ipndm``, PNDM is
    globally second order on the grids sampler-bench builds. NFE = steps + 9.

    Liu et al. (arXiv 2202.09778) eqs. 9, 12-13 and Alg. 2: the transfer function and the pseudo
    Runge–Kutta / pseudo linear multistep updates, the equations diffusers' PNDMScheduler names
    (huggingface/diffusers@58eb52c ``src/diffusers/schedulers/scheduling_pndm.py``).
    """
    s, t = ctx.sigmas[i], ctx.sigmas[i + 1]
    history = _eps_history(ctx, x, i, 4)
    if i >= PNDM_WARMUP:
        return _combine(x, [(t - s) * w for w in IPNDM_WEIGHTS[4]], history)
    midpoints = ctx.options["midpoints"]
    if midpoints is not None and len(midpoints) != PNDM_WARMUP:
        raise SolverOptionError(f"solver {ctx.name!r}: option midpoints needs {PNDM_WARMUP} noise levels (one per "
                                f"Runge–Kutta warm-up step), got {len(midpoints)}")
    m = math.sqrt(s * t) if midpoints is None else midpoints[i]
    if not t < m < s:
        raise SolverOptionError(f"solver {ctx.name!r}: midpoint {m!r} of warm-up step {i + 1} must lie strictly "
                                f"between its noise levels {s!r} and {t!r}")
    e1 = history[0]
    e2 = _eps(ctx, x + (m - s) * e1, m)
    e3 = _eps(ctx, x + (m - s) * e2, m)
    e4 = _eps(ctx, x + (t - s) * e3, t)
    return x + (t - s) / 6.0 * (e1 + 2.0 * e2 + 2.0 * e3 + e4)


def _eps(ctx, x, sigma: float):
    return (x - ctx.model(x, sigma)) / sigma


# ---------------------------------------------------------------------------------------------
# deis_logrho: Adams–Bashforth in rho = sigma with eps a polynomial in log rho (diffusers' DEIS).
# ---------------------------------------------------------------------------------------------


def log_rho_integrals(nodes, a: float, b: float) -> list[float]:
    """``[int_a^b l_j(log s) ds for j]``, l_j the Lagrange basis in u = log(sigma) on ``nodes`` (sigmas).

    Exact: with u = log(a) + v, the integrand e^u l_j(u) is e^{log a} e^v q_j(v) for a polynomial
    q_j, and int_0^H e^v v^m dv = [e^v sum_k (-1)^k m!/(m-k)! v^(m-k)]_0^H with H = log(b/a).
    """
    base = math.log(a)
    v = [math.log(n) - base for n in nodes]
    H = math.log(b / a)
    moments = []  # int_0^H e^v v^m dv
    for m in range(len(nodes)):
        at_h = math.exp(H) * sum((-1) ** k * math.factorial(m) / math.factorial(m - k) * H ** (m - k)
                                 for k in range(m + 1))
        at_0 = (-1) ** m * math.factorial(m)
        moments.append(at_h - at_0)
    out = []
    for j, vj in enumerate(v):
        poly, denominator = [1.0], 1.0
        for k, vk in enumerate(v):
            if k == j:
                continue
            poly = [(poly[m - 1] if m > 0 else 0.0) - vk * (poly[m] if m < len(poly) else 0.0)
                    for m in range(len(poly) + 1)]
            denominator *= vj - vk
        out.append(a * sum(c * mom for c, mom in zip(poly, moments)) / denominator)
    return out


def _deis_logrho_coefficients(sigmas, order: int, lower_order_final: bool) -> list[list[float]]:
    out = []
    steps = len(sigmas) - 1
    for i in range(steps):
        k = min(i + 1, order)
        if lower_order_final:
            k = min(k, steps - i)
        if sigmas[i + 1] == 0.0:  # onto sigma = 0 (log rho unbounded): the denoise, in the step itself
            out.append([])
            continue
        out.append(log_rho_integrals([sigmas[i - j] for j in range(k)], sigmas[i], sigmas[i + 1]))
    return out


@register(
    "deis_logrho",
    # A first-order last step (lower_order_final) caps the global order at 2, as for dpmpp_3m and unipc.
    order=lambda opts: min(opts["order"], 2) if opts["lower_order_final"] else opts["order"],
    paper="Zhang & Chen, 'Fast Sampling of Diffusion Models with Exponential Integrator' (arXiv 2204.13902), "
    "rhoAB-DEIS with the eps polynomial taken in log rho, as diffusers' DEISMultistepScheduler "
    "(solver_type='logrho')",
    description="log-rho DEIS (diffusers' DEISMultistepScheduler): Adams–Bashforth in rho = sigma with eps "
    "interpolated in log rho, order = number of points (diffusers default 2); 1 NFE/step.",
    options={
        "order": Option(2, int, "number of stored eps (diffusers solver_order); global order", low=1, high=3),
        "lower_order_final": Option(False, bool, "the last two steps use orders 1 and min(order, 2) (diffusers "
                                    "default True, applied there only below 15 steps)"),
    },
)
def deis_logrho(ctx, x, i):
    """xh_{i+1} = xh_i + sum_j C_ij eps_{i-j}, C_ij = int_{sigma_i}^{sigma_{i+1}} l_j(log rho) drho.

    DEIS (Zhang & Chen, arXiv 2204.13902) rhoAB in the unscaled state v = x/alpha (rho = sigma), with the
    extrapolation polynomial of eps taken in log rho (diffusers' form, not in the paper):
    huggingface/diffusers@58eb52c ``src/diffusers/schedulers/scheduling_deis_multistep.py``
    ``multistep_deis_second_order_update`` and ``..._third_order_update`` (its ``ind_fn`` is the antiderivative of these Lagrange terms). Warm start with
    ``min(i + 1, order)`` points, as diffusers' ``lower_order_nums``; ``lower_order_final`` lowers the
    last two steps as diffusers does (which it applies only when there are fewer than 15 steps).
    The step onto sigma = 0 (where log rho is unbounded) is the denoise. Coefficients are exact
    (:func:`log_rho_integrals`), once per grid.
    """
    order = ctx.options["order"]
    if ctx.sigmas[i + 1] == 0.0:
        return ctx.model(x, ctx.sigmas[i])
    history = _eps_history(ctx, x, i, order)
    coeffs = ctx.cached(("deis_logrho", order), lambda: _deis_logrho_coefficients(
        ctx.sigmas, order, ctx.options["lower_order_final"]))[i]
    return _combine(x, coeffs, history)
