"""DPM-Solver singlestep (noise prediction) and k-diffusion's ``dpm_2``, in the unscaled state (xh, sigma).

DPM-Solver (Lu et al., arXiv 2206.00927) integrates the probability-flow ODE exactly in its linear
part, in lambda = -log(sigma), and Taylor-expands the noise prediction eps = (xh - D)/sigma:

    xh_t = xh_s - int_{lambda_s}^{lambda_t} e^{-lambda} eps dlambda            (docs/notation.md)

With h = lambda_t - lambda_s = log(sigma_s / sigma_t), intermediate points at fractions r of h,
sigma_r = sigma_s e^{-r h}, and sigma_t expm1(h) = sigma_s - sigma_t, the k-stage updates are
docs/solvers.md in xh form (DPMS ``singlestep_dpm_solver_*_update`` divided by alpha_t).

This module also holds the *DPM-Solver-fast* order split (paper §3.3, DPMS
``get_orders_and_timesteps_for_singlestep_solver``) shared with the DPM-Solver++ singlestep solvers
in :mod:`sampler_bench.solvers.dpmpp`: every singlestep solver takes an explicit per-step ``orders``
option, and ``plan(name, nfe)`` fills it in through the registry's ``steps_for_nfe`` hook.

Where the intermediate points go (option ``inner``): 'lambda' puts them at the fixed fractions
``r1``, ``r2`` of h (DPMS on its logSNR grid); 'vp_time' and 'vp_time_quadratic' put them on a grid
uniform in the VP time t (or in sqrt(t)) between the step's ends, so r1, r2 change from step to step:
DPMS ``sample(method='singlestep')`` does that for its time_uniform and time_quadratic skip types.
On those schedules ``plan`` also takes the outer points as DPMS does, from the NFE-point grid at the
cumulative sums of the per-step orders (``singlestep_plan_grid``), so a planned run reproduces the
reference there.

The step onto sigma = 0 (h = infinity) is always a single first-order denoise, ``xh = D``
(docs/findings.md, "Pitfalls"; no log(0) is ever taken). Scalar coefficients are Python floats
(float64); tensor work is kept to one kernel per term so the per-step overhead stays small.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import torch

from ..vp import VP_BETA_D, VP_BETA_MIN, vp_sigma, vp_time
from .registry import Option, SolverOptionError, register
from .updates import first_order_update, lincomb

#: Inner-point rules: 'lambda' (fixed fractions r1, r2), or a grid uniform in VP time t / sqrt(t).
INNER_RULES = ("lambda", "vp_time", "vp_time_quadratic")
#: The schedules on which DPMS places the inner points in time, and the rule each implies.
DPMS_TIME_SCHEDULES = {"vp_time_uniform": "vp_time", "vp_time_quadratic": "vp_time_quadratic"}

DPM_SOLVER_PAPER = (
    "Lu et al., 'DPM-Solver: A Fast ODE Solver for Diffusion Probabilistic Model Sampling' (arXiv 2206.00927)"
)

# ---------------------------------------------------------------------------------------------
# Tensor helpers shared by every exponential integrator (also imported by dpmpp.py).
# ---------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------
# DPM-Solver-fast: per-step orders for a budget, and the option/NFE/plan plumbing around them.
# ---------------------------------------------------------------------------------------------


def fast_orders(order: int, nfe: int) -> list[int]:
    """DPM-Solver-fast's per-step orders for ``nfe`` evaluations (docs/solvers.md, DPMS ``sample``).

    order 3: K = nfe//3 + 1 steps, [3]*(K-2)+[2,1] if nfe%3 == 0, [3]*(K-1)+[1] if nfe%3 == 1,
    [3]*(K-1)+[2] if nfe%3 == 2; order 2: [2]*(nfe/2) if nfe is even, else [2]*(nfe//2)+[1];
    order 1: [1]*nfe. The orders always sum to ``nfe``.
    """
    if nfe < 1:
        raise ValueError(f"an NFE budget must be >= 1, got {nfe}")
    if order == 1:
        return [1] * nfe
    if order == 2:
        return [2] * (nfe // 2) + [1] * (nfe % 2)
    if order == 3:
        k = nfe // 3 + 1
        if nfe % 3 == 0:
            return [3] * (k - 2) + [2, 1]
        return [3] * (k - 1) + [nfe % 3]
    raise ValueError(f"DPM-Solver-fast is defined for orders 1..3, got {order}")


def singlestep_options(order: int, r1: float, r2: float | None = None) -> dict[str, Option]:
    """The options every k-stage singlestep solver (DPM-Solver-k, DPM-Solver++(kS)) shares."""
    opts = {
        "r1": Option(r1, float, f"first intermediate point, as a fraction of h in lambda (order-{order} steps)",
                     low=0.0, open_low=True, high=1.0),
    }
    if r2 is not None:
        opts["r2"] = Option(r2, float, "second intermediate point, as a fraction of h (order-3 steps; > r1)",
                            low=0.0, open_low=True, high=1.0)
    opts.update({
        "solver_type": Option("dpmsolver", str, "how the higher-order terms are formed (DPMS solver_type)",
                              choices=("dpmsolver", "taylor")),
        "orders": Option(None, "int_list", "order of each step (one entry per step; DPM-Solver-fast when "
                         "planned from a budget); default: every step of order "
                         f"{order} except the single denoise onto sigma=0", low=1, high=order, nullable=True),
        "split": Option("fast", str, "how plan() spends an NFE budget: 'fast' = DPM-Solver-fast order split, "
                        f"'fixed' = floor(NFE/{order}) steps all of order {order} (DPMS 'singlestep_fixed')",
                        choices=("fast", "fixed")),
        "inner": Option("lambda", str, "where the intermediate points go: 'lambda' = at r1, r2 of h; 'vp_time' / "
                        "'vp_time_quadratic' = on a grid uniform in VP time t / sqrt(t) between the step's ends, "
                        "per-step r's as DPM-Solver on its time_uniform / time_quadratic grids (plan() sets it there)",
                        choices=INNER_RULES),
        "beta_d": Option(VP_BETA_D, float, "VP schedule beta_d of the t <-> sigma map (inner='vp_time*')",
                         low=0.0, open_low=True),
        # negative values are valid fits (see schedules._vp_power_t)
        "beta_min": Option(VP_BETA_MIN, float, "VP schedule beta_min of the t <-> sigma map (inner='vp_time*')"),
    })
    return opts


def check_fractions(name: str, opts: Mapping[str, Any]) -> None:
    """r1 < r2 (the intermediate points must be distinct and ordered); one readable error otherwise."""
    if "r2" in opts and not opts["r1"] < opts["r2"]:
        raise SolverOptionError(
            f"solver {name!r}: the intermediate points need r1 < r2, got r1={opts['r1']!r}, r2={opts['r2']!r}"
        )


def _check_orders(name: str, orders: Sequence[int], steps: int, ends_at_zero: bool) -> None:
    if len(orders) != steps:
        raise SolverOptionError(
            f"solver {name!r}: option orders has {len(orders)} entries (summing to {sum(orders)} NFE) but the "
            f"grid has {steps} steps; give one order per step, or build grid and orders together with "
            f"sampler_bench.solvers.plan({name!r}, nfe)"
        )
    if ends_at_zero and orders[-1] != 1:
        raise SolverOptionError(
            f"solver {name!r}: the grid ends at sigma=0, and the step onto sigma=0 is a single first-order "
            f"denoise, so the last entry of orders must be 1 (got {orders[-1]})"
        )


def step_orders(name: str, order: int, opts: Mapping[str, Any], steps: int, ends_at_zero: bool) -> list[int]:
    """The order of every step: the ``orders`` option (checked), else ``order`` with a final denoise."""
    orders = opts.get("orders")
    if orders is None:
        return [order] * (steps - 1) + [1 if ends_at_zero else order]
    _check_orders(name, orders, steps, ends_at_zero)
    return list(orders)


def singlestep_nfe(name: str, order: int):
    """The exact NFE law: the sum of the step orders (the step onto sigma=0 costs one evaluation)."""

    def nfe(steps: int, ends_at_zero: bool, opts: Mapping[str, Any]) -> int:
        return sum(step_orders(name, order, opts, steps, ends_at_zero))

    return nfe


def singlestep_order_of(order: int):
    """Global order for given options.

    A step of order p has local error O(h^{p+1}); a bounded number of lower-order steps (as in
    DPM-Solver-fast, at most two) therefore caps the global order at ``min(orders) + 1``.
    """

    def order_of(opts: Mapping[str, Any]) -> int:
        orders = opts.get("orders")
        return order if orders is None else min(max(orders), min(orders) + 1)

    return order_of


def singlestep_steps_for_nfe(name: str, order: int):
    """The registry's ``steps_for_nfe`` hook: NFE budget -> (steps, option updates).

    ``split='fast'``: DPM-Solver-fast's K steps and orders (:func:`fast_orders`). On a grid ending at
    sigma=0 the step onto 0 is a 1-NFE denoise; when the split ends with an order-2 step (order 3 with
    nfe%3 == 2, order 2 with even nfe) that last step becomes the denoise and the plan spends nfe-1
    (the plan note says so), exactly like Heun's 2N-1 on such grids.
    ``split='fixed'``: floor(nfe/order) steps of ``order`` (DPMS 'singlestep_fixed'; the step onto 0
    is still the 1-NFE denoise), which may leave evaluations unspent; the plan note says how many.
    """

    def steps_for_nfe(budget: int, ends_at_zero: bool, opts: Mapping[str, Any]):
        check_fractions(name, opts)
        if opts["orders"] is not None:
            cost = sum(opts["orders"])
            if cost > budget:
                raise SolverOptionError(
                    f"solver {name!r}: option orders costs {cost} NFE, more than the budget of {budget}"
                )
            return len(opts["orders"]), {}
        if opts["split"] == "fixed":
            steps = budget // order
            if steps < 1:
                raise SolverOptionError(
                    f"solver {name!r}: split='fixed' needs a budget of at least {order} NFE "
                    f"(one order-{order} step), got {budget}; use split='fast' or a larger budget"
                )
            return steps, {}
        orders = fast_orders(order, budget)
        if ends_at_zero and orders[-1] != 1:
            orders[-1] = 1
        return len(orders), {"orders": orders}

    return steps_for_nfe


def step_fractions(sigmas: Sequence[float], orders: Sequence[int], opts: Mapping[str, Any], r_order2: float):
    """Per step, the intermediate points as fractions of h in lambda: ``()``, ``(r1,)`` or ``(r1, r2)``.

    inner='lambda': the fixed ``r1``, ``r2`` (order-2 steps use ``r_order2``). inner='vp_time' /
    'vp_time_quadratic' (DPMS ``sample(method='singlestep')``): the step's ends in VP time t (or
    sqrt(t)) are split into ``order`` equal parts, and r_k = (lambda(t_k) - lambda_s)/h with
    lambda = -log(sigma(t)). Steps onto sigma = 0 and first-order steps have none.
    """
    out = []
    for i, order in enumerate(orders):
        s, t = sigmas[i], sigmas[i + 1]
        if order == 1 or t == 0.0:
            out.append(())
        elif opts["inner"] == "lambda":
            out.append((r_order2,) if order == 2 else (opts["r1"], opts["r2"]))
        else:
            power = 1.0 if opts["inner"] == "vp_time" else 2.0
            ends = vp_time([s, t], opts["beta_d"], opts["beta_min"]).tolist()
            a, b = ends[0] ** (1.0 / power), ends[1] ** (1.0 / power)
            inner_t = [(a + (b - a) * k / order) ** power for k in range(1, order)]
            inner_sigma = vp_sigma(inner_t, opts["beta_d"], opts["beta_min"]).tolist()
            h = math.log(s / t)
            out.append(tuple(math.log(s / v) / h for v in inner_sigma))
    return out


def singlestep_init(order: int, r_order2: float | None):
    """Per-run set-up: resolve and check the per-step orders and inner fractions once, before the first step.

    ``r_order2``: the fraction of order-2 steps under inner='lambda' (None: the ``r1`` option).
    """

    def init(ctx, x) -> None:
        check_fractions(ctx.name, ctx.options)

        def compute():
            orders = step_orders(ctx.name, order, ctx.options, ctx.steps, ctx.sigmas[-1] == 0.0)
            r2 = ctx.options["r1"] if r_order2 is None else r_order2
            return orders, step_fractions(ctx.sigmas, orders, ctx.options, r2)

        ctx.state["orders"], ctx.state["fractions"] = ctx.cached(("orders", order), compute)

    return init


def singlestep_plan_grid(order: int):
    """The registry's ``plan_grid`` hook: the grid (and option updates) ``plan`` hands the solver.

    On DPMS's time grids (``vp_time_uniform``, ``vp_time_quadratic``) with the 'fast' split or explicit
    ``orders``, the outer points are those of the NFE-point grid at the cumulative sums of the per-step
    orders (DPMS ``get_orders_and_timesteps_for_singlestep_solver``), and ``inner`` follows the
    schedule (unless given). Elsewhere: the ``steps``-step grid of the schedule, as for any solver.
    """

    def plan_grid(schedule: str, build, steps: int, ends_at_zero: bool, opts: Mapping[str, Any], given: Mapping):
        rule = DPMS_TIME_SCHEDULES.get(schedule)
        if rule is None:
            return build(steps), {}
        updates = {} if "inner" in given else {"inner": rule}
        if opts["orders"] is None:  # split='fixed': K steps of the schedule, inner points in time
            return build(steps), updates
        orders = list(opts["orders"])
        fine = build(sum(orders))
        index = [0]
        for o in orders:
            index.append(index[-1] + o)
        return fine[index], updates

    return plan_grid


def register_singlestep(name: str, *, order: int, r1: float, r2: float | None, paper: str, description: str,
                        r_order2: float | None):
    """Register a k-stage singlestep solver with the shared options, NFE law, order and budget hooks."""
    return register(
        name,
        order=singlestep_order_of(order),
        nfe_per_step=order,
        paper=paper,
        description=description,
        options=singlestep_options(order, r1, r2),
        nfe=singlestep_nfe(name, order),
        init=singlestep_init(order, r_order2),
        steps_for_nfe=singlestep_steps_for_nfe(name, order),
        plan_grid=singlestep_plan_grid(order),
    )


# ---------------------------------------------------------------------------------------------
# The noise-prediction updates (docs/solvers.md, xh form).
# ---------------------------------------------------------------------------------------------


def dpm_solver_2_update(ctx, x, denoised, s: float, t: float, r1: float, solver_type: str):
    """Singlestep DPM-Solver-2 from sigma s to t > 0 (DPMS ``singlestep_dpm_solver_second_update``).

        u = xh_s - (s - s1) eps_s,                 s1 = s e^{-r1 h}
        'dpmsolver': xh_t = xh_s - t phi_1 eps_s - (1/(2 r1)) t phi_1 (eps_s1 - eps_s)
        'taylor':    xh_t = xh_s - t phi_1 eps_s - (1/r1) t (phi_1/h - 1) (eps_s1 - eps_s)

    with phi_1 = expm1(h). For r1 = 1/2 ('dpmsolver') this is the midpoint rule in log sigma,
    ``xh_t = xh_s + (t - s) eps(u, sqrt(s t))`` = k-diffusion's ``dpm_2``.
    """
    h = math.log(s / t)
    s1 = s * math.exp(-r1 * h)
    phi_1 = math.expm1(h)
    u = first_order_update(x, denoised, s, s1)  # xh_s - (s - s1) eps_s
    e_s = x - denoised  # s * eps_s; the 1/sigma of each eps is folded into its coefficient
    e_1 = u - ctx.model(u, s1)  # s1 * eps_s1
    if solver_type == "dpmsolver":
        b = t * phi_1 / (2.0 * r1)
    else:
        b = t * (phi_1 / h - 1.0) / r1
    # xh_t = xh_s - (t phi_1 - b) eps_s - b eps_s1
    return lincomb([(1.0, x), (-(t * phi_1 - b) / s, e_s), (-b / s1, e_1)])


def dpm_solver_3_update(ctx, x, denoised, s: float, t: float, r1: float, r2: float, solver_type: str):
    """Singlestep DPM-Solver-3 from sigma s to t > 0 (DPMS ``singlestep_dpm_solver_third_update``).

        u1 = xh_s - (s - s1) eps_s
        u2 = xh_s - (s - s2) eps_s - (r2/r1) s2 phi_22 (eps_s1 - eps_s),   phi_22 = expm1(r2 h)/(r2 h) - 1
        'dpmsolver': xh_t = xh_s - t phi_1 eps_s - (1/r2) t phi_2 (eps_s2 - eps_s)
        'taylor':    xh_t = xh_s - t phi_1 eps_s - t phi_2 D1 - t phi_3 D2, with
                     D1_0 = (eps_s1 - eps_s)/r1, D1_1 = (eps_s2 - eps_s)/r2,
                     D1 = (r2 D1_0 - r1 D1_1)/(r2 - r1), D2 = 2 (D1_1 - D1_0)/(r2 - r1)

    with phi_1 = expm1(h), phi_2 = phi_1/h - 1, phi_3 = phi_2/h - 1/2 and s_k = s e^{-r_k h}.
    """
    h = math.log(s / t)
    s1, s2 = s * math.exp(-r1 * h), s * math.exp(-r2 * h)
    phi_1 = math.expm1(h)
    phi_2 = phi_1 / h - 1.0
    phi_3 = phi_2 / h - 0.5
    phi_22 = math.expm1(r2 * h) / (r2 * h) - 1.0
    e_s = x - denoised
    u1 = first_order_update(x, denoised, s, s1)
    e_1 = u1 - ctx.model(u1, s1)
    c = (r2 / r1) * s2 * phi_22  # weight of (eps_s1 - eps_s) in u2
    u2 = lincomb([(1.0, x), (-((s - s2) - c) / s, e_s), (-c / s1, e_1)])
    e_2 = u2 - ctx.model(u2, s2)
    if solver_type == "dpmsolver":
        b1, b2 = 0.0, t * phi_2 / r2
    else:  # expand D1 and D2 into weights of (eps_s1 - eps_s) and (eps_s2 - eps_s)
        b1 = t * (phi_2 * r2 / r1 - 2.0 * phi_3 / r1) / (r2 - r1)
        b2 = t * (-phi_2 * r1 / r2 + 2.0 * phi_3 / r2) / (r2 - r1)
    # xh_t = xh_s - (t phi_1 - b1 - b2) eps_s - b1 eps_s1 - b2 eps_s2
    return lincomb([(1.0, x), (-(t * phi_1 - b1 - b2) / s, e_s), (-b1 / s1, e_1), (-b2 / s2, e_2)])


def singlestep_step(ctx, x, i, update_2, update_3):
    """One singlestep step of order ``ctx.state['orders'][i]`` with the family's 2nd/3rd-order updates.

    Shared by DPM-Solver (noise prediction) and DPM-Solver++ (data prediction): order 1 and the step
    onto sigma = 0 (h = infinity) are the first-order update; the intermediate points are the step's
    ``ctx.state['fractions'][i]`` (:func:`step_fractions`).
    """
    s, t = ctx.sigmas[i], ctx.sigmas[i + 1]
    order = ctx.state["orders"][i]
    denoised = ctx.model(x, s)
    if order == 1 or t == 0.0:
        return first_order_update(x, denoised, s, t)
    fractions = ctx.state["fractions"][i]
    if order == 2:
        return update_2(ctx, x, denoised, s, t, fractions[0], ctx.options["solver_type"])
    return update_3(ctx, x, denoised, s, t, fractions[0], fractions[1], ctx.options["solver_type"])


def _dpm_solver_step(ctx, x, i):
    return singlestep_step(ctx, x, i, dpm_solver_2_update, dpm_solver_3_update)


# ---------------------------------------------------------------------------------------------
# Registered solvers.
# ---------------------------------------------------------------------------------------------


@register(
    "dpm_2",
    order=2,
    nfe_per_step=2,
    paper="k-diffusion sample_dpm_2 ('DPM-Solver-2 inspired', Crowson); Lu et al. arXiv 2206.00927; "
    "Karras et al. arXiv 2206.00364 Alg. 2",
    description="k-diffusion's midpoint in log sigma (= DPM-Solver-2, r1=1/2); Euler onto sigma=0 (2N-1 NFE).",
)
def dpm_2(ctx, x, i):
    """sigma_mid = exp((log s + log s')/2); x2 = x + (sigma_mid - s) d; x' = x + (s' - s) d(x2, sigma_mid).

    docs/solvers.md (dpm_2); onto sigma = 0 a single Euler step (the denoise), as in k-diffusion.
    k-diffusion's ``sample_dpm_2`` ("inspired by DPM-Solver-2 and Algorithm 2 from Karras et al."): the
    stage point of DPM-Solver-2 (Lu et al., arXiv 2206.00927, Alg. 1 with r1 = 1/2, the midpoint in
    lambda = -log sigma), but both substeps are Euler steps on dx/dsigma = (x - D)/sigma (EDM, arXiv
    2206.00364, eq. 1 and Alg. 2's step structure) rather than the exponential-integrator update.
    """
    s, t = ctx.sigmas[i], ctx.sigmas[i + 1]
    denoised = ctx.model(x, s)
    if t == 0.0:
        return first_order_update(x, denoised, s, t)
    sigma_mid = math.exp(0.5 * (math.log(s) + math.log(t)))
    x_mid = first_order_update(x, denoised, s, sigma_mid)  # x + (sigma_mid - s) (x - D)/s
    # x + (t - s) (x_mid - D(x_mid))/sigma_mid
    return torch.add(x, x_mid - ctx.model(x_mid, sigma_mid), alpha=(t - s) / sigma_mid)


@register(
    "dpm_solver_1",
    order=1,
    paper=DPM_SOLVER_PAPER,
    description="DPM-Solver-1: first-order exponential integrator (= DDIM = Euler in (x, sigma)).",
)
def dpm_solver_1(ctx, x, i):
    """``xh_t = xh_s - sigma_t expm1(h) eps_s`` = ``(t/s) xh_s + (1 - t/s) D_s`` (docs/solvers.md, euler).

    DPM-Solver-1 (Lu et al., arXiv 2206.00927: the exact solution eq. 3.4 with eps frozen at s, the k = 1
    member of §3.2's family) divided by alpha_t; identical to DDIM (eta = 0).
    """
    s, t = ctx.sigmas[i], ctx.sigmas[i + 1]
    return first_order_update(x, ctx.model(x, s), s, t)


@register_singlestep(
    "dpm_solver_2", order=2, r1=0.5, r2=None, paper=DPM_SOLVER_PAPER, r_order2=None,
    description="Singlestep DPM-Solver-2 (noise prediction), r1=1/2 in lambda; planned budgets use DPM-Solver-fast.",
)
def dpm_solver_2(ctx, x, i):
    """DPM-Solver-2 (arXiv 2206.00927 Alg. 1); see :func:`dpm_solver_2_update`.

    Options: ``r1`` (default 1/2), ``solver_type`` 'dpmsolver'|'taylor', per-step ``orders`` (1 or 2),
    ``split`` for budgets. NFE = sum(orders); by default 2 per step and 1 for the denoise onto 0.
    """
    return _dpm_solver_step(ctx, x, i)


@register_singlestep(
    "dpm_solver_3", order=3, r1=1.0 / 3.0, r2=2.0 / 3.0, paper=DPM_SOLVER_PAPER, r_order2=0.5,
    description="Singlestep DPM-Solver-3 (noise prediction), r1=1/3, r2=2/3; planned budgets use DPM-Solver-fast.",
)
def dpm_solver_3(ctx, x, i):
    """DPM-Solver-3 (arXiv 2206.00927 Alg. 2); see :func:`dpm_solver_3_update`.

    Options: ``r1``, ``r2`` (defaults 1/3, 2/3; order-2 steps use r1 = 1/2), ``solver_type``,
    per-step ``orders`` (1..3), ``split``. ``plan('dpm_solver_3', nfe)`` gives DPM-Solver-fast:
    K = nfe//3 + 1 steps with orders [3]*(K-2)+[2,1] / [3]*(K-1)+[1] / [3]*(K-1)+[2] for
    nfe%3 = 0 / 1 / 2 (on a grid ending at 0 the last step is the 1-NFE denoise).
    """
    # Order-2 steps use the midpoint r1 = 1/2 under inner='lambda', as DPMS does (its logSNR sub-grid
    # of 2 points) and k-diffusion's dpm_solver_fast (dpm_solver_2_step's default).
    return _dpm_solver_step(ctx, x, i)
