"""Trajectory geometry (Chen et al., "A Geometric Perspective on Diffusion Models", arXiv 2305.19947) and the
``output="denoised"`` option: statistics exact on known paths, PF-ODE trajectories of a single Gaussian are
straight, the empirical denoiser is one mean-shift step, NFE counted = NFE planned, recording changes nothing,
and the sweep stores the values with intervals and the option in the provenance."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import sampler_bench as sb
from sampler_bench.bench import runner as R
from sampler_bench.bench.spec import parse_spec
from sampler_bench.bench.store import ResultsStore
from sampler_bench.metrics import make
from sampler_bench.metrics.geometry import chord_deviation, chord_frame, menger_curvature, turning_angles
from sampler_bench.options import OptionError
from sampler_bench.processes.analytic import GaussianMixture, IsotropicGaussian, PointSet
from sampler_bench.processes.kind import PROBABILITY_FLOW_ODE
from sampler_bench.solvers.trajectory import Trajectory, record_trajectory



@pytest.fixture(autouse=True)
def float64_default():
    """The tests build float64 tensors by default; the previous default is restored for other modules."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


def ode_step_solvers(stochastic: bool = False) -> list[str]:
    """Every registered step solver of the probability-flow ODE in sigma (deterministic by default)."""
    out = []
    for name in sb.solvers.available():
        meta = sb.solvers.info(name)
        if meta.step is not None and PROBABILITY_FLOW_ODE in meta.needs and meta.stochastic == stochastic:
            out.append(name)
    return out


def circle_arc(radius: float, angles: torch.Tensor, dim: int = 5, seed: int = 0) -> torch.Tensor:
    """Points radius * (cos a, sin a) on a random 2-plane of R^dim, offset from the origin: [len(angles), dim]."""
    g = torch.Generator().manual_seed(seed)
    basis, _ = torch.linalg.qr(torch.randn(dim, 2, generator=g))
    centre = torch.randn(dim, generator=g)
    return centre + radius * (torch.cos(angles)[:, None] * basis[:, 0] + torch.sin(angles)[:, None] * basis[:, 1])


# ---- the statistics on paths with known answers --------------------------------------------------------------


