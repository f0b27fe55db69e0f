"""PNDM against diffusers' PNDMScheduler (installed here): same samples, same number of model calls.

diffusers runs the discrete DDPM schedule on an epsilon model; we run sb.sample('pndm') on the EDM
sigmas of the same discrete timesteps (sigma = sqrt((1 - abar)/abar)) with the Runge–Kutta midpoints
at diffusers' half-step timesteps, wrapping the same denoiser, in float64.
"""

from __future__ import annotations

import pytest
import torch

import sampler_bench as sb
from sampler_bench.solvers.driver import CountingDenoiser, run_solver


def edm_sigma(abar: torch.Tensor) -> torch.Tensor:
    return ((1.0 - abar) / abar).sqrt()


@pytest.mark.parametrize("steps", [4, 10, 20])  # 4: the fewest steps diffusers builds
def test_pndm_matches_diffusers_pndm_scheduler(steps, gmm3d):
    diffusers = pytest.importorskip("diffusers")
    sched = diffusers.PNDMScheduler(num_train_timesteps=1000, set_alpha_to_one=True)
    sched.set_timesteps(steps)
    sched.alphas_cumprod = sched.alphas_cumprod.to(torch.float64)
    sched.final_alpha_cumprod = torch.tensor(1.0, dtype=torch.float64)
    abar = sched.alphas_cumprod
    stride = 1000 // steps
    levels = list(range(stride * (steps - 1), -1, -stride))  # 900, 800, ..., 0 for 10 steps
    sigmas = torch.cat([edm_sigma(abar[levels]), torch.zeros(1, dtype=torch.float64)])
    midpoints = edm_sigma(abar[[levels[k] - stride // 2 for k in range(3)]]).tolist()

    xh = float(sigmas[0]) * torch.randn(5, 3, generator=torch.Generator().manual_seed(51), dtype=torch.float64)
    model = CountingDenoiser(gmm3d)
    ours = run_solver("pndm", model, xh, sigmas, options={"midpoints": midpoints})

    calls = 0
    x = abar[levels[0]].sqrt() * xh
    for t in sched.timesteps.tolist():
        calls += 1
        a = abar[t]
        sigma = float(edm_sigma(a))
        d = gmm3d(x / a.sqrt(), torch.full((x.shape[0],), sigma, dtype=torch.float64))
        eps = (x / a.sqrt() - d) / sigma
        x = sched.step(eps, t, x).prev_sample
    torch.testing.assert_close(ours, x, rtol=1e-10, atol=1e-10)
    assert model.nfe == calls == len(sched.timesteps) == steps + 9
    assert sb.solvers.info("pndm").nfe(steps, True, {}) == model.nfe


def test_pndm_plan_and_bad_midpoints(gmm3d):
    plan = sb.solvers.plan("pndm", 20)
    assert plan.steps == 11 and plan.nfe == 20
    assert sb.solvers.plan("pndm", 13).steps == 4 and sb.solvers.plan("pndm", 13).nfe == 13
    assert sb.solvers.plan("pndm", 13, ends_at_zero=False).nfe == 13
    x = torch.ones(1, 3, dtype=torch.float64)
    grid = sb.schedules.karras(6, 0.002, 80.0)  # the midpoint checks run on a grid PNDM accepts
    with pytest.raises(ValueError, match="option midpoints needs 3 noise levels"):
        sb.sample("pndm", gmm3d, x, grid, midpoints=[50.0])
    with pytest.raises(ValueError, match="must lie strictly between"):
        sb.sample("pndm", gmm3d, x, grid, midpoints=[90.0, 10.0, 5.0])
    with pytest.raises(ValueError, match="option midpoints=\\[-1.0\\] is not allowed"):
        sb.sample("pndm", gmm3d, x, grid, midpoints=[-1.0])


def test_pndm_warm_up_is_classical_rk4_with_sigma_midpoints(gmm3d):
    """With midpoints halfway in sigma the pseudo Runge–Kutta step is the classical RK4 step on
    dx/dsigma = eps, and PLMS is 4-step Adams–Bashforth on the eps at the grid points; written out
    independently here."""
    sigmas = torch.tensor([4.0, 3.0, 2.2, 1.5, 1.0], dtype=torch.float64)
    mids = [0.5 * (float(sigmas[k]) + float(sigmas[k + 1])) for k in range(3)]
    x = 3.0 * torch.randn(4, 3, generator=torch.Generator().manual_seed(52), dtype=torch.float64)

    def f(y, s):
        return (y - gmm3d(y, torch.full((y.shape[0],), s, dtype=torch.float64))) / s

    y, at_points = x, []
    for k in range(3):
        s, t = float(sigmas[k]), float(sigmas[k + 1])
        h = t - s
        k1 = f(y, s)
        at_points.append(k1)
        k2 = f(y + h / 2 * k1, s + h / 2)
        k3 = f(y + h / 2 * k2, s + h / 2)
        k4 = f(y + h * k3, t)
        y = y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    # ... then one PLMS step over the eps at the last four grid points.
    f3 = f(y, float(sigmas[3]))
    y = y + (float(sigmas[4]) - float(sigmas[3])) / 24 * (55 * f3 - 59 * at_points[2] + 37 * at_points[1] - 9 * at_points[0])
    torch.testing.assert_close(sb.sample("pndm", gmm3d, x, sigmas, midpoints=mids), y, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("budget", [1, 4, 5, 8, 12])
def test_pndm_refuses_budgets_below_its_warm_up(budget, gmm3d):
    """Below 13 NFE (4 steps) there is no room for the 3 Runge–Kutta warm-up steps and a PLMS step;
    diffusers' PNDMScheduler fails there too. Those budgets used to run a warm-up step across most of
    the noise range and return samples ~1e4 off the data (FD ~2e9 in the quickstart)."""
    with pytest.raises(ValueError, match=f"solver 'pndm': a budget of {budget} NFE is too small; with these "
                       "options it needs at least 13 NFE \\(4 steps\\)"):
        sb.solvers.plan("pndm", budget)
    x = torch.ones(1, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="solver 'pndm' with these options needs at least 4 steps \\(13 NFE\\); the grid has 3"):
        sb.sample("pndm", gmm3d, x, sb.schedules.karras(3, 0.002, 80.0))


def test_pndm_diffusers_refuses_fewer_than_4_steps():
    """The reference's own minimum, which the refusal above follows."""
    diffusers = pytest.importorskip("diffusers")
    sched = diffusers.PNDMScheduler(num_train_timesteps=1000)
    sched.set_timesteps(4)
    assert len(sched.timesteps) == 13
    with pytest.raises(ValueError):
        sched.set_timesteps(3)
