"""DPM-Solver singlestep on DPM-Solver's own time grids: per-step r1, r2 and the planned outer points.

Reference: LuChengTHU/dpm-solver ``dpm_solver_pytorch.py`` (commit 0fdeb80e): ``sample(method=
'singlestep' | 'singlestep_fixed', skip_type='time_uniform' | 'time_quadratic')`` with
``NoiseScheduleVP('linear')`` (beta_0 = 0.1, beta_1 = 20, i.e. EDM's VP beta_min = 0.1, beta_d = 19.9).
Its loop and updates are transcribed below in VP units (x = alpha * xh, noise or data prediction
wrapped around our denoiser), independently of sampler_bench, and compared in float64 with
``sb.sample`` on the grid and options that ``sb.solvers.plan`` returns for the same NFE.
"""

from __future__ import annotations

import math

import pytest
import torch

import sampler_bench as sb
from sampler_bench.solvers.driver import CountingDenoiser, run_solver

BETA_0, BETA_1 = 0.1, 20.0
SIGMA_MIN, SIGMA_MAX = 0.01, 80.0


# --- NoiseScheduleVP('linear') and the DPMS loop, transcribed -----------------------------------------


def log_alpha(t):
    return -0.25 * t**2 * (BETA_1 - BETA_0) - 0.5 * t * BETA_0


def alpha(t):
    return math.exp(log_alpha(t))


def std(t):
    return math.sqrt(1.0 - math.exp(2.0 * log_alpha(t)))


def lam(t):
    return log_alpha(t) - 0.5 * math.log(1.0 - math.exp(2.0 * log_alpha(t)))


def inverse_lambda(lmb):
    L = math.log1p(math.exp(-2.0 * lmb))  # logaddexp(-2 lambda, 0)
    return 2.0 * L / (math.sqrt(BETA_0**2 + 2.0 * (BETA_1 - BETA_0) * L) + BETA_0)


def time_of_sigma(sigma):  # EDM sigma = std/alpha  <=>  t
    return (math.sqrt(BETA_0**2 + 2.0 * (BETA_1 - BETA_0) * math.log1p(sigma**2)) - BETA_0) / (BETA_1 - BETA_0)


def get_time_steps(skip_type, t_T, t_0, N):
    if skip_type == "time_uniform":
        return torch.linspace(t_T, t_0, N + 1, dtype=torch.float64).tolist()
    return torch.linspace(t_T**0.5, t_0**0.5, N + 1, dtype=torch.float64).pow(2).tolist()


def fast_orders(steps, order):
    if order == 3:
        K = steps // 3 + 1
        return {0: [3] * (K - 2) + [2, 1], 1: [3] * (K - 1) + [1], 2: [3] * (K - 1) + [2]}[steps % 3]
    K = steps // 2 if steps % 2 == 0 else steps // 2 + 1
    return [2] * K if steps % 2 == 0 else [2] * (K - 1) + [1]


class VPModel:
    """Noise and data prediction of a VP model whose x is alpha * xh, from the EDM denoiser."""

    def __init__(self, denoiser):
        self.denoiser, self.calls = denoiser, 0

    def x0_eps(self, x, t):
        self.calls += 1
        a, sigma = alpha(t), std(t) / alpha(t)
        xh = x / a
        d = self.denoiser(xh, torch.full((x.shape[0],), sigma, dtype=x.dtype))
        return d, (xh - d) / sigma


def dpms_update(model, x, s, t, order, r1, r2, plus):
    """DPMS ``singlestep_dpm_solver_{first,second,third}_update`` (solver_type='dpmsolver')."""
    ls, lt = lam(s), lam(t)
    h = lt - ls
    x0_s, eps_s = model.x0_eps(x, s)
    if not plus:
        if order == 1:
            return alpha(t) / alpha(s) * x - std(t) * math.expm1(h) * eps_s
        s1 = inverse_lambda(ls + r1 * h)
        x_s1 = alpha(s1) / alpha(s) * x - std(s1) * math.expm1(r1 * h) * eps_s
        eps_s1 = model.x0_eps(x_s1, s1)[1]
        if order == 2:
            return (alpha(t) / alpha(s) * x - std(t) * math.expm1(h) * eps_s
                    - 0.5 / r1 * std(t) * math.expm1(h) * (eps_s1 - eps_s))
        s2 = inverse_lambda(ls + r2 * h)
        x_s2 = (alpha(s2) / alpha(s) * x - std(s2) * math.expm1(r2 * h) * eps_s
                - r2 / r1 * std(s2) * (math.expm1(r2 * h) / (r2 * h) - 1.0) * (eps_s1 - eps_s))
        eps_s2 = model.x0_eps(x_s2, s2)[1]
        return (alpha(t) / alpha(s) * x - std(t) * math.expm1(h) * eps_s
                - 1.0 / r2 * std(t) * (math.expm1(h) / h - 1.0) * (eps_s2 - eps_s))
    if order == 1:
        return std(t) / std(s) * x - alpha(t) * math.expm1(-h) * x0_s
    s1 = inverse_lambda(ls + r1 * h)
    x_s1 = std(s1) / std(s) * x - alpha(s1) * math.expm1(-r1 * h) * x0_s
    x0_s1 = model.x0_eps(x_s1, s1)[0]
    if order == 2:
        return (std(t) / std(s) * x - alpha(t) * math.expm1(-h) * x0_s
                - 0.5 / r1 * alpha(t) * math.expm1(-h) * (x0_s1 - x0_s))
    s2 = inverse_lambda(ls + r2 * h)
    x_s2 = (std(s2) / std(s) * x - alpha(s2) * math.expm1(-r2 * h) * x0_s
            + r2 / r1 * alpha(s2) * (math.expm1(-r2 * h) / (r2 * h) + 1.0) * (x0_s1 - x0_s))
    x0_s2 = model.x0_eps(x_s2, s2)[0]
    return (std(t) / std(s) * x - alpha(t) * math.expm1(-h) * x0_s
            + 1.0 / r2 * alpha(t) * (math.expm1(-h) / h + 1.0) * (x0_s2 - x0_s))


