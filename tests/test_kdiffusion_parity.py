"""Parity with k-diffusion's ``sampling.py``: same denoiser, same x, same sigmas -> same samples and NFE.

Each of our samplers with a k-diffusion counterpart must reproduce it to float64 round-off (the two
compute the same formulas with different operation orders), and spend exactly as many denoiser
calls, on a Karras grid ending at sigma = 0 and on one ending at sigma_min > 0.
"""

from __future__ import annotations

import pytest
import torch

import sampler_bench as sb
from sampler_bench.solvers.driver import CountingDenoiser, run_solver

RTOL, ATOL = 1e-10, 1e-12
GRIDS = {
    "to_zero": lambda: sb.schedules.karras(12, 0.002, 80.0),
    "to_sigma_min": lambda: sb.schedules.karras(12, 0.05, 80.0, append_zero=False),
}

# (our solver, our options, k-diffusion sampler, its keyword arguments)
CASES = [
    ("euler", {}, "sample_euler", {}),
    ("heun", {}, "sample_heun", {}),
    ("dpm_2", {}, "sample_dpm_2", {}),
    ("dpmpp_2m", {}, "sample_dpmpp_2m", {}),
    ("dpmpp_2s", {}, "sample_dpmpp_2s_ancestral", {"eta": 0.0}),
    # k-diffusion has no deterministic 3M; its SDE version with eta = 0 skips the noise, and warms
    # up with the 'taylor' form of the second-order step.
    ("dpmpp_3m", {"variant": "taylor"}, "sample_dpmpp_3m_sde", {"eta": 0.0}),
    *[("lms", {"order": k}, "sample_lms", {"order": k}) for k in (1, 2, 3, 4)],
]


@pytest.fixture(scope="module")
def kdiffusion():
    from kdiffusion_ref import load_sampling

    try:
        return load_sampling()
    except ImportError as err:  # pragma: no cover - k-diffusion is part of the test environment
        pytest.skip(f"k-diffusion is not importable: {err}")


class CountingModel:
    """k-diffusion's side of the NFE count: the same denoiser, counted."""

    def __init__(self, denoiser):
        self.denoiser, self.calls = denoiser, 0

    def __call__(self, x, sigma):
        self.calls += 1
        return self.denoiser(x, sigma)


@pytest.fixture(scope="module")
def start():
    g = torch.Generator().manual_seed(11)
    return torch.randn(6, 3, generator=g, dtype=torch.float64)


def _case_id(case) -> str:
    name, opts, *_ = case
    return name + "".join(f"-{k}={v}" for k, v in opts.items())


@pytest.mark.parametrize("grid", sorted(GRIDS))
@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_matches_kdiffusion_samples_and_nfe(case, grid, kdiffusion, gmm3d, start):
    name, opts, kd_name, kd_kwargs = case
    sigmas = GRIDS[grid]()
    x = start * sigmas[0]
    ours_model = CountingDenoiser(gmm3d)
    ours = run_solver(name, ours_model, x, sigmas, options=opts)
    theirs_model = CountingModel(gmm3d)
    theirs = getattr(kdiffusion, kd_name)(theirs_model, x, sigmas, disable=True, **kd_kwargs)
    assert ours.dtype == theirs.dtype == torch.float64
    torch.testing.assert_close(ours, theirs, rtol=RTOL, atol=ATOL)
    assert ours_model.nfe == theirs_model.calls
    # ... and the declared NFE law agrees with both counts.
    meta = sb.solvers.info(name)
    assert meta.nfe(len(sigmas) - 1, bool(sigmas[-1] == 0), meta.validate(opts)) == ours_model.nfe
