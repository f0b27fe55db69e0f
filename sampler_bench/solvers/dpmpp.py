"""DPM-Solver++ (data prediction), singlestep 2S/3S and multistep 2M/3M, in the unscaled state (xh, sigma).

DPM-Solver++ (Lu et al., arXiv 2211.01095) integrates the probability-flow ODE exactly in its linear
part in lambda = -log(sigma) and Taylor-expands the *denoiser* D instead of the noise:

    xh_t = (sigma_t/sigma_s) xh_s + sigma_t int_{lambda_s}^{lambda_t} e^{lambda} D dlambda   (docs/notation.md)

With h = log(sigma_s/sigma_t) and the data-form phi functions phi_1 = expm1(-h), phi_2 = phi_1/h + 1,
phi_3 = phi_2/h - 1/2, the updates are those of docs/solvers.md (DPMS ``dpmsolver++`` code divided by
alpha_t): every one of them reads ``xh_t = (t/s) xh_s - phi_1 D_s + (higher-order corrections)``.

Singlestep solvers share DPM-Solver's per-step ``orders`` / ``split`` machinery
(:mod:`sampler_bench.solvers.dpm_solver`). Multistep solvers keep their past denoiser outputs in
``ctx.state`` and warm-start with orders 1, 2, ... . Every step onto sigma = 0 is the single
first-order denoise ``xh = D`` (h = infinity; docs/findings.md, "Pitfalls"), as in k-diffusion.
"""

from __future__ import annotations

import math

from .dpm_solver import register_singlestep, singlestep_step
from .updates import first_order_update, lincomb
from .registry import Option, register

DPMPP_PAPER = (
    "Lu et al., 'DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic Models' (arXiv 2211.01095)"
)

# ---------------------------------------------------------------------------------------------
# Singlestep DPM-Solver++(2S) and (3S) (docs/solvers.md).
# ---------------------------------------------------------------------------------------------


def dpmpp_2s_update(ctx, x, denoised, s: float, t: float, r1: float, solver_type: str):
    """DPM-Solver++(2S) from sigma s to t > 0 (DPMS ``singlestep_dpm_solver_second_update``, data form).

        u = (s1/s) xh_s - expm1(-r1 h) D_s,      s1 = s e^{-r1 h}
        'dpmsolver': xh_t = (t/s) xh_s - phi_1 D_s - (1/(2 r1)) phi_1 (D_s1 - D_s)
        'taylor':    xh_t = (t/s) xh_s - phi_1 D_s + (1/r1) (phi_1/h + 1) (D_s1 - D_s)

    For r1 = 1/2 ('dpmsolver') this is ``(t/s) xh_s - phi_1 D(u, sqrt(s t))``, k-diffusion's
    ``sample_dpmpp_2s_ancestral`` with eta = 0.
    """
    h = math.log(s / t)
    s1 = s * math.exp(-r1 * h)
    phi_1 = math.expm1(-h)
    u = first_order_update(x, denoised, s, s1)
    denoised_1 = ctx.model(u, s1)
    b = -0.5 * phi_1 / r1 if solver_type == "dpmsolver" else (phi_1 / h + 1.0) / r1
    # xh_t = (t/s) xh_s - (phi_1 + b) D_s + b D_s1
    return lincomb([(t / s, x), (-phi_1 - b, denoised), (b, denoised_1)])


