"""DPM-Solver / DPM-Solver++ family: the DPM-Solver-fast budget split, option checks, the step onto
sigma = 0, identities between family members, exactness on polynomial denoisers, convergence slopes.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import sampler_bench as sb
from sampler_bench.solvers.dpm_solver import fast_orders
from sampler_bench.solvers.dpmpp import dpmpp_3m_update
from sampler_bench.solvers.driver import CountingDenoiser, run_solver

SINGLESTEP = {"dpm_solver_2": 2, "dpm_solver_3": 3, "dpmpp_2s": 2, "dpmpp_3s": 3}
OURS = ["dpm_2", "dpm_solver_1", "dpm_solver_2", "dpm_solver_3", "dpmpp_2s", "dpmpp_3s", "dpmpp_2m", "dpmpp_3m"]


def start_state(n: int = 4, seed: int = 0, sigma: float = 80.0) -> torch.Tensor:
    return sigma * torch.randn(n, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def counted(name, denoiser, x, sigmas, **options):
    model = CountingDenoiser(denoiser)
    return run_solver(name, model, x, sigmas, options=options), model.nfe


# --- DPM-Solver-fast: the budget split (docs/solvers.md) --------------------------------------------------


def dpms_fast_orders(order: int, nfe: int) -> list[int]:
    """The split as the DPM-Solver ``sample(method='singlestep')`` docstring states it, written independently."""
    if order == 3:
        K = nfe // 3 + 1
        return {0: [3] * (K - 2) + [2, 1], 1: [3] * (K - 1) + [1], 2: [3] * (K - 1) + [2]}[nfe % 3]
    K = nfe // 2 + nfe % 2
    return [2] * K if nfe % 2 == 0 else [2] * (K - 1) + [1]


@pytest.mark.parametrize("name", sorted(SINGLESTEP))
def test_fast_split_to_sigma_min_has_dpm_solver_steps_orders_and_exact_nfe(name, gmm3d):
    order = SINGLESTEP[name]
    for nfe in (3, 4, 5, 6, 7, 8, 10, 11, 12, 20):
        plan = sb.solvers.plan(name, nfe, sigma_min=0.05, ends_at_zero=False)
        expected = dpms_fast_orders(order, nfe)
        assert list(plan.options["orders"]) == expected == fast_orders(order, nfe)
        assert plan.steps == len(expected) == len(plan.sigmas) - 1
        if order == 3:
            assert plan.steps == nfe // 3 + 1
        assert plan.nfe == nfe and plan.note == ""
        out, used = counted(name, gmm3d, start_state(2), plan.sigmas, **plan.options)
        assert used == nfe and torch.isfinite(out).all()


@pytest.mark.parametrize("name", sorted(SINGLESTEP))
def test_fast_split_to_zero_makes_the_last_step_the_single_denoise(name, gmm3d):
    order = SINGLESTEP[name]
    for nfe in (3, 4, 5, 6, 7, 8, 9, 10, 11, 20):
        plan = sb.solvers.plan(name, nfe)  # Karras grid with a trailing 0
        expected = dpms_fast_orders(order, nfe)
        assert plan.steps == len(expected) and float(plan.sigmas[-1]) == 0.0
        assert list(plan.options["orders"]) == expected[:-1] + [1]
        # Only a split ending in an order-2 step loses an evaluation to the denoise, and says so.
        spent = nfe - (expected[-1] - 1)
        assert plan.nfe == spent
        assert (plan.note == "") == (spent == nfe)
        if spent != nfe:
            assert f"spends {spent} of the {nfe}" in plan.note
        out, used = counted(name, gmm3d, start_state(2), plan.sigmas, **plan.options)
        assert used == spent and torch.isfinite(out).all()


@pytest.mark.parametrize("name", sorted(SINGLESTEP))
def test_fixed_split_uses_floor_of_nfe_over_order_steps_and_says_what_it_spends(name, gmm3d):
    order = SINGLESTEP[name]
    for nfe, ends_at_zero in ((10, False), (11, False), (10, True)):
        plan = sb.solvers.plan(name, nfe, split="fixed", sigma_min=0.05, ends_at_zero=ends_at_zero)
        assert plan.steps == nfe // order
        spent = order * plan.steps - (order - 1 if ends_at_zero else 0)
        assert plan.nfe == spent
        assert (plan.note == "") == (spent == nfe)
        _, used = counted(name, gmm3d, start_state(2), plan.sigmas, **plan.options)
        assert used == spent
    with pytest.raises(ValueError, match=f"split='fixed' needs a budget of at least {order}"):
        sb.solvers.plan(name, order - 1, split="fixed")


def test_fast_split_lowers_the_declared_order_to_its_lowest_step_plus_one():
    meta = sb.solvers.info("dpm_solver_3")
    assert meta.order_for(meta.validate({})) == 3
    assert meta.order_for(meta.validate({"orders": [3, 3, 3]})) == 3
    assert meta.order_for(meta.validate({"orders": [3, 3, 2]})) == 3
    assert meta.order_for(meta.validate({"orders": [3, 3, 2, 1]})) == 2


# --- bad input: one readable ValueError naming the solver and the option -------------------------------


@pytest.mark.parametrize(
    "name, options, message",
    [
        ("dpm_solver_2", {"r1": 0.0}, "option r1=0.0 is not allowed; expected a number > 0 and <= 1"),
        ("dpm_solver_2", {"r1": 1.5}, "option r1=1.5 is not allowed"),
        ("dpmpp_2s", {"r1": "half"}, "option r1='half' is not allowed"),
        ("dpm_solver_3", {"r1": 0.6, "r2": 0.4}, "need r1 < r2, got r1=0.6, r2=0.4"),
        ("dpmpp_3s", {"r1": 0.5, "r2": 0.5}, "need r1 < r2"),
        ("dpm_solver_3", {"r2": 0.0}, "option r2=0.0 is not allowed"),
        ("dpm_solver_3", {"solver_type": "midpoint"}, "expected one of 'dpmsolver', 'taylor'"),
        ("dpmpp_2s", {"solver_type": "heun"}, "expected one of 'dpmsolver', 'taylor'"),
        ("dpm_solver_2", {"orders": [2, 3, 1]},
         "option orders=\\[2, 3, 1\\] is not allowed; expected a list of integers >= 1 and <= 2"),
        ("dpm_solver_3", {"orders": [3, 0, 1]}, "expected a list of integers >= 1 and <= 3"),
        ("dpm_solver_3", {"split": "auto"}, "expected one of 'fast', 'fixed'"),
        ("dpmpp_2m", {"variant": "heun"}, "expected one of 'dpmsolver', 'taylor'"),
        ("dpmpp_2m", {"lower_order_final": 1}, "option lower_order_final=1 is not allowed; expected true or false"),
        ("dpmpp_3m", {"d2": "exact"}, "expected one of 'reference', 'corrected'"),
        ("dpmpp_3m", {"order": 3}, "solver 'dpmpp_3m' has no option 'order'"),
    ],
)
def test_bad_options_raise_one_readable_value_error(name, options, message, gmm3d):
    with pytest.raises(ValueError, match=message) as info:
        sb.sample(name, gmm3d, start_state(1), sb.schedules.karras(4, 0.002, 80.0), **options)
    assert f"solver {name!r}" in str(info.value)


@pytest.mark.parametrize("name", sorted(SINGLESTEP))
def test_orders_that_do_not_match_the_grid_raise_value_error(name, gmm3d):
    sigmas = sb.schedules.karras(4, 0.002, 80.0)  # 4 steps, the last onto sigma = 0
    with pytest.raises(ValueError, match="orders has 3 entries .* but the grid has 4 steps"):
        sb.sample(name, gmm3d, start_state(1), sigmas, orders=[2, 2, 1])
    with pytest.raises(ValueError, match="the last entry of orders must be 1 \\(got 2\\)"):
        sb.sample(name, gmm3d, start_state(1), sigmas, orders=[2, 2, 2, 2])
    with pytest.raises(ValueError, match="costs 7 NFE, more than the budget of 6"):
        sb.solvers.plan(name, 6, orders=[2, 2, 2, 1])


# --- the step onto sigma = 0 -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", OURS)
def test_step_onto_zero_is_the_denoise_of_the_state_at_sigma_min(name, gmm3d):
    """h = infinity onto sigma = 0: no log(0), no NaN, and the output is exactly D(x_N-1, sigma_N-1)."""
    sigmas = sb.schedules.karras(5, 0.002, 80.0)
    x = start_state(3)
    out = sb.sample(name, gmm3d, x, sigmas)
    before = sb.sample(name, gmm3d, x, sigmas[:-1])
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, gmm3d(before, float(sigmas[-2])), rtol=0, atol=0)
    # One step from sigma_max straight to 0 is a single evaluation for every solver.
    _, used = counted(name, gmm3d, x, torch.tensor([80.0, 0.0], dtype=torch.float64))
    assert used == 1


# --- identities between family members --------------------------------------------------------------------


@pytest.mark.parametrize("ends_at_zero", [True, False])
def test_dpm_solver_2_with_r1_one_half_is_the_log_sigma_midpoint_dpm_2(ends_at_zero, gmm3d):
    sigmas = sb.schedules.karras(8, 0.05, 80.0, append_zero=ends_at_zero)
    x = start_state(4, seed=1)
    torch.testing.assert_close(sb.sample("dpm_solver_2", gmm3d, x, sigmas, r1=0.5),
                               sb.sample("dpm_2", gmm3d, x, sigmas), rtol=1e-12, atol=1e-12)
    # ... and a different r1 is a different (still second-order) method.
    assert not torch.allclose(sb.sample("dpm_solver_2", gmm3d, x, sigmas, r1=0.3),
                              sb.sample("dpm_2", gmm3d, x, sigmas), rtol=1e-6)


def test_first_order_members_are_euler(gmm3d):
    sigmas = sb.schedules.karras(6, 0.05, 80.0)
    x = start_state(4, seed=2)
    euler = sb.sample("euler", gmm3d, x, sigmas)
    torch.testing.assert_close(sb.sample("dpm_solver_1", gmm3d, x, sigmas), euler, rtol=1e-12, atol=1e-12)
    for name in SINGLESTEP:
        torch.testing.assert_close(sb.sample(name, gmm3d, x, sigmas, orders=[1] * 6), euler, rtol=1e-12, atol=1e-12)


def test_dpmpp_3m_corrected_equals_unip_3_bh2_without_corrector(gmm3d):
    """Two derivations of a third-order exponential Adams step in the data form must agree."""
    x = start_state(4, seed=3)
    for sigmas in (sb.schedules.karras(10, 0.002, 80.0), sb.schedules.karras(10, 0.05, 80.0, append_zero=False)):
        torch.testing.assert_close(
            sb.sample("dpmpp_3m", gmm3d, x, sigmas, d2="corrected"),
            sb.sample("unipc", gmm3d, x, sigmas, order=3, variant="bh2", use_corrector=False, lower_order_final=False),
            rtol=1e-12, atol=1e-12)


def test_lower_order_final_ends_with_a_first_order_step_only_when_asked(gmm3d):
    x = start_state(4, seed=4)
    to_zero = sb.schedules.karras(8, 0.002, 80.0)
    to_min = sb.schedules.karras(8, 0.05, 80.0, append_zero=False)
    # Onto sigma = 0 the last step is the denoise either way: 2M is identical (= k-diffusion).
    assert torch.equal(sb.sample("dpmpp_2m", gmm3d, x, to_zero, lower_order_final=True),
                       sb.sample("dpmpp_2m", gmm3d, x, to_zero))
    # To sigma_min: True = the first N-1 steps as usual, then a first-order (DDIM) step.
    before = sb.sample("dpmpp_2m", gmm3d, x, to_min[:-1])
    s, t = float(to_min[-2]), float(to_min[-1])
    last = (t / s) * before + (1 - t / s) * gmm3d(before, s)
    torch.testing.assert_close(sb.sample("dpmpp_2m", gmm3d, x, to_min, lower_order_final=True), last,
                               rtol=1e-12, atol=1e-12)
    assert not torch.allclose(sb.sample("dpmpp_2m", gmm3d, x, to_min), last, rtol=1e-6)
    meta = sb.solvers.info("dpmpp_3m")
    assert meta.order_for(meta.validate({"d2": "corrected"})) == 3
    assert meta.order_for(meta.validate({"d2": "corrected", "lower_order_final": True})) == 2


# --- exactness on denoisers polynomial in lambda ------------------------------------------------------------


def _exact_flow(x0: float, s: float, t: float, poly) -> float:
    """xh_t = (t/s) xh_s + t int_{l_s}^{l_t} e^l p(l) dl for D = p(lambda), lambda = -log sigma, p quadratic."""
    a, b, c = poly  # p(l) = a l^2 + b l + c; an antiderivative of e^l p(l) is e^l (a l^2 + (b - 2a) l + c - b + 2a)
    anti = lambda l: math.exp(l) * (a * l * l + (b - 2 * a) * l + c - b + 2 * a)
    return (t / s) * x0 + t * (anti(-math.log(t)) - anti(-math.log(s)))


def test_dpmpp_3m_corrected_is_exact_for_a_denoiser_quadratic_in_lambda_and_the_reference_is_not():
    poly = (0.7, -0.3, 1.1)
    def p(sigma):
        lam = -math.log(sigma)
        return torch.tensor([[poly[0] * lam**2 + poly[1] * lam + poly[2]]], dtype=torch.float64)

    s2, s1, s, t = 2.0, 1.3, 0.9, 0.5  # non-uniform steps in lambda
    x = torch.tensor([[0.4]], dtype=torch.float64)
    exact = _exact_flow(0.4, s, t, poly)
    corrected = dpmpp_3m_update(x, p(s), p(s1), p(s2), s2, s1, s, t, d2="corrected").item()
    reference = dpmpp_3m_update(x, p(s), p(s1), p(s2), s2, s1, s, t, d2="reference").item()
    assert corrected == pytest.approx(exact, abs=1e-13)
    assert abs(reference - exact) > 1e-3  # half of the second-difference term is missing


def test_dpmpp_3s_taylor_integrates_a_denoiser_quadratic_in_lambda_exactly():
    poly = (0.7, -0.3, 1.1)
    def denoiser(x, sigma):
        lam = -sigma.log()
        return (poly[0] * lam**2 + poly[1] * lam + poly[2]).reshape(-1, 1).expand_as(x)

    sigmas = sb.schedules.karras(5, 0.05, 10.0, append_zero=False)
    x = torch.tensor([[0.4], [-2.0]], dtype=torch.float64)
    out = sb.sample("dpmpp_3s", denoiser, x, sigmas, solver_type="taylor")
    exact = [_exact_flow(v, float(sigmas[0]), float(sigmas[-1]), poly) for v in (0.4, -2.0)]
    torch.testing.assert_close(out.reshape(-1), torch.tensor(exact, dtype=torch.float64), rtol=1e-12, atol=1e-12)


# --- convergence slopes against the DOP853 reference ----------------------------------------------------------

SIGMA_MIN, SIGMA_MAX = 0.05, 80.0
# (solver, options, steps of the fit) on log-SNR-uniform grids (uniform h in lambda, DPM-Solver's
# setting), ending at sigma_min > 0. 3M corrected needs finer grids to leave its pre-asymptotic range.
SLOPE_CASES = [
    ("dpm_2", {}, (32, 64, 128)),
    ("dpm_solver_1", {}, (32, 64, 128)),
    ("dpm_solver_2", {}, (32, 64, 128)),
    ("dpm_solver_2", {"solver_type": "taylor"}, (32, 64, 128)),
    ("dpm_solver_3", {}, (32, 64, 128)),
    ("dpm_solver_3", {"solver_type": "taylor"}, (32, 64, 128)),
    ("dpmpp_2s", {}, (32, 64, 128)),
    ("dpmpp_2s", {"solver_type": "taylor"}, (32, 64, 128)),
    ("dpmpp_3s", {}, (32, 64, 128)),
    ("dpmpp_3s", {"solver_type": "taylor"}, (32, 64, 128)),
    ("dpmpp_2m", {}, (32, 64, 128)),
    ("dpmpp_2m", {"variant": "taylor"}, (32, 64, 128)),
    ("dpmpp_3m", {}, (32, 64, 128)),  # reference coefficients: declared and measured order 2
    ("dpmpp_3m", {"d2": "corrected"}, (128, 256, 512)),
]


@pytest.fixture(scope="module")
def slope_problem(gmm3d):
    x = start_state(4, seed=5, sigma=SIGMA_MAX)
    ends = torch.tensor([SIGMA_MAX, SIGMA_MIN], dtype=torch.float64)
    return x, sb.sample("reference", gmm3d, x, ends, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name, options, steps", SLOPE_CASES,
                         ids=[n + "".join(f"-{v}" for v in o.values()) for n, o, _ in SLOPE_CASES])
def test_converges_with_its_declared_order(name, options, steps, slope_problem, gmm3d):
    x, ref = slope_problem
    errors = []
    for n in steps:
        sigmas = sb.schedules.log_snr_uniform(n, SIGMA_MIN, SIGMA_MAX, append_zero=False)
        errors.append((sb.sample(name, gmm3d, x, sigmas, **options) - ref).abs().max().item())
    slope = -np.polyfit(np.log(steps), np.log(errors), 1)[0]
    meta = sb.solvers.info(name)
    order = meta.order_for(meta.validate(options))
    assert abs(slope - order) <= 0.3, f"{name} {options}: slope {slope:.2f} vs declared {order}, errors {errors}"


@pytest.mark.parametrize("name", OURS)
def test_state_keeps_its_dtype_when_the_denoiser_returns_half_precision(name):
    """A half-precision network (autocast) must not turn the float32 state into float16."""
    denoiser = lambda x, sigma: (0.5 * x).half()  # noqa: E731
    x = start_state(2).float()
    for sigmas in (sb.schedules.karras(4, 0.002, 80.0), sb.schedules.karras(4, 0.05, 80.0, append_zero=False)):
        out = sb.sample(name, denoiser, x, sigmas)
        assert out.dtype == torch.float32 and torch.isfinite(out).all()
