"""Per-step overhead of our samplers against k-diffusion's implementation of the same sampler.

The denoiser is ``x * 0.5`` (a few microseconds), so the time measured is the sampler's own work:
coefficient arithmetic, tensor updates, the NFE-counting wrapper and the shared driver loop. Both
implementations get the same float32 state ``[16, 2]`` and the same Karras grid ending at 0, in the
same run: ours in float64 (our contract), k-diffusion's in float32 as its ``get_sigmas_karras``
builds it (a float64 grid would promote its state to float64 through ``append_dims``). Each
(sampler, steps) pair is one pytest-benchmark group, so the comparison table shows the two side by
side; the terminal summary prints the median time per step and the ratio ours / k-diffusion.

    python -m pytest benchmarks/bench_overhead.py --benchmark-only     # measure
    python -m pytest benchmarks/bench_overhead.py --benchmark-disable  # run every case once
"""

from __future__ import annotations

import pytest
import torch

import sampler_bench as sb

# (our solver, k-diffusion sampler, its keyword arguments)
SAMPLERS = [
    ("euler", "sample_euler", {}),
    ("heun", "sample_heun", {}),
    ("dpm_2", "sample_dpm_2", {}),
    ("dpmpp_2m", "sample_dpmpp_2m", {}),
    ("dpmpp_2s", "sample_dpmpp_2s_ancestral", {"eta": 0.0}),
    ("lms", "sample_lms", {}),
]
STEPS = (20, 50)
BATCH_SHAPE = (16, 2)


def cheap_denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    return x * 0.5


@pytest.fixture(scope="module")
def kdiffusion():
    from kdiffusion_ref import load_sampling

    try:
        return load_sampling()
    except ImportError as err:
        pytest.skip(f"k-diffusion is not importable: {err}")


@pytest.mark.parametrize("implementation", ["sampler-bench", "k-diffusion"])
@pytest.mark.parametrize("steps", STEPS)
@pytest.mark.parametrize("sampler, kd_name, kd_kwargs", SAMPLERS, ids=[s[0] for s in SAMPLERS])
def test_sampler_overhead(benchmark, per_step_medians, kdiffusion, sampler, kd_name, kd_kwargs, steps,
                          implementation):
    if sampler not in sb.solvers.available():
        pytest.skip(f"{sampler} is not registered")
    x = 80.0 * torch.randn(*BATCH_SHAPE, generator=torch.Generator().manual_seed(0))
    sigmas = sb.schedules.karras(steps, 0.002, 80.0)
    if implementation == "sampler-bench":
        def run():
            return sb.sample(sampler, cheap_denoiser, x, sigmas)
    else:
        kd_sampler = getattr(kdiffusion, kd_name)
        kd_sigmas = sigmas.to(x.dtype)

        def run():
            return kd_sampler(cheap_denoiser, x, kd_sigmas, disable=True, **kd_kwargs)

    benchmark.group = f"{sampler} {steps} steps"
    benchmark.extra_info["steps"] = steps
    out = benchmark(run)
    assert out.shape == x.shape and out.dtype == x.dtype and torch.isfinite(out).all()
    stats = getattr(benchmark, "stats", None)
    if stats is not None:  # None under --benchmark-disable
        per_step_medians.setdefault((sampler, steps), {})[implementation] = stats.stats.median / steps