def dpmpp_3s_update(ctx, x, denoised, s: float, t: float, r1: float, r2: float, solver_type: str):
    """DPM-Solver++(3S) from sigma s to t > 0 (DPMS ``singlestep_dpm_solver_third_update``, data form).

        u1 = (s1/s) xh_s - expm1(-r1 h) D_s
        u2 = (s2/s) xh_s - expm1(-r2 h) D_s + (r2/r1) phi_22 (D_s1 - D_s),   phi_22 = expm1(-r2 h)/(r2 h) + 1
        'dpmsolver': xh_t = (t/s) xh_s - phi_1 D_s + (1/r2) phi_2 (D_s2 - D_s)
        'taylor':    xh_t = (t/s) xh_s - phi_1 D_s + phi_2 D1 - phi_3 D2, with
                     D1_0 = (D_s1 - D_s)/r1, D1_1 = (D_s2 - D_s)/r2,
                     D1 = (r2 D1_0 - r1 D1_1)/(r2 - r1), D2 = 2 (D1_1 - D1_0)/(r2 - r1)
    """
    h = math.log(s / t)
    s1, s2 = s * math.exp(-r1 * h), s * math.exp(-r2 * h)
    phi_1 = math.expm1(-h)
    phi_2 = phi_1 / h + 1.0
    phi_3 = phi_2 / h - 0.5
    phi_12 = math.expm1(-r2 * h)
    phi_22 = phi_12 / (r2 * h) + 1.0
    u1 = first_order_update(x, denoised, s, s1)
    denoised_1 = ctx.model(u1, s1)
    c = (r2 / r1) * phi_22
    u2 = lincomb([(s2 / s, x), (-phi_12 - c, denoised), (c, denoised_1)])
    denoised_2 = ctx.model(u2, s2)
    if solver_type == "dpmsolver":
        b1, b2 = 0.0, phi_2 / r2
    else:  # expand D1 and D2 into weights of (D_s1 - D_s) and (D_s2 - D_s)
        b1 = (phi_2 * r2 / r1 + 2.0 * phi_3 / r1) / (r2 - r1)
        b2 = -(phi_2 * r1 / r2 + 2.0 * phi_3 / r2) / (r2 - r1)
    # xh_t = (t/s) xh_s - (phi_1 + b1 + b2) D_s + b1 D_s1 + b2 D_s2
    return lincomb([(t / s, x), (-phi_1 - b1 - b2, denoised), (b1, denoised_1), (b2, denoised_2)])


def _dpmpp_singlestep(ctx, x, i):
    return singlestep_step(ctx, x, i, dpmpp_2s_update, dpmpp_3s_update)


@register_singlestep(
    "dpmpp_2s", order=2, r1=0.5, r2=None, paper=DPMPP_PAPER, r_order2=None,
    description="Singlestep DPM-Solver++(2S) (data prediction), r1=1/2 in lambda; "
    "= k-diffusion dpmpp_2s_ancestral(eta=0).",
)
def dpmpp_2s(ctx, x, i):
    """DPM-Solver++(2S) (arXiv 2211.01095 Alg. 1; docs/solvers.md); see :func:`dpmpp_2s_update`.

    Defaults reproduce k-diffusion's ``sample_dpmpp_2s_ancestral(eta=0)``: every step second order with
    r1 = 1/2, the step onto sigma=0 a single denoise (2N-1 NFE to zero, 2N otherwise). Options as
    DPM-Solver-2: ``r1``, ``solver_type``, per-step ``orders`` (1 or 2), ``split``.
    """
    return _dpmpp_singlestep(ctx, x, i)


@register_singlestep(
    "dpmpp_3s", order=3, r1=1.0 / 3.0, r2=2.0 / 3.0, paper=DPMPP_PAPER, r_order2=0.5,
    description="Singlestep DPM-Solver++(3S) (data prediction), r1=1/3, r2=2/3; planned budgets use DPM-Solver-fast.",
)
def dpmpp_3s(ctx, x, i):
    """DPM-Solver++(3S) (arXiv 2211.01095; docs/solvers.md); see :func:`dpmpp_3s_update`.

    DPM-Solver-3's stages (Lu et al., arXiv 2206.00927, Alg. 2, r1 = 1/3, r2 = 2/3) applied to
    DPM-Solver++'s data-prediction form of the exact solution (arXiv 2211.01095, §4), as the reference
    ``singlestep_dpm_solver_third_update`` with ``algorithm_type='dpmsolver++'`` (LuChengTHU/dpm-solver
    @52bc3fb ``dpm_solver_pytorch.py``).

    Options as DPM-Solver-3: ``r1``, ``r2`` (order-2 steps use r1 = 1/2), ``solver_type``, per-step
    ``orders`` (1..3), ``split`` ('fast' = DPM-Solver-fast split when planned from a budget).
    """
    return _dpmpp_singlestep(ctx, x, i)


