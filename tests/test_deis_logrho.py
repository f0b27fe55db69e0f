"""log-rho DEIS against diffusers' DEISMultistepScheduler (installed here), and its exactness.

diffusers runs its discrete DDPM schedule (sigmas interpolated at the inference timesteps, the last
one sigma(t=0) > 0) on an epsilon model; we run sb.sample('deis_logrho') on the same EDM sigmas with
the same denoiser, in float64 (diffusers' float32 sigma table is cast to float64 before stepping).
"""

from __future__ import annotations

import math

import pytest
import torch

import sampler_bench as sb
from sampler_bench.solvers import adams
from sampler_bench.solvers.driver import CountingDenoiser, run_solver


@pytest.mark.parametrize("order, steps, spacing", [(1, 10, "linspace"), (2, 10, "leading"), (3, 12, "trailing"),
                                                   (3, 20, "linspace"), (2, 16, "trailing")])
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_deis_logrho_matches_diffusers(order, steps, spacing, gmm3d):
    diffusers = pytest.importorskip("diffusers")
    sched = diffusers.DEISMultistepScheduler(num_train_timesteps=1000, solver_order=order,
                                             timestep_spacing=spacing)
    sched.set_timesteps(steps)
    sched.sigmas = sched.sigmas.to(torch.float64)
    sigmas = sched.sigmas.clone()
    xh = float(sigmas[0]) * torch.randn(5, 3, generator=torch.Generator().manual_seed(61), dtype=torch.float64)
    # diffusers lowers the last steps' orders only below 15 steps.
    lower = steps < 15
    model = CountingDenoiser(gmm3d)
    ours = run_solver("deis_logrho", model, xh, sigmas, options={"order": order, "lower_order_final": lower})

    x = xh / (1 + sigmas[0] ** 2).sqrt()
    for i, t in enumerate(sched.timesteps):
        s = float(sigmas[i])
        a = 1 / math.sqrt(1 + s * s)
        d = gmm3d(x / a, torch.full((x.shape[0],), s, dtype=torch.float64))
        x = sched.step((x / a - d) / s, t, x).prev_sample
    theirs = x * math.sqrt(1 + float(sigmas[-1]) ** 2)
    torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-10)
    assert model.nfe == len(sched.timesteps) == steps


def test_log_rho_integrals_are_exact_for_polynomials_in_log_sigma():
    nodes, a, b = [0.7, 1.3, 2.9], 0.7, 0.05
    w = adams.log_rho_integrals(nodes, a, b)
    for degree in range(3):
        # int_a^b (log s)^k ds against scipy quad
        from scipy.integrate import quad

        exact = quad(lambda s: math.log(s) ** degree, a, b, epsabs=0, epsrel=1e-13)[0]
        got = sum(wj * math.log(n) ** degree for wj, n in zip(w, nodes))
        assert math.isclose(got, exact, rel_tol=1e-11, abs_tol=1e-14)


def test_deis_logrho_order_1_is_euler_and_the_step_onto_zero_is_the_denoise(gmm3d):
    x = 80.0 * torch.randn(4, 3, generator=torch.Generator().manual_seed(62), dtype=torch.float64)
    grid = sb.schedules.karras(8, 0.002, 80.0)
    torch.testing.assert_close(sb.sample("deis_logrho", gmm3d, x, grid, order=1), sb.sample("euler", gmm3d, x, grid),
                               rtol=1e-12, atol=1e-12)
    before = sb.sample("deis_logrho", gmm3d, x, grid[:-1], order=3)
    torch.testing.assert_close(sb.sample("deis_logrho", gmm3d, x, grid, order=3), gmm3d(before, float(grid[-2])),
                               rtol=0, atol=0)
