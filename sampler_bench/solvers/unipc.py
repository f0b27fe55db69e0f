"""UniPC: unified predictor-corrector multistep sampler (Zhao et al., arXiv 2302.04867).

Data-prediction form (``algorithm_type='data_prediction'``) of the reference code's
``multistep_uni_pc_bh_update`` and ``sample(method='multistep')`` (docs/solvers.md, UniPC),
written in the unscaled state (divide the VP update by alpha_t). With lambda = -log(sigma),
h = lambda_{i+1} - lambda_i, D_i the stored denoiser outputs and r_k = (lambda_{i-k} - lambda_i)/h:

    x_pred = (sigma_{i+1}/sigma_i) x_i + (1 - e^{-h}) D_i - B(h) sum_{k<p} rho^P_k (D_{i-k} - D_i)/r_k    (UniP-p)
    x_corr = (sigma_{i+1}/sigma_i) x_i + (1 - e^{-h}) D_i
             - B(h) [sum_{k<p} rho^C_k (D_{i-k} - D_i)/r_k + rho^C_p (D(x_pred, sigma_{i+1}) - D_i)]      (UniC-p)

B(h) = -h ('bh1') or expm1(-h) ('bh2'); rho^P, rho^C solve R rho = b with R_{jk} = r_k^{j-1} and
b_j = j! (-h) phi_{j+1}(-h) / B(h) (phi the exponential-integrator phi-functions); the reference
code fixes rho^P = [1/2] for p = 2 and rho^C = [1/2] for p = 1, and so does this module.

The corrector's denoiser value at the *predicted* state is reused as the model value of the
corrected state at the next step (the reference code's ``model_prev_list[-1] = model_x``), so UniPC
costs one NFE per step, and there is no corrector on the last step: NFE = steps.
"""

from __future__ import annotations

import math

import numpy as np

from .registry import Option, register


def phi(k: int, z: float) -> float:
    """The exponential-integrator phi-function phi_k(z) = sum_n z^n/(n+k)!, accurate for every z.

    The recursion phi_{k+1} = (phi_k - 1/k!)/z (what the reference code runs) loses about
    k*log10(1/|z|) digits for small steps (docs/findings.md, "Pitfalls": precision); the series does not.
    """
    if abs(z) < 1.0:
        term = 1.0 / math.factorial(k)
        total = term
        for n in range(1, 40):
            term *= z / (n + k)
            total += term
            if abs(term) < 1e-17 * abs(total):
                break
        return total
    value = math.expm1(z) / z  # phi_1
    for j in range(1, k):
        value = (value - 1.0 / math.factorial(j)) / z
    return value


def unipc_coefficients(rks: list[float], h: float, variant: str, order: int):
    """(B(h), rho_predictor, rho_corrector) for one UniPC step of order ``order``.

    ``rks`` are the p - 1 ratios r_k = (lambda_{prev_k} - lambda_i)/h (negative); the corrector adds
    r_p = 1 for the new point. Data prediction: hh = -h.
    """
    hh = -h
    B = hh if variant == "bh1" else math.expm1(hh)
    # b_j = psi_j * j! / B with psi_j = hh * phi_{j+1}(hh) (the reference's h_phi_k recursion).
    b = np.array([hh * phi(j + 1, hh) * math.factorial(j) / B for j in range(1, order + 1)])
    r = np.array(list(rks) + [1.0])
    R = np.stack([r ** (j - 1) for j in range(1, order + 1)])
    if order == 1:
        rho_p, rho_c = np.zeros(0), np.array([0.5])
    else:
        rho_p = np.array([0.5]) if order == 2 else np.linalg.solve(R[:-1, :-1], b[:-1])
        rho_c = np.linalg.solve(R, b)
    return B, [float(v) for v in rho_p], [float(v) for v in rho_c]


def _step_order(ctx, i: int) -> int:
    order = ctx.options["order"]
    p = min(i + 1, order)  # warm start: 1, 2, ..., order
    if ctx.options["lower_order_final"]:
        p = min(p, ctx.steps - i)  # UniPC repo: always, final steps 2 then 1
    return p


def _grid_coefficients(ctx) -> list:
    """``(p, r_k, B, rho_P, rho_C)`` of every step onto sigma > 0, once per grid and options (``ctx.cached``).

    They depend on the grid only (lambda_k = -log(sigma_k)), not on the state, so a sweep solves the
    small linear systems once per (schedule, solver) instead of once per batch.
    """
    out = []
    for i in range(ctx.steps):
        s, s_next = ctx.sigmas[i], ctx.sigmas[i + 1]
        if s_next == 0:
            out.append(None)  # the final denoise needs no coefficients
            continue
        p = _step_order(ctx, i)
        lam = -math.log(s)
        h = math.log(s / s_next)
        rks = [(-math.log(ctx.sigmas[i - k]) - lam) / h for k in range(1, p)]
        out.append((p, rks, *unipc_coefficients(rks, h, ctx.options["variant"], p)))
    return out