# ---------------------------------------------------------------------------------------------
# Multistep DPM-Solver++(2M) and (3M) (docs/solvers.md).
# ---------------------------------------------------------------------------------------------

LOWER_ORDER_FINAL_DOC = (
    "lower the order of the last steps: step i of N uses order min(order, i+1, N-i) "
    "(DPMS rule, applied at every step count); false: only the warm start and the denoise onto 0 are lower order"
)


def multistep_order(ctx, i: int, order: int) -> int:
    """Order of step ``i``: warm start min(order, i + 1); with ``lower_order_final`` also <= steps - i.

    ``lower_order_final`` (docs/findings.md, "Pitfalls") is implemented three ways in the wild: DPMS
    lowers with ``min(order, steps + 1 - step)`` but only when steps < 10 (its docstring says < 15,
    diffusers uses < 15), UniPC always, k-diffusion only on the step onto sigma = 0. Here:

    * ``False`` (default): k-diffusion's rule. The only lower-order steps are the warm start and
      the step onto sigma = 0, which is always the first-order denoise (h = infinity), so
      ``dpmpp_2m`` equals ``sample_dpmpp_2m`` on every grid and 3M keeps its global order 3.
    * ``True``: DPMS's ``min(order, steps - i)`` at *every* step count. A threshold on the step
      count would make one option mean different things at different budgets of a sweep.

    On a grid ending at sigma_min > 0, ``True`` makes the last step first order: a single O(h^2)
    local error, which lowers the measured global order of 3M to 2 (2M stays 2); order tests use
    the default ``False``.
    """
    current = min(order, i + 1)
    if ctx.options["lower_order_final"]:
        current = min(current, ctx.steps - i)
    return current


def _denoised_history(ctx, i: int, denoised, keep: int) -> list:
    """Record step ``i``'s D as the newest in ``ctx.history``; keep ``keep`` of them (values, newest first)."""
    return ctx.history.push(ctx.sigmas[i], denoised, keep)


def dpmpp_2m_update(x, m0, m1, s_prev: float, s: float, t: float, variant: str):
    """DPM-Solver++(2M) from sigma s to t > 0 with D at s (m0) and at the previous level s_prev (m1).

        r0 = h_0/h,  D1_0 = (m0 - m1)/r0
        'dpmsolver': xh_t = (t/s) xh_s - phi_1 m0 - (1/2) phi_1 D1_0      (= k-diffusion sample_dpmpp_2m)
        'taylor':    xh_t = (t/s) xh_s - phi_1 m0 + (phi_1/h + 1) D1_0
    """
    h = math.log(s / t)
    r0 = math.log(s_prev / s) / h
    phi_1 = math.expm1(-h)
    b = -0.5 * phi_1 / r0 if variant == "dpmsolver" else (phi_1 / h + 1.0) / r0
    # xh_t = (t/s) xh_s + (b - phi_1) m0 - b m1
    return lincomb([(t / s, x), (b - phi_1, m0), (-b, m1)])