def dpms_singlestep(model, x, steps, order, skip_type, method, plus):
    """DPMS ``sample(method='singlestep' | 'singlestep_fixed')`` from t_T to t_0 (no denoise_to_zero)."""
    t_T, t_0 = time_of_sigma(SIGMA_MAX), time_of_sigma(SIGMA_MIN)
    if method == "singlestep":
        orders = fast_orders(steps, order)
        base = get_time_steps(skip_type, t_T, t_0, steps)
        outer, k = [base[0]], 0
        for o in orders:
            k += o
            outer.append(base[k])
    else:
        K = steps // order
        orders, outer = [order] * K, get_time_steps(skip_type, t_T, t_0, K)
    for step, o in enumerate(orders):
        s, t = outer[step], outer[step + 1]
        inner = get_time_steps(skip_type, s, t, o)
        lam_inner = [lam(v) for v in inner]
        h = lam_inner[-1] - lam_inner[0]
        r1 = None if o <= 1 else (lam_inner[1] - lam_inner[0]) / h
        r2 = None if o <= 2 else (lam_inner[2] - lam_inner[0]) / h
        x = dpms_update(model, x, s, t, o, r1, r2, plus)
    return x, outer


# --- the comparison ---------------------------------------------------------------------------------------

CASES = [
    (name, nfe, schedule, split)
    for name in ("dpm_solver_2", "dpm_solver_3", "dpmpp_2s", "dpmpp_3s")
    for nfe in (10, 11)
    for schedule in ("vp_time_uniform", "vp_time_quadratic")
    for split in ("fast", "fixed")
]


@pytest.mark.parametrize("name, nfe, schedule, split", CASES)
def test_planned_singlestep_reproduces_dpm_solver_on_its_time_grids(name, nfe, schedule, split, gmm3d):
    order = int(name[-1]) if name.startswith("dpm_solver") else int(name[-2])
    plan = sb.solvers.plan(name, nfe, schedule=schedule, sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX,
                           ends_at_zero=False, split=split)
    xh = SIGMA_MAX * torch.randn(5, 3, generator=torch.Generator().manual_seed(41), dtype=torch.float64)
    model = CountingDenoiser(gmm3d)
    ours = run_solver(name, model, xh, plan.sigmas, options=plan.options)

    reference = VPModel(gmm3d)
    skip = "time_uniform" if schedule == "vp_time_uniform" else "time_quadratic"
    a_T = alpha(time_of_sigma(SIGMA_MAX))
    x_end, outer = dpms_singlestep(reference, a_T * xh, nfe, order, skip,
                                   "singlestep" if split == "fast" else "singlestep_fixed", name.startswith("dpmpp"))
    theirs = x_end / alpha(outer[-1])
    # Same outer grid (as EDM sigmas), same evaluations, same samples.
    torch.testing.assert_close(plan.sigmas, torch.tensor([std(t) / alpha(t) for t in outer], dtype=torch.float64),
                               rtol=1e-12, atol=0)
    assert model.nfe == reference.calls == plan.nfe
    torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-10)


def test_constant_fractions_on_a_time_grid_differ_from_the_reference(gmm3d):
    """What this fixes: with inner='lambda' (r = 1/3, 2/3) the same outer grid gives other samples."""
    plan = sb.solvers.plan("dpm_solver_3", 12, schedule="vp_time_uniform", sigma_min=SIGMA_MIN,
                           sigma_max=SIGMA_MAX, ends_at_zero=False)
    assert plan.options["inner"] == "vp_time"
    xh = SIGMA_MAX * torch.randn(5, 3, generator=torch.Generator().manual_seed(42), dtype=torch.float64)
    per_step = sb.sample("dpm_solver_3", gmm3d, xh, plan.sigmas, **plan.options)
    constant = sb.sample("dpm_solver_3", gmm3d, xh, plan.sigmas, **{**plan.options, "inner": "lambda"})
    assert (per_step - constant).abs().max().item() > 1e-4


def test_plan_keeps_an_explicit_inner_rule_and_other_schedules_unchanged():
    plan = sb.solvers.plan("dpmpp_3s", 12, schedule="vp_time_quadratic", inner="lambda")
    assert plan.options["inner"] == "lambda"
    karras = sb.solvers.plan("dpmpp_3s", 12)
    assert "inner" not in karras.options and plan.steps == karras.steps
    with pytest.raises(ValueError, match="option inner='time' is not allowed; expected one of 'lambda', 'vp_time'"):
        sb.solvers.plan("dpm_solver_3", 12, inner="time")