def _unipc_init(ctx, x):
    ctx.state["cached"] = None  # the corrector's D at the current sigma, if any


def _declared_order(opts) -> int:
    """p + 1 with the corrector, p without; at most 2 with ``lower_order_final`` (its first-order last
    step is an O(h^2) local error on a grid ending at sigma_min > 0)."""
    order = opts["order"] + (1 if opts["use_corrector"] else 0)
    return min(order, 2) if opts["lower_order_final"] else order


@register(
    "unipc",
    order=_declared_order,
    paper="Zhao, Bai, Rao, Zhou, Lu, 'UniPC: A Unified Predictor-Corrector Framework for Fast Sampling of "
    "Diffusion Models' (arXiv 2302.04867)",
    description="UniPC multistep (data prediction): UniP-p predictor + UniC-p corrector reusing the model "
    "value, bh1/bh2; 1 NFE/step.",
    options={
        "order": Option(3, int, "UniP order p (3 in the reference CIFAR-10 config)", low=1, high=3),
        "variant": Option("bh1", str, "B(h) = h ('bh1', unconditional) or e^h - 1 ('bh2', guided)",
                          choices=("bh1", "bh2")),
        "use_corrector": Option(True, bool, "apply UniC (true: UniPC, order p+1) or only UniP (false: order p)"),
        "lower_order_final": Option(True, bool, "lower the order of the final steps, min(order, steps - i) "
                                    "(UniPC repo: always on, no steps < 10 condition)"),
    },
    init=_unipc_init,
    min_steps=lambda opts: opts["order"],
    # the step onto 0 returns the corrector's D of the step before: no evaluation of its own
    final_step_nfe=lambda opts: 0 if opts["use_corrector"] else 1,
)
def unipc(ctx, x, i):
    """One UniPC step sigma_i -> sigma_{i+1} (reference: ``UniPC.sample``, ``multistep_uni_pc_bh_update``).

    Zhao et al. (arXiv 2302.04867): UniP-p and UniC-p with B(h) = h or e^h - 1 (§3), order p + 1 with the
    corrector (Thm 3.1); reference wl-zhao/UniPC@cf9de85 ``uni_pc.py`` ``multistep_uni_pc_bh_update``.

    * Warm start: step i uses order min(i + 1, order), with the corrector.
    * ``lower_order_final=True`` (reference default, UniPC repo rule): order min(order, steps - i),
      so the last step is first order. That last step is an O(h^2) local error, which caps the
      global order at 2 on a grid ending at sigma_min > 0 (on a grid ending at 0 every solver's last
      step is a denoise anyway).
    * No corrector on the last step (the reference's ``use_corrector = step < steps``).
    * Onto sigma = 0 (h = infinity; the reference code never goes there, it ends at t_eps) the step is
      the limit of the first-order update, x = D(x_i, sigma_i), as k-diffusion does; no log(0).
    * Declared order: p + 1 with the corrector, p without (UniPC paper, Thm 3.1/3.3; diffusers:
      "effective order solver_order + 1"), capped at 2 with ``lower_order_final=True`` (so the default,
      the reference CIFAR-10 configuration order=3/bh1/lower_order_final, declares 2; UniPC-3 proper
      is ``lower_order_final=False``, order 4).
    """
    s, s_next = ctx.sigmas[i], ctx.sigmas[i + 1]
    m0 = ctx.state["cached"]
    if m0 is None:
        m0 = ctx.model(x, s)
    ctx.state["cached"] = None
    models = ctx.history.push(s, m0, ctx.options["order"])  # denoiser outputs, newest first
    if s_next == 0:
        return m0

    p, rks, B, rho_p, rho_c = ctx.cached("unipc", lambda: _grid_coefficients(ctx))[i]
    d1s = [(models[k] - m0) / rk for k, rk in zip(range(1, p), rks)]
    h = math.log(s / s_next)

    x_base = (s_next / s) * x + (-math.expm1(-h)) * m0  # the DDIM (first-order) part
    x_pred = x_base
    if rho_p:
        x_pred = x_base - B * sum(rho * d1 for rho, d1 in zip(rho_p, d1s))
    if not ctx.options["use_corrector"] or i == ctx.steps - 1:
        return x_pred

    m_next = ctx.model(x_pred, s_next)
    ctx.state["cached"] = m_next
    correction = sum((rho * d1 for rho, d1 in zip(rho_c[:-1], d1s)), rho_c[-1] * (m_next - m0))
    return x_base - B * correction