def dpmpp_3m_update(x, m0, m1, m2, s_prev2: float, s_prev: float, s: float, t: float, d2: str = "reference"):
    """DPM-Solver++(3M) from sigma s to t > 0 with D at s, s_prev, s_prev2 (DPMS ``multistep_..._third_update``).

        r0 = h_0/h, r1 = h_1/h, D1_0 = (m0 - m1)/r0, D1_1 = (m1 - m2)/r1,
        D1 = D1_0 + r0/(r0 + r1) (D1_0 - D1_1),  D2 = (D1_0 - D1_1)/(r0 + r1),
        xh_t = (t/s) xh_s - phi_1 m0 + phi_2 D1 - phi_3 D2

    ``d2='reference'`` is that formula, as in DPMS, k-diffusion's ``sample_dpmpp_3m_sde(eta=0)`` and
    diffusers. It is only second order: a Taylor expansion D = m0 + D' (l - l0) + D'' (l - l0)^2/2
    gives the exact weight -phi_3 h^2 on D'' (the same phi_3 the singlestep 3S uses, whose D2 is
    ~ h^2 D''), but here D2 = h^2 D''/2 + O(h^3), so every step has an O(h^3) local error.
    ``d2='corrected'`` uses D2 = 2 (D1_0 - D1_1)/(r0 + r1): exact for D quadratic in lambda, third
    order (tests/test_dpm_solver.py measures both slopes).
    """
    h = math.log(s / t)
    r0, r1 = math.log(s_prev / s) / h, math.log(s_prev2 / s_prev) / h
    phi_1 = math.expm1(-h)
    phi_2 = phi_1 / h + 1.0
    phi_3 = phi_2 / h - 0.5
    # The differences as coefficient vectors over (m0, m1, m2), so the update is one linear combination.
    d1_0 = (1.0 / r0, -1.0 / r0, 0.0)
    d1_1 = (0.0, 1.0 / r1, -1.0 / r1)
    gap = [a - b for a, b in zip(d1_0, d1_1)]
    d1 = [a + r0 / (r0 + r1) * g for a, g in zip(d1_0, gap)]
    scale = (1.0 if d2 == "reference" else 2.0) / (r0 + r1)
    d2_vec = [scale * g for g in gap]
    c0, c1, c2 = (phi_2 * a - phi_3 * b for a, b in zip(d1, d2_vec))
    return lincomb([(t / s, x), (c0 - phi_1, m0), (c1, m1), (c2, m2)])


@register(
    "dpmpp_2m",
    order=2,
    paper=DPMPP_PAPER,
    description="Multistep DPM-Solver++(2M) (data prediction), warm start with order 1; = k-diffusion dpmpp_2m.",
    options={
        "variant": Option("dpmsolver", str, "form of the second-order term (DPMS solver_type)",
                          choices=("dpmsolver", "taylor")),
        "lower_order_final": Option(False, bool, LOWER_ORDER_FINAL_DOC),
    },
)
def dpmpp_2m(ctx, x, i):
    """DPM-Solver++(2M) (arXiv 2211.01095 Alg. 2; docs/solvers.md); see :func:`dpmpp_2m_update`.

    One evaluation per step (NFE = steps). Step 0 is first order; the step onto sigma=0 is the
    denoise. With the defaults this equals k-diffusion's ``sample_dpmpp_2m`` on any grid.
    ``lower_order_final``: see :func:`multistep_order` (order tests keep the default False).
    """
    s, t = ctx.sigmas[i], ctx.sigmas[i + 1]
    denoised = ctx.model(x, s)
    history = _denoised_history(ctx, i, denoised, 2)
    if t == 0.0 or multistep_order(ctx, i, 2) == 1:
        return first_order_update(x, denoised, s, t)
    return dpmpp_2m_update(x, denoised, history[1], ctx.sigmas[i - 1], s, t, ctx.options["variant"])


