"""dpm_adaptive against k-diffusion's sample_dpm_adaptive: same samples, same NFE, same tolerances.

k-diffusion builds its lambda endpoints and tolerances with ``torch.tensor(float)``, i.e. in the
default dtype; the comparison runs it with float64 as the default dtype so both sides compute in
float64 (with float32 endpoints its step sizes differ from ours at float32 round-off).
"""

from __future__ import annotations

import pytest
import torch

import sampler_bench as sb
from sampler_bench.solvers.driver import CountingDenoiser, run_solver


@pytest.fixture(scope="module")
def kdiffusion():
    from kdiffusion_ref import load_sampling

    return load_sampling()


class Counted:
    def __init__(self, denoiser):
        self.denoiser, self.calls = denoiser, 0

    def __call__(self, x, sigma):
        self.calls += 1
        return self.denoiser(x, sigma)


def run_kdiffusion(kdiffusion, denoiser, x, sigma_min, sigma_max, **kwargs):
    model = Counted(denoiser)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        out, info = kdiffusion.sample_dpm_adaptive(model, x, sigma_min, sigma_max, disable=True, return_info=True,
                                                   **kwargs)
    finally:
        torch.set_default_dtype(previous)
    assert info["nfe"] == model.calls
    return out, model.calls


@pytest.mark.parametrize("order, rtol, atol", [(3, 0.05, 0.0078), (2, 0.05, 0.0078), (3, 0.01, 0.001),
                                               (2, 0.002, 0.0005)])
def test_batch_error_norm_matches_kdiffusion(order, rtol, atol, kdiffusion, gmm3d):
    x = 80.0 * torch.randn(6, 3, generator=torch.Generator().manual_seed(71), dtype=torch.float64)
    sigmas = torch.tensor([80.0, 0.02], dtype=torch.float64)
    theirs, calls = run_kdiffusion(kdiffusion, gmm3d, x, 0.02, 80.0, order=order, rtol=rtol, atol=atol)
    model = CountingDenoiser(gmm3d)
    ours = run_solver("dpm_adaptive", model, x, sigmas,
                      options=dict(order=order, rtol=rtol, atol=atol, error_norm="batch"))
    torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-10)
    assert model.nfe == calls


def test_per_sample_controllers_match_kdiffusion_run_one_sample_at_a_time(kdiffusion, gmm3d):
    x = 80.0 * torch.randn(4, 3, generator=torch.Generator().manual_seed(72), dtype=torch.float64)
    sigmas = torch.tensor([80.0, 0.02], dtype=torch.float64)
    model = CountingDenoiser(gmm3d)
    ours = run_solver("dpm_adaptive", model, x, sigmas, options=dict(rtol=0.01, atol=0.001))
    calls = []
    for row in range(4):
        theirs, n = run_kdiffusion(kdiffusion, gmm3d, x[row:row + 1], 0.02, 80.0, rtol=0.01, atol=0.001)
        torch.testing.assert_close(ours[row:row + 1], theirs, rtol=1e-10, atol=1e-10)
        calls.append(n)
    assert model.nfe == max(calls)  # every call serves every unfinished sample


def test_tighter_tolerances_cost_more_and_err_less(gmm3d):
    x = 80.0 * torch.randn(4, 3, generator=torch.Generator().manual_seed(73), dtype=torch.float64)
    sigmas = torch.tensor([80.0, 0.02], dtype=torch.float64)
    ref = sb.sample("reference", gmm3d, x, sigmas)
    results = []
    for rtol in (0.05, 0.005, 0.0005):
        model = CountingDenoiser(gmm3d)
        out = run_solver("dpm_adaptive", model, x, sigmas, options=dict(rtol=rtol, atol=rtol / 10))
        results.append((model.nfe, (out - ref).abs().max().item()))
    assert results[0][0] < results[1][0] < results[2][0]
    assert results[0][1] > results[1][1] > results[2][1]


def test_grid_ending_at_zero_denoises_once_at_the_end(gmm3d):
    x = 80.0 * torch.randn(2, 3, generator=torch.Generator().manual_seed(74), dtype=torch.float64)
    to_min = sb.sample("dpm_adaptive", gmm3d, x, torch.tensor([80.0, 0.02], dtype=torch.float64))
    to_zero = sb.sample("dpm_adaptive", gmm3d, x, torch.tensor([80.0, 0.02, 0.0], dtype=torch.float64))
    torch.testing.assert_close(to_zero, gmm3d(to_min, torch.full((2,), 0.02, dtype=torch.float64)), rtol=0, atol=0)
    with pytest.raises(ValueError, match="option order=4 is not allowed; expected one of 2, 3"):
        sb.sample("dpm_adaptive", gmm3d, x, torch.tensor([80.0, 0.02], dtype=torch.float64), order=4)


def test_mixture_denoiser_with_per_sample_levels_and_batch_equal_to_components_times_dim(gmm3d):
    """Regression: with 9 samples at 9 different levels (= 3 components x 3 dims) the mixture took its
    one-level fast path; every row must equal the row denoised alone."""
    x = torch.randn(9, 3, generator=torch.Generator().manual_seed(75), dtype=torch.float64)
    sigma = torch.linspace(0.1, 3.0, 9, dtype=torch.float64)
    rows = torch.cat([gmm3d(x[i:i + 1], sigma[i:i + 1]) for i in range(9)])
    torch.testing.assert_close(gmm3d(x, sigma), rows, rtol=1e-12, atol=1e-12)
