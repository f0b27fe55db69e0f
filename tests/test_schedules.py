"""Noise-level schedules: shape, dtype, monotonicity, endpoints, parity with k-diffusion / EDM, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import sampler_bench as sb
from sampler_bench.solvers import schedules

from kdiffusion_ref import load_sampling

SIGMA_MIN, SIGMA_MAX = 0.002, 80.0

#: Builders whose first and last positive levels are exactly sigma_max and sigma_min.
EXACT_ENDPOINTS = ["karras", "log_snr_uniform", "polyexponential", "vp_time_uniform", "vp_time_quadratic",
                   "edm_vp", "edm_ve"]


@pytest.fixture(scope="module")
def kd():
    return load_sampling()


def kd_float64(fn, *args, **kwargs) -> torch.Tensor:
    """Run a k-diffusion schedule builder with float64 as torch's default dtype (it calls linspace)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        return fn(*args, **kwargs)
    finally:
        torch.set_default_dtype(old)


@pytest.mark.parametrize("append_zero", [True, False], ids=["zero", "no_zero"])
@pytest.mark.parametrize("n", [1, 2, 7, 40])
@pytest.mark.parametrize("name", sorted(schedules.BUILDERS))
def test_schedule_is_float64_strictly_decreasing_with_n_steps(name, n, append_zero):
    sigmas = schedules.build(name, n, SIGMA_MIN, SIGMA_MAX, append_zero=append_zero)
    assert sigmas.dtype == torch.float64 and sigmas.ndim == 1
    assert sigmas.numel() == n + 1  # n steps either way
    assert (sigmas[1:] < sigmas[:-1]).all()
    positive = sigmas[:-1] if append_zero else sigmas
    assert (positive > 0).all() and (sigmas[-1] == 0) == append_zero
    assert positive[0] <= SIGMA_MAX * (1 + 1e-12) and positive[-1] >= SIGMA_MIN * (1 - 1e-12)
    # Every grid is accepted by the solvers as is.
    assert torch.equal(sb.solvers.driver.as_sigma_grid(sigmas), sigmas)


@pytest.mark.parametrize("name", EXACT_ENDPOINTS)
def test_schedule_endpoints_are_sigma_max_and_sigma_min(name):
    for append_zero in (True, False):
        s = schedules.build(name, 9, SIGMA_MIN, SIGMA_MAX, append_zero=append_zero)
        positive = s[:-1] if append_zero else s
        assert math.isclose(positive[0].item(), SIGMA_MAX, rel_tol=1e-12)
        assert math.isclose(positive[-1].item(), SIGMA_MIN, rel_tol=1e-12)


def test_append_zero_false_adds_the_level_that_the_zero_replaced():
    """With append_zero=False the n+1 positive levels are the n+1-level grid: same family, one more level."""
    a = schedules.karras(5, SIGMA_MIN, SIGMA_MAX, append_zero=False)
    b = schedules.karras(6, SIGMA_MIN, SIGMA_MAX)
    torch.testing.assert_close(a, b[:-1], rtol=1e-15, atol=0)


@pytest.mark.parametrize("n", [1, 5, 18, 64])
def test_karras_exponential_polyexponential_match_k_diffusion(kd, n):
    torch.testing.assert_close(schedules.karras(n, SIGMA_MIN, SIGMA_MAX, rho=7.0),
                               kd_float64(kd.get_sigmas_karras, n, SIGMA_MIN, SIGMA_MAX, rho=7.0), rtol=1e-14, atol=0)
    torch.testing.assert_close(schedules.karras(n, 0.03, 14.6, rho=3.0),
                               kd_float64(kd.get_sigmas_karras, n, 0.03, 14.6, rho=3.0), rtol=1e-14, atol=0)
    torch.testing.assert_close(schedules.log_snr_uniform(n, SIGMA_MIN, SIGMA_MAX),
                               kd_float64(kd.get_sigmas_exponential, n, SIGMA_MIN, SIGMA_MAX), rtol=1e-14, atol=0)
    for rho in (1.0, 0.5, 2.0):
        torch.testing.assert_close(schedules.polyexponential(n, SIGMA_MIN, SIGMA_MAX, rho=rho),
                                   kd_float64(kd.get_sigmas_polyexponential, n, SIGMA_MIN, SIGMA_MAX, rho=rho),
                                   rtol=1e-14, atol=0)


