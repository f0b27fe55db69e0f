"""Blurring diffusion (Hoogeboom & Salimans, arXiv 2209.05557) and gDDIM on it (arXiv 2206.05564).

What is proved here, each against something computed another way:

* the DCT is scipy's orthonormal 2-D DCT-II; the frequencies are the Laplacian's eigenvalues;
* the forward marginals: the mean a_t u_0 and variance sigma_t^2 of every DCT coefficient solve the
  moment ODEs dm/dt = f m, dv/dt = 2 f v + g^2 of the per-frequency linear SDE the samplers integrate
  (solve_ivp), and ``perturb`` draws them (Monte Carlo);
* the exact Gaussian-mixture oracle: its posterior mean agrees with Tweedie from its own eps, with a
  self-normalised Monte-Carlo estimate from the mixture's samples, and its score with finite differences
  of its log-density;
* the samplers: gDDIM with eps frozen is exact for a single data point; on a Gaussian diagonal in the DCT
  basis (whose probability-flow map is known in closed form, u_s - a_s mu = sqrt(v_s/v_t)(u_t - a_t mu))
  gDDIM of orders 1-3, Euler and Heun converge with their declared orders; the yardstick reproduces the
  closed form; NFE counted = planned; bad input stops with one message.

Where this departs from the papers: the schedule is the one of gDDIM's ``blur_jax`` code (cosine alpha,
sigma_B,max = 10), not the paper's CIFAR-10 settings; samplers start where sigma/alpha = 80 as gDDIM's
``sampling_T`` does (the prior N(0, sigma^2 I) drops the signal a_t x_0 left there, |a_t| <= 0.0125), and
finish with one denoising step x_0 = V diag(1/a) V^T (z - sigma eps) from t_eps = 1e-3 (gDDIM stops at t_eps).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.fft
import torch
from scipy.integrate import solve_ivp

import sampler_bench as sb
from sampler_bench.models.builtin import builtin_model
from sampler_bench.processes.analytic import GaussianMixture
from sampler_bench.processes.bdm import BDM, BDMAnalyticModel, dct2, frequencies, idct2
from sampler_bench.processes.bdm.exact import flat_dct_matrix
from sampler_bench.processes.catalog import process_from_config
from sampler_bench.solvers import CountingDenoiser, run_solver
from sampler_bench.solvers.bdm.gddim import multistep_coefficients, order1_eps_coefficient
from sampler_bench.solvers.noise import generators_for

SHAPE = (1, 4, 4)
HW = SHAPE[1:]
BDM_SOLVERS = ["gddim_bdm", "bdm_euler", "bdm_euler_maruyama", "bdm_heun"]


def order_fit(errors, steps) -> float:
    return -np.polyfit(np.log(steps), np.log(errors), 1)[0]


@pytest.fixture(scope="module")
def bdm() -> BDM:
    return BDM()


@pytest.fixture(scope="module")
def diagonal_gaussian(bdm):
    """N(mu, S) with S diagonal in the DCT basis (variances 0.02..0.5 in shuffled order), and its exact flow."""
    g = torch.Generator().manual_seed(0)
    d = math.prod(SHAPE)
    mu_f = 0.5 * torch.randn(d, generator=g, dtype=torch.float64)
    var_f = torch.linspace(0.02, 0.5, d, dtype=torch.float64)[torch.randperm(d, generator=g)]
    q = flat_dct_matrix(SHAPE)
    gm = GaussianMixture(torch.ones(1), (q.T @ mu_f)[None], (q.T @ torch.diag(var_f) @ q)[None])
    model = BDMAnalyticModel.from_mixture("gauss", gm, SHAPE, bdm)

    def flow(z, t, s):
        """The exact probability-flow map from time t to s per DCT coefficient (a linear SDE, Gaussian data)."""
        a_t, a_s = (torch.as_tensor(bdm.a(x, HW)).reshape(1, 1, *HW) for x in (t, s))
        mu, var = mu_f.reshape(1, 1, *HW), var_f.reshape(1, 1, *HW)
        v_t, v_s = a_t**2 * var + float(bdm.sigma(t)) ** 2, a_s**2 * var + float(bdm.sigma(s)) ** 2
        return idct2(a_s * mu + (v_s / v_t).sqrt() * (dct2(z) - a_t * mu))

    z0 = float(bdm.sigma(model.sigma_max)) * torch.randn(6, *SHAPE, generator=g, dtype=torch.float64)
    return model, flow, z0


# --- the process -----------------------------------------------------------------------------------

def test_dct_is_scipys_orthonormal_dct2_and_frequencies_are_the_laplacians():
    x = torch.randn(3, 2, 5, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    expected = torch.from_numpy(scipy.fft.dctn(x.numpy(), axes=(-2, -1), norm="ortho"))
    torch.testing.assert_close(dct2(x), expected, rtol=0, atol=1e-13)
    torch.testing.assert_close(idct2(dct2(x)), x, rtol=0, atol=1e-13)
    lam = frequencies(5, 4)
    # the DCT-II basis vectors are eigenvectors of the Neumann second-difference Laplacian, eigenvalue
    # 4 sin^2(pi k / 2n) ~ (pi k / n)^2: the paper's lambda is its continuum limit
    assert lam[0, 0] == 0 and lam[2, 3] == pytest.approx((2 * math.pi / 5) ** 2 + (3 * math.pi / 4) ** 2)


def test_schedule_matches_gddims_blur_code(bdm):
    t = np.array([0.0, 0.3, 0.7, 1.0])
    alpha_bar = np.cos((t + 0.004) / 1.008 * np.pi / 2) ** 2  # blur_jax/sde_lib.py t2alpha_fn
    np.testing.assert_allclose(bdm.alpha(t) ** 2, alpha_bar, rtol=1e-12)
    np.testing.assert_allclose(bdm.sigma(t) ** 2, 1 - alpha_bar, rtol=1e-12)
    tau = (10.0 * np.sin(t * np.pi / 2) ** 2) ** 2 / 2
    lam = frequencies(*HW)
    d = np.exp(-tau[:, None, None] * lam) * (1 - 0.001) + 0.001  # get_frequency_scaling
    np.testing.assert_allclose(bdm.a(t, HW), np.sqrt(alpha_bar)[:, None, None] * d, rtol=1e-12)
    assert bdm.sigma(bdm.t_start) / bdm.alpha(bdm.t_start) == pytest.approx(80.0)


def test_forward_marginals_solve_the_per_frequency_moment_odes(bdm):
    """m' = f m and v' = 2 f v + g^2 from t = 0 give m = a_t m_0 / a_0 and v = sigma_t^2 at every frequency."""
    hw = (8, 8)

    def rhs(t, y):
        m, v = y[:64], y[64:]
        f, g2 = bdm.f(t, hw).ravel(), bdm.g2(t, hw).ravel()
        return np.concatenate([f * m, 2 * f * v + g2])

    y0 = np.concatenate([bdm.a(0.0, hw).ravel(), np.full(64, float(bdm.sigma(0.0)) ** 2)])
    checkpoints = [0.05, 0.2, 0.5, 0.8, 0.95]
    sol = solve_ivp(rhs, (0.0, 0.95), y0, method="LSODA", rtol=1e-10, atol=1e-13, t_eval=checkpoints)
    assert sol.success
    for k, t in enumerate(checkpoints):
        np.testing.assert_allclose(sol.y[:64, k], bdm.a(t, hw).ravel(), rtol=1e-6, atol=1e-12)
        np.testing.assert_allclose(sol.y[64:, k], float(bdm.sigma(t)) ** 2, rtol=1e-6)
    assert (bdm.g2(np.linspace(1e-4, 1, 50), hw) > 0).all()


def test_perturb_draws_the_kernel(bdm):
    """DCT coefficients of z_t ~ q(z_t | x_0): mean a_t x~_0 and variance sigma_t^2, independent of the frequency."""
    n, t = 20000, 0.4
    x0 = torch.linspace(-1, 1, 16, dtype=torch.float64).reshape(1, *SHAPE).expand(n, *SHAPE)
    z, eps = bdm.perturb(x0, t, torch.Generator().manual_seed(4))
    u = dct2(z)
    mean = torch.as_tensor(bdm.a(t, HW)) * dct2(x0[:1])[0]
    sig = float(bdm.sigma(t))
    zscore = (u.mean(0) - mean) / (sig / math.sqrt(n))
    assert zscore.abs().max() < 4.5
    assert ((u.var(0) / sig**2 - 1).abs() < 5 * math.sqrt(2 / n)).all()
    torch.testing.assert_close(bdm.x0_from_eps(z, t, eps), x0, rtol=0, atol=1e-12)


# --- the exact oracle ------------------------------------------------------------------------------

def test_exact_posterior_mean_is_tweedie_of_the_exact_eps_and_matches_monte_carlo(bdm):
    model = builtin_model("gmm16_bdm")
    exact = model.exact
    g = torch.Generator().manual_seed(5)
    t = 0.45
    z, _ = bdm.perturb(model.sample_data(3, g), t, g)
    post = exact.posterior_mean(z, t)
    torch.testing.assert_close(bdm.x0_from_eps(z, t, exact.eps(z, t)), post, rtol=0, atol=1e-10)
    # self-normalised importance sampling with the prior as proposal: E[x0|z] = E_p[x0 q(z|x0)] / E_p[q(z|x0)]
    ys = model.sample_data(200000, g).reshape(-1, 16)
    mean = bdm.mean(ys.reshape(-1, *SHAPE), t).reshape(-1, 16)
    sig2 = float(bdm.sigma(t)) ** 2
    for i in range(3):
        logw = -((z[i].reshape(16) - mean) ** 2).sum(1) / (2 * sig2)
        w = torch.softmax(logw, 0)
        mc = (w[:, None] * ys).sum(0)
        ess = 1.0 / (w**2).sum()
        assert ess > 200
        tol = 6 * (((w[:, None] * (ys - mc) ** 2).sum(0)) / ess).sqrt() + 1e-3
        assert ((mc - post[i].reshape(16)).abs() <= tol).all(), (mc, post[i].reshape(16), ess)


def test_exact_score_is_the_gradient_of_the_exact_log_density(bdm):
    exact = builtin_model("gmm16_bdm").exact
    z = 0.7 * torch.randn(2, *SHAPE, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    t, h = 0.3, 1e-5
    fd = torch.zeros_like(z)
    for k in range(16):
        e = torch.zeros(16, dtype=torch.float64)
        e[k] = h
        e = e.reshape(SHAPE)
        fd.reshape(2, 16)[:, k] = (exact.log_prob(z + e, t) - exact.log_prob(z - e, t)) / (2 * h)
    torch.testing.assert_close(exact.score(z, t), fd, rtol=1e-6, atol=1e-6)


# --- the samplers ----------------------------------------------------------------------------------

@pytest.mark.parametrize("order", [1, 2, 3])
def test_gddim_bdm_is_exact_for_a_single_data_point(bdm, order):
    """gDDIM Prop. 4 per frequency: for one data point the exact eps is constant along its flow."""
    y = torch.linspace(-1, 1, 16, dtype=torch.float64)
    point = GaussianMixture(torch.ones(1), y[None], 1e-12 * torch.eye(16, dtype=torch.float64)[None])
    model = BDMAnalyticModel.from_mixture("point", point, SHAPE, bdm)
    eps0 = torch.randn(3, *SHAPE, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    x0 = y.reshape(1, *SHAPE).expand(3, *SHAPE)

    def state(t):
        return bdm.mean(x0, t) + float(bdm.sigma(t)) * eps0

    grid = sb.schedules.karras(5, 1e-3, model.sigma_max, rho=2.0, append_zero=False)
    out = sb.sample("gddim_bdm", model, state(model.sigma_max), grid, order=order)
    torch.testing.assert_close(out, state(1e-3), rtol=0, atol=1e-7)
    # onto 0: the denoising step returns the data point itself
    out = sb.sample("gddim_bdm", model, state(model.sigma_max), torch.cat([grid, torch.zeros(1, dtype=torch.float64)]))
    torch.testing.assert_close(out, x0, rtol=0, atol=1e-6)


def test_yardstick_reproduces_the_closed_form_flow(diagonal_gaussian):
    model, flow, z0 = diagonal_gaussian
    grid = torch.tensor([model.sigma_max, 1e-3], dtype=torch.float64)
    out = sb.sample("bdm_reference", model, z0, grid, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(out, flow(z0, model.sigma_max, 1e-3), rtol=0, atol=1e-7)


@pytest.mark.parametrize("name,options,order", [
    ("gddim_bdm", {"order": 1}, 1), ("gddim_bdm", {"order": 2}, 2), ("gddim_bdm", {"order": 3}, 3),
    ("bdm_euler", {}, 1), ("bdm_heun", {}, 2),
])
def test_bdm_samplers_converge_with_their_declared_order(diagonal_gaussian, name, options, order):
    model, flow, z0 = diagonal_gaussian
    info = sb.solvers.info(name)
    assert info.order_for(info.validate(options)) == order
    t0, t1 = model.sigma_max, 1e-3
    exact = flow(z0, t0, t1)
    steps = (80, 160, 320)
    errors = [(sb.sample(name, model, z0, sb.schedules.karras(n, t1, t0, rho=2.0, append_zero=False), **options)
               - exact).pow(2).mean().sqrt().item() for n in steps]
    assert errors[-1] > 1e-10, "errors at round-off: the fit would be meaningless"
    slope = order_fit(errors, steps)
    assert abs(slope - order) <= 0.3, f"{name} {options}: empirical order {slope:.2f}, errors {errors}"


def test_multistep_coefficients_reduce_to_ddim_and_sum_to_it(bdm):
    times = tuple(sb.schedules.karras(6, 1e-3, bdm.t_start, rho=2.0, append_zero=False).tolist())
    one = multistep_coefficients(bdm, times, 1, HW)
    three = multistep_coefficients(bdm, times, 3, HW)
    for i in range(len(times) - 1):
        ddim = order1_eps_coefficient(bdm, times[i], times[i + 1], HW)
        np.testing.assert_allclose(one[i][1][0], ddim, rtol=1e-12)
        # the Lagrange basis sums to 1, so the quadrature of the multistep weights sums to the closed form
        np.testing.assert_allclose(three[i][1].sum(0), ddim, rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("ends_at_zero", [True, False], ids=["to_zero", "to_t_eps"])
@pytest.mark.parametrize("name", BDM_SOLVERS)
def test_counted_nfe_equals_the_plan(name, ends_at_zero):
    model = builtin_model("gmm16_bdm")
    z = model.prior(2, torch.Generator().manual_seed(2))
    for budget in (3, 4, 10, 11):
        plan = sb.solvers.plan(name, budget, schedule="karras", sigma_min=model.sigma_min, sigma_max=model.sigma_max,
                               schedule_params={"rho": 2.0}, ends_at_zero=ends_at_zero)
        counter = CountingDenoiser(model)
        out = run_solver(name, counter, z, plan.sigmas, generator=generators_for([1, 2]), options=plan.options)
        assert out.shape == z.shape and torch.isfinite(out).all()
        assert counter.nfe == plan.nfe, f"{name} at {budget}: counted {counter.nfe}, planned {plan.nfe}"
        assert plan.nfe == budget or (plan.note and plan.nfe == budget - 1)


def test_euler_maruyama_is_batch_invariant_with_per_sample_generators():
    model = builtin_model("gmm16_bdm")
    z = model.prior(3, generators_for([0, 1, 2]))
    grid = sb.schedules.karras(6, model.sigma_min, model.sigma_max, rho=2.0)
    full = sb.sample("bdm_euler_maruyama", model, z, grid, generator=generators_for([10, 11, 12]))
    part = sb.sample("bdm_euler_maruyama", model, z[1:], grid, generator=generators_for([11, 12]))
    torch.testing.assert_close(full[1:], part, rtol=0, atol=1e-12)


# --- bad input -------------------------------------------------------------------------------------

@pytest.mark.parametrize("params,match", [
    ({"sigma_blur_max": -1.0}, "sigma_blur_max must be >= 0"),
    ({"sigma_blur_max": float("nan")}, "sigma_blur_max must be a finite number"),
    ({"min_scale": 0.0}, r"min_scale \(d_min\) must lie in \(0, 1\]"),
    ({"min_scale": 1.5}, r"min_scale \(d_min\) must lie in \(0, 1\]"),
    ({"T": 1.5}, r"T must lie in \(0, 1\]"),
    ({"t_eps": 0.999}, r"t_eps must lie in \(0, t_start"),
    ({"rho_max": "80"}, "rho_max must be a finite number"),
    ({"blur": 3}, "unexpected keyword argument 'blur'"),
])
def test_bad_process_parameters_give_one_readable_value_error(params, match):
    with pytest.raises(ValueError, match=match):
        process_from_config({"name": "bdm", **params})


def test_misuse_of_the_samplers_is_rejected_with_what_to_change():
    model = builtin_model("gmm16_bdm")
    z = model.prior(2)
    grid = sb.schedules.karras(4, model.sigma_min, model.sigma_max, rho=2.0)
    with pytest.raises(ValueError, match="blurring diffusion only.*`process_def`"):  # a bare callable
        sb.sample("gddim_bdm", builtin_model("gmm16").distribution, z.reshape(2, 16), grid)
    with pytest.raises(ValueError, match="'gddim_bdm' does not apply to 'gaussian' processes"):
        sb.sample("gddim_bdm", builtin_model("gmm16"), z.reshape(2, 16), grid)
    with pytest.raises(ValueError, match=r"starts at 80.*sigma_max=model.sigma_max"):
        sb.sample("bdm_heun", model, z, sb.schedules.karras(4, 0.002, 80.0))
    with pytest.raises(ValueError, match=r"image batch \[B, C, H, W\]"):
        sb.sample("bdm_euler", model, z.reshape(2, 16), grid)
    with pytest.raises(ValueError, match="option order=4"):
        sb.sample("gddim_bdm", model, z, grid, order=4)
    with pytest.raises(ValueError, match="does not apply to 'bdm' processes"):
        sb.sample("heun", model, z, grid)


def test_speedup_table_reads_factors_against_each_baselines_own_budgets():
    """benchmarks/bdm_speedup.py: n/b with n the fewest baseline NFE not significantly worse than gDDIM at b,
    and '> (the baseline's largest NFE)/b' when none is, not the sweep's largest budget (a budget swept for
    gDDIM alone must not inflate a baseline's bound)."""
    import importlib.util
    from pathlib import Path

    import pandas as pd

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bdm_speedup.py"
    spec = importlib.util.spec_from_file_location("bdm_speedup", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    noise = np.random.default_rng(0).normal(0.0, 0.1, 64)  # shared seeds: replicate r reweights the same samples
    rows, reps = [], {}
    for k, (label, solver, nfe, fd) in enumerate([
            ("gddim_bdm (order 1)", "gddim_bdm", 10, 20.0), ("gddim_bdm (order 1)", "gddim_bdm", 100, 5.0),
            ("bdm_euler_maruyama", "bdm_euler_maruyama", 10, 90.0), ("bdm_euler_maruyama", "bdm_euler_maruyama", 50, 20.0),
            ("bdm_euler", "bdm_euler", 10, 40.0), ("bdm_euler", "bdm_euler", 50, 30.0)]):
        rows.append({"cell_id": f"c{k}", "label": label, "solver": solver, "nfe_counted": nfe, "corrected": fd,
                     "ci_low": fd - 1, "ci_high": fd + 1})
        reps[(f"c{k}", "fd", "fd")] = fd + noise
    lines = mod.speedup_lines(pd.DataFrame(rows), reps)
    by_nfe = {line.split(" | ")[1]: line.split(" | ")[3:] for line in lines[2:]}
    # at 10 NFE: Euler-Maruyama gets there at 50 (5x), Euler never within its 50 (> 5x); Heun was not swept
    assert by_nfe["10"] == ["5x (50 NFE)", "> 5x", "not swept |"]
    # at 100 NFE (swept for gDDIM only) neither baseline gets there: the bound is 50/100, not 100/100
    assert by_nfe["100"] == ["> 0.5x", "> 0.5x", "not swept |"]