def test_circle_arc_has_the_sagitta_as_deviation_and_curvature_one_over_radius():
    radius, step, k = 2.5, 0.05, 20  # 21 points, central angle 1 rad
    angles = step * torch.arange(k + 1)
    path = circle_arc(radius, angles)[None]
    dev = chord_deviation(path, path[:, 0], path[:, -1])
    sagitta = radius * (1 - math.cos(k * step / 2))  # the arc's midpoint is the farthest from its chord
    assert dev.max().item() == pytest.approx(sagitta, rel=1e-12)
    assert dev[0, k // 2].item() == pytest.approx(sagitta, rel=1e-12)
    assert dev[0, 0].item() == pytest.approx(0, abs=1e-14) and dev[0, -1].item() == pytest.approx(0, abs=1e-14)
    assert torch.allclose(turning_angles(path), torch.full((1, k - 1), step), rtol=1e-12, atol=0)
    assert torch.allclose(menger_curvature(path), torch.full((1, k - 1), 1 / radius), rtol=1e-10, atol=0)
    # the chord frame of a planar curve keeps every distance from x_T (it spans the curve's plane)
    frame = chord_frame(path, path[:, 0], path[:, -1])[0]
    assert frame.shape == (1, k + 1, 3)
    assert torch.allclose(frame.norm(dim=-1), (path - path[:, :1]).norm(dim=-1), rtol=1e-10, atol=1e-12)
    assert torch.allclose(frame[..., 2], torch.zeros(1, k + 1), atol=1e-12)  # the second direction is unused


def test_straight_path_has_zero_deviation_curvature_and_angle():
    t = torch.linspace(0, 1, 11) ** 2  # uneven spacing along one line
    a, b = torch.randn(7), torch.randn(7)
    path = (a + t[:, None] * (b - a))[None]
    assert chord_deviation(path, path[:, 0], path[:, -1]).max().item() < 1e-14
    assert turning_angles(path).abs().max().item() < 1e-7  # Kahan's formula: no sqrt(eps) floor from acos
    assert menger_curvature(path).abs().max().item() < 1e-6


def test_metric_values_are_means_over_samples_with_intervals():
    """Four arcs of radius R_b, central angle 1 rad, as recorded trajectories: curvature * chord = L/R, the
    step angle is the angle step, the deviation is sagitta / chord -- each value the mean over the samples."""
    radii, step, k = torch.tensor([1.0, 2.0, 3.0, 5.0]), 0.05, 20
    angles = step * torch.arange(k + 1)
    states = torch.stack([circle_arc(float(r), angles, seed=i) for i, r in enumerate(radii)])  # [4, 21, 5]
    traj = Trajectory(sigmas=torch.linspace(80, 0, k + 1).tolist(), states=states, denoised=states.clone(),
                      output=states[:, -1].clone(), extra_evaluations=0)
    model = IsotropicGaussian(torch.zeros(5), 1.0)
    acc = make("trajectory_geometry", model)
    acc.update(states[:, -1], trajectory=traj)
    est = acc.estimates()
    chord = 2 * radii * math.sin(k * step / 2)
    sagitta = radii * (1 - math.cos(k * step / 2))
    assert est["sampling_deviation"].value == pytest.approx(float((sagitta / chord).mean()), rel=1e-12)
    assert est["denoising_deviation"].value == pytest.approx(float((sagitta / chord).mean()), rel=1e-12)
    assert est["curvature"].value == pytest.approx(float((chord / radii).mean()), rel=1e-9)
    assert est["step_angle"].value == pytest.approx(math.degrees(step), rel=1e-9)
    for e in est.values():
        assert e.ci_low <= e.value <= e.ci_high or e.ci_high - e.ci_low < 1e-9
    prof = acc.provenance["profile"]
    assert len(prof["sampling"]) == k + 1 and prof["sigma"][0] == pytest.approx(80)
    assert prof["sampling"][k // 2] == pytest.approx(float((sagitta / chord).mean()), rel=1e-5)
    assert len(acc.provenance["paths"]) == 4


# ---- PF-ODE trajectories: straight for a single Gaussian, a computed curved case ------------------------------


@pytest.mark.parametrize("solver", ode_step_solvers())
def test_single_gaussian_pf_ode_trajectories_are_straight_for_every_solver(solver):
    """For data N(mu, s^2 I), D(x, sigma) - mu = s^2/(s^2 + sigma^2) (x - mu), so the exact PF-ODE solution
    x(sigma) - mu = (x_T - mu) sqrt(s^2 + sigma^2)/sqrt(s^2 + sigma_T^2) is a line through mu in the
    unscaled EDM coordinates; every solver step is a combination of x and D, so every solver stays on it,
    and so does the denoising trajectory. Deviation 0 to round-off."""
    mu, s = torch.tensor([1.0, -2.0, 0.5, 3.0]), 0.7
    model = IsotropicGaussian(mu, s)
    x = 80 * torch.randn(6, 4, generator=torch.Generator().manual_seed(1))
    plan = sb.solvers.plan(solver, 16)
    tr = record_trajectory(solver, model, x, plan.sigmas, **plan.options)
    rel_s = chord_deviation(tr.states, tr.states[:, 0], tr.output) / 80
    rel_d = chord_deviation(tr.denoised, tr.states[:, 0], tr.output) / 80
    assert rel_s.max().item() < 1e-12, solver
    assert rel_d.max().item() < 1e-12, solver
    # and the line is the exact solution's: it passes through the data mean mu
    through_mu = chord_deviation(mu.expand(6, 1, 4), tr.states[:, 0], tr.output) / 80
    assert through_mu.max().item() < 1e-12, solver


def test_anisotropic_gaussian_deviation_matches_the_closed_form():
    """Data N(0, diag(s1^2, s2^2)): x_k(sigma) = x_T,k sqrt(s_k^2 + sigma^2)/sqrt(s_k^2 + sigma_T^2), a curved
    path. The metric on a fine Heun run agrees with the 2-D cross-product distance of the exact path."""
    s2 = torch.tensor([0.05**2, 2.0**2])
    model = GaussianMixture([1.0], [[0.0, 0.0]], [torch.diag(s2).tolist()])
    top = 4.0  # start near the data's scales, where the path bends
    x = top * torch.tensor([[1.5, -1.0], [-0.5, 1.2]])
    sigmas = sb.schedules.karras(100, 0.002, top)
    tr = record_trajectory("heun", model, x, sigmas)
    acc = make("trajectory_geometry", model)
    acc.update(tr.output, trajectory=tr)
    got = acc.compute()["sampling_deviation"]
    # independent: the exact path, distance to the chord by the 2-D cross product
    sig = torch.logspace(math.log10(0.002), math.log10(top), 20001)
    exact = x[:, None, :] * torch.sqrt(s2 + sig[:, None] ** 2) / torch.sqrt(s2 + top**2)  # [2, n, 2]
    x0 = x * torch.sqrt(s2) / torch.sqrt(s2 + top**2)
    chord = x - x0
    rel = exact - x0[:, None]
    cross = (rel[..., 0] * chord[:, None, 1] - rel[..., 1] * chord[:, None, 0]).abs() / chord.norm(dim=1)[:, None]
    expected = (cross.amax(1) / chord.norm(dim=1)).mean().item()
    assert expected > 0.05  # a genuinely curved case
    assert got == pytest.approx(expected, rel=2e-3)


# ---- the mean-shift identity (Chen et al. Sec. 4) -----------------------------------------------------------


def mean_shift_step(x: np.ndarray, points: np.ndarray, bandwidth: float) -> np.ndarray:
    """One Gaussian-kernel mean-shift step m(x) = sum_i K(x - y_i) y_i / sum_i K(x - y_i), written
    independently of PointSet (explicit distances, no matmul form)."""
    out = np.empty_like(x)
    for b in range(x.shape[0]):
        d2 = ((x[b][None, :] - points) ** 2).sum(1)
        w = np.exp(-(d2 - d2.min()) / (2 * bandwidth**2))
        out[b] = (w[:, None] * points).sum(0) / w.sum()
    return out


def test_exact_point_set_denoiser_is_one_mean_shift_step_and_euler_is_annealed_mean_shift():
    g = torch.Generator().manual_seed(0)
    points = torch.randn(40, 3, generator=g) * 2
    model = PointSet(points)
    x = 5 * torch.randn(8, 3, generator=g)
    for sigma in (0.05, 0.3, 1.0, 4.0, 30.0):
        ours = model(x, torch.full((8,), sigma)).numpy()
        assert np.allclose(ours, mean_shift_step(x.numpy(), points.numpy(), sigma), rtol=1e-12, atol=1e-12)
    # Euler from sigma_n to sigma_{n+1}: x <- (sigma_{n+1}/sigma_n) x + (1 - sigma_{n+1}/sigma_n) m_{sigma_n}(x)
    sigmas = sb.schedules.karras(12, 0.01, 80.0)
    x80 = 80 * torch.randn(8, 3, generator=g)
    tr = record_trajectory("euler", model, x80, sigmas)
    y = x80.numpy()
    for i in range(12):
        r = float(sigmas[i + 1] / sigmas[i])
        y = r * y + (1 - r) * mean_shift_step(y, points.numpy(), float(sigmas[i]))
        assert np.allclose(tr.states[:, i + 1].numpy(), y, rtol=1e-10, atol=1e-10)
    # the last step (to 0) is a pure mean-shift step at bandwidth 0.01: it lands on training points
    dist = torch.cdist(tr.output, points).min(1).values
    assert dist.max().item() < 1e-6


# ---- the denoising-trajectory output --------------------------------------------------------------------------


#: solvers whose NFE laws differ in kind: 1 eval/step, Heun's 2 - 1 onto 0, UniPC's reused corrector value,
#: DPM-Solver's per-step order list, Restart's extra intervals, a 3-stage singlestep, a stochastic one
REPRESENTATIVE = ["euler", "heun", "unipc", "dpm_solver_3", "restart", "dpmpp_3s", "euler_ancestral"]


def check_denoised_nfe(solvers, ends_at_zero) -> int:
    model = GaussianMixture.isotropic([0.5, 0.5], [[1.0, 0.0], [-1.0, 0.5]], [0.3, 0.2])
    x = 80 * torch.randn(3, 2, generator=torch.Generator().manual_seed(0))
    checked = 0
    for name in solvers:
        for budget in (13, 25):
            try:
                plan = sb.solvers.plan(name, budget, ends_at_zero=ends_at_zero, output="denoised")
            except OptionError as e:  # a budget too small for this solver with the option: said so at plan time
                assert "too small" in str(e), (name, e)
                continue
            counter = sb.solvers.CountingDenoiser(model)
            gens = [torch.Generator().manual_seed(i) for i in range(3)] if sb.solvers.info(name).stochastic else None
            sb.solvers.run_solver(name, counter, x, plan.sigmas, options=plan.options, generator=gens)
            assert counter.nfe == plan.nfe, (name, budget, ends_at_zero)
            checked += 1
    return checked


@pytest.mark.parametrize("ends_at_zero", [True, False])
def test_denoised_output_counts_the_nfe_its_plan_promises(ends_at_zero):
    assert check_denoised_nfe(REPRESENTATIVE, ends_at_zero) >= 12


@pytest.mark.slow
@pytest.mark.parametrize("ends_at_zero", [True, False])
def test_denoised_output_counts_the_nfe_its_plan_promises_for_every_step_solver(ends_at_zero):
    assert check_denoised_nfe(ode_step_solvers() + ode_step_solvers(stochastic=True), ends_at_zero) > 60


@pytest.mark.parametrize("solver", ["euler", "heun", "dpmpp_3m", "unipc", "dpm_solver_2"])
def test_denoised_output_is_d_at_the_state_the_default_run_reaches(solver):
    model = GaussianMixture.isotropic([0.3, 0.7], [[2.0, 0.0, 1.0], [-1.0, 0.5, 0.0]], [0.4, 0.2])
    x = 80 * torch.randn(5, 3, generator=torch.Generator().manual_seed(2))
    plan = sb.solvers.plan(solver, 12)
    default = record_trajectory(solver, model, x, plan.sigmas, **plan.options)
    jumped = record_trajectory(solver, model, x, plan.sigmas, **{**plan.options, "output": "denoised"})
    n = plan.sigmas.numel() - 2  # the last level above 0
    assert torch.equal(jumped.states, default.states[:, : n + 1])  # the same steps, stopped one level early
    expected = model(default.states[:, n], torch.full((5,), float(plan.sigmas[n])))
    assert torch.allclose(jumped.output, expected, rtol=0, atol=1e-13)
    assert torch.equal(sb.sample(solver, model, x, plan.sigmas, output="denoised", **plan.options), jumped.output)
    if solver in ("euler", "heun"):  # their last step onto 0 is x = D(x, sigma): the same sample
        assert torch.allclose(jumped.output, default.output, rtol=0, atol=1e-13)


def check_recording(solvers) -> None:
    model = GaussianMixture.isotropic([0.5, 0.5], [[1.0, 0.0], [-1.0, 0.5]], [0.3, 0.2])
    x = 80 * torch.randn(4, 2, generator=torch.Generator().manual_seed(3))
    for solver in solvers:
        plan = sb.solvers.plan(solver, 13)  # 13: the least budget every step solver accepts (pndm's warm-up)
        tr = record_trajectory(solver, model, x, plan.sigmas, **plan.options)
        assert torch.equal(tr.output, sb.sample(solver, model, x, plan.sigmas, **plan.options)), solver
        levels = len(tr.sigmas)
        assert tr.states.shape == (4, levels, 2) and tr.denoised.shape == (4, levels, 2)
        for i, s in enumerate(tr.sigmas[:-1]):  # every D on the path is the denoiser at that state
            assert torch.allclose(tr.denoised[:, i], model(tr.states[:, i], torch.full((4,), s)), atol=1e-12)


def test_recording_changes_no_sample_and_reuses_the_solvers_own_evaluations():
    check_recording([s for s in REPRESENTATIVE if not sb.solvers.info(s).stochastic] + ["dpmpp_2m", "ipndm"])
    # euler evaluates D at every level itself: nothing extra
    model = IsotropicGaussian(torch.zeros(2), 1.0)
    x = 80 * torch.randn(4, 2, generator=torch.Generator().manual_seed(3))
    assert record_trajectory("euler", model, x, sb.solvers.plan("euler", 8).sigmas).extra_evaluations == 0


@pytest.mark.slow
def test_recording_changes_no_sample_for_any_deterministic_step_solver():
    check_recording(ode_step_solvers())


def test_bad_output_value_and_solvers_that_cannot_take_the_option_say_what_to_change():
    model = IsotropicGaussian(torch.zeros(2), 1.0)
    x = torch.randn(2, 2)
    sig = sb.schedules.karras(5, 0.002, 80.0)
    with pytest.raises(ValueError, match=r"option output='x0' is not allowed; expected one of 'state', 'denoised'"):
        sb.sample("euler", model, x, sig, output="x0")
    with pytest.raises(ValueError, match=r"\[\[sampler\]\] #1: solver 'heun': option output='bogus' is not allowed"):
        parse_spec('nfe = [4]\nn_samples = 4\n[[model]]\nbuiltin = "gmm2d"\n[[sampler]]\nname = "heun"\n'
                   'options = { output = "bogus" }\n[[metric]]\nname = "fd"\n')
    with pytest.raises(ValueError, match="only the solvers of the probability-flow ODE in sigma"):
        sb.solvers.info("gddim_bdm").validate({"output": "denoised"})
    with pytest.raises(ValueError, match="ends_at_zero = false"):
        sb.sample("reference", model, x, torch.tensor([80.0, 0.002, 0.0]), output="denoised")
    with pytest.raises(ValueError, match="trajectory cannot be recorded"):
        record_trajectory("reference", model, x, torch.tensor([80.0, 0.002, 0.0]))
    acc = make("trajectory_geometry", model)
    with pytest.raises(ValueError, match="needs trajectory="):
        acc.update(x)
    # a configuration without the option validates as before it existed (cell ids and caches unchanged)
    assert "output" not in sb.solvers.info("dpmpp_2m").validate({})


# ---- in a sweep ------------------------------------------------------------------------------------------------


def test_sweep_stores_geometry_with_intervals_and_the_output_option_in_provenance(tmp_path):
    text = "\n".join([
        "nfe = [8]", "n_samples = 16", "batch_size = 8", "seed = 0",
        "[[model]]", 'builtin = "gmm2d"',
        "[[sampler]]", 'name = "dpmpp_2m"',
        "[[sampler]]", 'name = "dpmpp_3m"', 'options = { output = "denoised" }',
        "[[sampler]]", 'name = "euler_ancestral"',
        "[[metric]]", 'name = "trajectory_geometry"',
        "[[metric]]", 'name = "gmm_tv"',
    ]) + "\n"
    summary = R.run_sweep(parse_spec(text), tmp_path)
    assert summary.ok == 3
    with ResultsStore(summary.store_path) as s:
        j = s.joined()
        floors = s.floors()
    geo = j[j["metric"] == "trajectory_geometry"]
    assert set(geo["solver"]) == {"dpmpp_2m", "dpmpp_3m"}  # not the stochastic sampler
    assert set(geo["key"]) == {"sampling_deviation", "denoising_deviation", "curvature", "step_angle"}
    assert (geo["ci_low"] <= geo["value"]).all() and (geo["value"] <= geo["ci_high"]).all()
    jumped = geo[geo["solver"] == "dpmpp_3m"].iloc[0]
    assert json.loads(jumped["provenance"])["output"] == "denoised"
    assert json.loads(jumped["options"])["output"] == "denoised"
    assert "output" not in json.loads(geo[geo["solver"] == "dpmpp_2m"].iloc[0]["provenance"])
    prov = json.loads(geo.iloc[0]["provenance"])
    assert len(prov["profile"]["sigma"]) == len(prov["profile"]["sampling"]) == 9
    assert prov["paths"] and len(prov["paths"][0]["sampling"][0]) == 2  # 2-D data: its own coordinates
    assert "trajectory_geometry" not in set(floors.get("metric", []))  # exact samples have no trajectory