@pytest.mark.parametrize("n", [2, 10, 35])
def test_edm_vp_and_vp_time_uniform_match_k_diffusion_vp(kd, n):
    """k-diffusion's get_sigmas_vp: t = linspace(1, eps_s, n) with EDM's beta_d = 19.9, beta_min = 0.1."""
    expected = kd_float64(kd.get_sigmas_vp, n, beta_d=19.9, beta_min=0.1, eps_s=1e-3)
    # edm_vp refits beta_d, beta_min to its endpoints; with the default endpoints it recovers 19.9 / 0.1.
    torch.testing.assert_close(schedules.edm_vp(n), expected, rtol=1e-12, atol=0)
    s_lo, s_hi = float(schedules.vp_sigma(1e-3)), float(schedules.vp_sigma(1.0))
    torch.testing.assert_close(schedules.vp_time_uniform(n, s_lo, s_hi), expected, rtol=1e-12, atol=0)


def test_vp_time_is_the_inverse_of_vp_sigma():
    t = torch.linspace(1e-5, 1.5, 200, dtype=torch.float64)
    torch.testing.assert_close(schedules.vp_time(schedules.vp_sigma(t)), t, rtol=1e-12, atol=1e-15)
    t_back = schedules.vp_time(schedules.vp_sigma(t, 10.0, 0.5), 10.0, 0.5)
    torch.testing.assert_close(t_back, t, rtol=1e-12, atol=1e-15)


def test_vp_time_quadratic_is_uniform_in_sqrt_t():
    s = schedules.vp_time_quadratic(12, SIGMA_MIN, SIGMA_MAX, append_zero=False)
    root_t = schedules.vp_time(s).sqrt()
    steps = root_t[1:] - root_t[:-1]
    torch.testing.assert_close(steps, steps.mean().expand(12), rtol=1e-9, atol=0)


def test_edm_ve_is_geometric_in_sigma_squared():
    """EDM 've': sigma_i^2 = sigma_max^2 (sigma_min^2 / sigma_max^2)^(i/(N-1)), i.e. log-uniform sigma."""
    s = schedules.edm_ve(18)[:-1]
    i = torch.arange(18, dtype=torch.float64)
    torch.testing.assert_close(s**2, 100.0**2 * (0.02**2 / 100.0**2) ** (i / 17), rtol=1e-13, atol=0)
    torch.testing.assert_close(s, schedules.log_snr_uniform(18, 0.02, 100.0)[:-1], rtol=1e-13, atol=0)


def test_iddpm_levels_follow_the_cosine_alpha_bar_where_unclipped():
    """u_j = sqrt(abar(M)/abar(j) - 1) wherever the C1 clip of the recursion was not active."""
    M, C1, C2 = 1000, 0.001, 0.008
    u = schedules.iddpm_levels(M, C1, C2)
    assert u[-1] == 0 and (u[1:] < u[:-1]).all()
    j = np.arange(1, M + 1)
    abar = np.sin(0.5 * np.pi * j / M / (C2 + 1)) ** 2
    unclipped = j >= 10  # abar(j-1)/abar(j) > C1 there
    closed = np.sqrt(abar[-1] / abar[unclipped] - 1)
    np.testing.assert_allclose(u.numpy()[1:][unclipped], closed, rtol=1e-9, atol=1e-14)


@pytest.mark.parametrize("steps", [2, 5, 9, 18, 33])
def test_edm_iddpm_picks_levels_like_edm_with_round_half_to_even(steps):
    u = schedules.iddpm_levels()
    in_range = u[(u >= SIGMA_MIN) & (u <= SIGMA_MAX)].numpy()
    picks = np.round((len(in_range) - 1) / (steps - 1) * np.arange(steps)).astype(int)  # numpy: half to even
    np.testing.assert_array_equal(schedules.edm_iddpm(steps, SIGMA_MIN, SIGMA_MAX)[:-1].numpy(), in_range[picks])


def test_from_list_keeps_a_valid_grid():
    s = schedules.from_list([10.0, 3, 1.5, 0.0])
    assert s.dtype == torch.float64 and s.tolist() == [10.0, 3.0, 1.5, 0.0]


# ------------------------------------------------------------------------------------------------
# Errors: one readable ValueError saying what to change.
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(schedules.BUILDERS))
@pytest.mark.parametrize("n", [0, -3, 2.5, True, "8"])
def test_step_count_below_one_or_not_an_integer_is_rejected(name, n):
    with pytest.raises(ValueError, match="number of steps n must be an integer >= 1"):
        schedules.build(name, n, SIGMA_MIN, SIGMA_MAX)