@register(
    "dpmpp_3m",
    order=lambda opts: 3 if opts["d2"] == "corrected" and not opts["lower_order_final"] else 2,
    paper=DPMPP_PAPER + "; third-order multistep update of the reference code (LuChengTHU/dpm-solver)",
    description="Multistep DPM-Solver++(3M) (data prediction), warm start with orders 1, 2. The reference "
    "coefficients are second order; d2='corrected' is third order.",
    options={
        "variant": Option("dpmsolver", str, "form of the order-2 (warm-start) steps, as in dpmpp_2m",
                          choices=("dpmsolver", "taylor")),
        "d2": Option("reference", str, "second-difference term: 'reference' = DPMS/k-diffusion/diffusers "
                     "coefficients (global order 2), 'corrected' = twice that (global order 3)",
                     choices=("reference", "corrected")),
        "lower_order_final": Option(False, bool, LOWER_ORDER_FINAL_DOC),
    },
)
def dpmpp_3m(ctx, x, i):
    """DPM-Solver++(3M) (arXiv 2211.01095; DPMS code; docs/solvers.md); see :func:`dpmpp_3m_update`.

    The paper gives the multistep method up to second order (Alg. 2, §4); the third-order update is the
    reference code's ``multistep_dpm_solver_third_update`` (LuChengTHU/dpm-solver@52bc3fb
    ``dpm_solver_pytorch.py``), the same data-prediction exact solution (§4) with D extrapolated
    through three points.

    One evaluation per step. Steps 0 and 1 use orders 1 and 2 (the 2M update of form ``variant``);
    the step onto sigma=0 is the denoise. With ``variant='taylor'`` this equals k-diffusion's
    ``sample_dpmpp_3m_sde(eta=0)``; with the default 'dpmsolver' it follows DPMS's warm start.

    Declared order: the reference coefficients (default ``d2='reference'``) give global order 2,
    not the 3 the name suggests (see :func:`dpmpp_3m_update`); ``d2='corrected'`` gives 3.
    ``lower_order_final=True`` lowers the measured order of the corrected update to 2 on grids
    ending at sigma_min > 0 (see :func:`multistep_order`); order tests keep it False.
    """
    s, t = ctx.sigmas[i], ctx.sigmas[i + 1]
    denoised = ctx.model(x, s)
    history = _denoised_history(ctx, i, denoised, 3)
    order = 1 if t == 0.0 else multistep_order(ctx, i, 3)
    if order == 1:
        return first_order_update(x, denoised, s, t)
    opts = ctx.options
    if order == 2:
        return dpmpp_2m_update(x, denoised, history[1], ctx.sigmas[i - 1], s, t, opts["variant"])
    return dpmpp_3m_update(
        x, denoised, history[1], history[2], ctx.sigmas[i - 2], ctx.sigmas[i - 1], s, t, opts["d2"]
    )


# ---------------------------------------------------------------------------------------------
# RES multistep (ComfyUI's res_multistep, eta = 0).
# ---------------------------------------------------------------------------------------------


@register(
    "res_multistep",
    order=2,
    paper="Zhang et al., 'Improved Order Analysis and Design of Exponential Integrator for Diffusion Models "
    "Sampling' (arXiv 2308.02157), RES second-order multistep, as ComfyUI res_multistep",
    description="RES second-order multistep exponential integrator (data prediction, phi_2 weights); "
    "= dpmpp_2m(variant='taylor'); Euler first step, denoise onto sigma=0; 1 NFE/step.",
)
def res_multistep(ctx, x, i):
    """xh_{i+1} = e^{-h} xh_i + h (b1 D_i + b2 D_{i-1}), b1 = phi_1(-h) - phi_2(-h)/c2, b2 = phi_2(-h)/c2.

    Zhang et al. (arXiv 2308.02157) §4, RES order conditions for the two-step exponential
    integrator, in ComfyUI's form (``res_multistep`` with eta = 0, comfyanonymous/ComfyUI@02159d81
    ``comfy/k_diffusion/sampling.py``): h = lambda_{i+1} - lambda_i, c2 = (lambda_{i-1} - lambda_i)/h
    (< 0), phi_1(z) = expm1(z)/z, phi_2(z) = (phi_1(z) - 1)/z. The first step and the step onto
    sigma = 0 are Euler (= the denoise). Expanding the weights gives exactly DPM-Solver++(2M) in its
    'taylor' form (D linear in lambda integrated exactly), which tests check to round-off.
    Global order 2.
    """
    s, t = ctx.sigmas[i], ctx.sigmas[i + 1]
    denoised = ctx.model(x, s)
    previous = ctx.history[0] if ctx.history else None
    ctx.history.push(s, denoised, keep=1)
    if t == 0.0 or previous is None:
        return first_order_update(x, denoised, s, t)
    h = math.log(s / t)
    c2 = -math.log(ctx.sigmas[i - 1] / s) / h
    phi_1 = math.expm1(-h) / -h
    phi_2 = (phi_1 - 1.0) / -h
    b1, b2 = phi_1 - phi_2 / c2, phi_2 / c2
    return lincomb([(t / s, x), (h * b1, denoised), (h * b2, previous)])