@pytest.mark.parametrize("name", sorted(schedules.BUILDERS))
@pytest.mark.parametrize("sigma_min, sigma_max, match", [
    (1.0, 1.0, "must be smaller than sigma_max"),
    (5.0, 1.0, "must be smaller than sigma_max"),
    (0.0, 1.0, "sigma_min must be a positive finite number"),
    (-0.1, 1.0, "sigma_min must be a positive finite number"),
    (0.1, float("inf"), "sigma_max must be a positive finite number"),
    (float("nan"), 1.0, "sigma_min must be a positive finite number"),
])
def test_bad_sigma_range_is_rejected(name, sigma_min, sigma_max, match):
    with pytest.raises(ValueError, match=match):
        schedules.build(name, 5, sigma_min, sigma_max)


@pytest.mark.parametrize("builder, params", [
    ("karras", {"rho": 0.0}), ("karras", {"rho": -7}), ("polyexponential", {"rho": float("inf")}),
    ("vp_time_uniform", {"beta_d": 0.0}), ("vp_time_quadratic", {"beta_min": float("nan")}),
    ("edm_vp", {"eps_s": 1.5}), ("karras", {"bogus": 1}),
])
def test_bad_schedule_parameters_are_rejected(builder, params):
    with pytest.raises(ValueError, match=f"{list(params)[0]}|schedule {builder!r}"):
        schedules.build(builder, 5, SIGMA_MIN, SIGMA_MAX, **params)


def test_unknown_schedule_suggests_the_closest_name():
    with pytest.raises(ValueError, match="did you mean 'karras'"):
        schedules.build("karas", 5, SIGMA_MIN, SIGMA_MAX)


def test_too_many_steps_for_float64_is_rejected():
    with pytest.raises(ValueError, match="not strictly decreasing at float64"):
        schedules.karras(100_000, 1.0, 1.0 + 1e-12)


@pytest.mark.parametrize("values, match", [
    ([1.0, 2.0, 0.0], "strictly decreasing"),
    ([3.0, 3.0, 1.0], "strictly decreasing"),
    ([3.0, -1.0, 0.0], "positive"),
    ([3.0, 0.0, 0.0], "positive"),
    ([3.0, float("nan"), 0.0], "NaN"),
    ([3.0], "at least 2"),
])
def test_from_list_rejects_bad_grids(values, match):
    with pytest.raises(ValueError, match=match):
        schedules.from_list(values)


def test_vp_time_quadratic_accepts_the_negative_beta_min_of_diff_samplers_time_uniform_grid():
    """diff-sampler's 'time_uniform' schedule with rho = 2 (its DEIS-tAB3 rows) fits beta_d, beta_min
    through sigma(1e-3) = sigma_min, sigma(1) = sigma_max, which for [0.002, 80] gives beta_min < 0, then
    takes t = (1 + i/(N-1) (eps^(1/2) - 1))^2, sigma = sqrt(exp(beta_d t^2/2 + beta_min t) - 1).
    Written out here from that recipe (float64), it is vp_time_quadratic with the fitted constants."""
    smin, smax, eps = 0.002, 80.0, 1e-3
    beta_d = 2 * (math.log(smin**2 + 1) / eps - math.log(smax**2 + 1)) / (eps - 1)
    beta_min = math.log(smax**2 + 1) - 0.5 * beta_d
    assert beta_min < 0 and (beta_d, beta_min) == pytest.approx(schedules.vp_fit(smin, smax), rel=1e-12)
    for num_steps in (6, 7, 9, 11):  # NFE 5, 6, 8, 10 without a final denoise
        i = torch.arange(num_steps, dtype=torch.float64)
        t = (1 + i / (num_steps - 1) * (eps**0.5 - 1)) ** 2
        theirs = torch.sqrt(torch.exp(0.5 * beta_d * t**2 + beta_min * t) - 1)
        ours = schedules.vp_time_quadratic(num_steps - 1, smin, smax, beta_d=beta_d, beta_min=beta_min, append_zero=False)
        # exp(.) - 1 as written there vs expm1 here: 1e-11 apart at sigma_min
        torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=0)
        assert bool((ours[1:] < ours[:-1]).all())
    # every level of the range maps to a time where beta(t) = beta_min + beta_d t is positive
    t_lo = float(schedules.vp_time(torch.tensor(smin, dtype=torch.float64), beta_d, beta_min))
    assert t_lo == pytest.approx(eps, rel=1e-9) and beta_min + beta_d * t_lo > 0
