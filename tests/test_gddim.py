"""gDDIM and the other CLD samplers: exactness, convergence orders, the R_t vs L_t effect, NFE, options.

Reference: Zhang, Tao, Chen, arXiv 2206.05564 (docs/solvers.md, "CLD samplers"). The yardstick is scipy's
DOP853 on the CLD probability-flow ODE du/dt = F u + 1/2 G G^T R_t^{-T} eps(u, t) in float64 (the registered
``cld_reference``), with the exact eps of a Gaussian mixture under the CLD kernel, ending at t > 0 (docs/solvers.md, "Reference integrators").
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import sampler_bench as sb
from sampler_bench.processes.analytic import GaussianMixture
from sampler_bench.processes.cld import CLD, CLDAnalyticModel, apply2, chol2, inv2
from sampler_bench.solvers.cld import gddim as G
from sampler_bench.solvers.driver import CountingDenoiser, run_solver
from sampler_bench.solvers.noise import generators_for

CLD_SOLVERS = ["gddim", "gddim_sde", "cld_euler_maruyama", "cld_euler", "cld_heun"]
T_GDDIM, T_EULER = 1e-2, 1e-1  # end times of the order fits (docs/solvers.md: end at t > 0)


def err(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def order_fit(errors, steps) -> float:
    return -np.polyfit(np.log(steps), np.log(errors), 1)[0]


@pytest.fixture(scope="module")
def cld() -> CLD:
    return CLD()


@pytest.fixture(scope="module")
def gmm_model(cld) -> CLDAnalyticModel:
    """A 2-D mixture of three Gaussians (std 0.3) under default CLD: exact eps."""
    f64 = {"dtype": torch.float64}
    gm = GaussianMixture.isotropic(torch.tensor([0.5, 0.3, 0.2], **f64),
                                   torch.tensor([[1.0, 0.0], [-1.0, 0.5], [0.0, -1.0]], **f64), 0.3)
    return CLDAnalyticModel.from_mixture("gmm_cld", gm, cld)


@pytest.fixture(scope="module")
def point_model(cld) -> CLDAnalyticModel:
    """A single data point: its exact eps is constant along probability-flow paths when K_t = R_t."""
    return CLDAnalyticModel.from_points("point_cld", torch.tensor([[0.7, -0.3]], dtype=torch.float64), cld)


@pytest.fixture(scope="module")
def order_problem(gmm_model):
    """Four prior draws at T and their exact-ODE states at T_EULER and T_GDDIM (the library's
    ``cld_reference``: DOP853 in log t, rtol = atol = 1e-10; the second leg continues the first)."""
    u0 = gmm_model.prior(4, torch.Generator().manual_seed(0))
    at_euler = sb.sample("cld_reference", gmm_model, u0, [gmm_model.sigma_max, T_EULER])
    at_gddim = sb.sample("cld_reference", gmm_model, at_euler, [T_EULER, T_GDDIM])
    return u0, {T_EULER: at_euler, T_GDDIM: at_gddim}


def exact_single_point(cld, y: torch.Tensor, u: torch.Tensor, t0: float, t1: float) -> torch.Tensor:
    """Exact PF-ODE transport for one data point y: u(t1) - m(t1) = R_{t1} R_{t0}^{-1} (u(t0) - m(t0))."""
    a0, a1 = cld.psi(t0, 0.0)[:, 0], cld.psi(t1, 0.0)[:, 0]
    m0 = torch.stack([a0[0] * y, a0[1] * y])
    m1 = torch.stack([a1[0] * y, a1[1] * y])
    return m1 + apply2(cld.R(t1) @ inv2(cld.R(t0)), u - m0)


# --- grids and coefficients -----------------------------------------------------------------------

def test_quadratic_grid_is_gddims_ts_order_2_grid_and_plan_reproduces_it(gmm_model):
    n = 20
    ref = (np.linspace(1.0**0.5, 1e-3**0.5, n) ** 2).tolist() + [0.0]  # sampling.py get_rev_ts, nfe = n
    grid = G.cld_time_quadratic(n)
    np.testing.assert_allclose(grid.numpy(), ref, rtol=1e-14, atol=0)
    p = sb.solvers.plan("gddim", n, schedule="karras", sigma_min=gmm_model.sigma_min, sigma_max=gmm_model.sigma_max,
                        schedule_params={"rho": 2.0})
    assert torch.equal(p.sigmas, grid) and p.nfe == n and p.steps == n
    np.testing.assert_allclose(G.cld_time_uniform(4, append_zero=False).numpy(), np.linspace(1.0, 1e-3, 5), rtol=1e-14)


def test_order0_coefficient_matches_the_reference_value(cld):
    """Independently derived: t = 0.6 -> 0.45 gives [[-1.44964, -2.88291], [2.00632, 3.22817]]."""
    np.testing.assert_allclose(G.order0_eps_coefficient(cld, 0.6, 0.45),
                               [[-1.44964, -2.88291], [2.00632, 3.22817]], atol=6e-6)


@pytest.mark.parametrize("n", [5, 12, 60])
def test_quadrature_reproduces_the_closed_form_order0_coefficient(cld, n):
    times = G.cld_time_quadratic(n, append_zero=False).numpy()
    _, w, integrand = G._quadrature(cld, times[:-1], times[1:], "R")
    quad = np.einsum("nm,nmab->nab", w, integrand)
    closed = np.stack([G.order0_eps_coefficient(cld, a, b) for a, b in zip(times[:-1], times[1:])])
    assert np.abs(quad - closed).max() < 1e-12 * max(1.0, np.abs(closed).max())


def test_multistep_coefficients_sum_to_the_one_point_coefficient(cld):
    """The Lagrange basis sums to 1, so sum_j C_ij = int Psi 1/2 GG^T R^-T = the order-0 coefficient."""
    times = tuple(G.cld_time_quadratic(15, append_zero=False).tolist())
    for order in (2, 3):
        for i, (psi, coefs) in enumerate(G.multistep_coefficients(cld, times, order, "R")):
            assert coefs.shape == (min(order, i + 1), 2, 2)
            np.testing.assert_allclose(psi, cld.psi(times[i + 1], times[i]), rtol=1e-15)
            one = G.order0_eps_coefficient(cld, times[i], times[i + 1])
            assert np.abs(coefs.sum(0) - one).max() < 1e-11 * max(1.0, np.abs(one).max())


# --- exactness and orders -------------------------------------------------------------------------

@pytest.mark.parametrize("order", [1, 2, 3])
def test_gddim_with_R_is_exact_for_a_single_data_point(point_model, cld, order):
    """gDDIM Prop. 4: with K_t = R_t the exact eps is constant along PF-ODE paths of a point mass, so the
    exponential integrator is exact at any step count (to coefficient accuracy)."""
    u0 = point_model.prior(4, torch.Generator().manual_seed(1))
    y = point_model.distribution.points[0]
    exact = exact_single_point(cld, y, u0, cld.T, T_GDDIM)
    for n in (2, 5):
        out = sb.sample("gddim", point_model, u0, G.cld_time_quadratic(n, t_min=T_GDDIM, append_zero=False), order=order)
        assert err(out, exact) < 1e-9
    # The Cholesky factor does not have this property: far off with few steps.
    out_l = sb.sample("gddim", point_model, u0, G.cld_time_quadratic(5, t_min=T_GDDIM, append_zero=False),
                      order=order, kt="L")
    assert err(out_l, exact) > 1e-2


@pytest.mark.parametrize("order", [1, 2, 3])
def test_gddim_converges_with_its_declared_order(order_problem, gmm_model, order):
    u0, ends = order_problem
    assert sb.solvers.info("gddim").order_for({"order": order, "kt": "R"}) == order
    steps = (80, 160, 320)
    errors = []
    for n in steps:
        grid = G.cld_time_quadratic(n, t_min=T_GDDIM, append_zero=False)
        errors.append(err(sb.sample("gddim", gmm_model, u0, grid, order=order), ends[T_GDDIM]))
    slope = order_fit(errors, steps)
    assert errors[-1] > 1e-8, "errors at round-off: the fit would be meaningless"
    assert abs(slope - order) <= 0.3, f"gddim order={order}: empirical order {slope:.2f}, errors {errors}"


@pytest.mark.parametrize("name,order,steps", [("cld_euler", 1, (80, 160, 320)), ("cld_heun", 2, (40, 80, 160))])
def test_euler_and_heun_on_the_pf_ode_converge_with_orders_1_and_2_in_t(order_problem, gmm_model, name, order, steps):
    u0, ends = order_problem
    assert sb.solvers.info(name).order == order
    errors = []
    for n in steps:
        grid = G.cld_time_quadratic(n, t_min=T_EULER, append_zero=False)
        errors.append(err(sb.sample(name, gmm_model, u0, grid), ends[T_EULER]))
    slope = order_fit(errors, steps)
    assert abs(slope - order) <= 0.3, f"{name}: empirical order {slope:.2f}, errors {errors}"


@pytest.mark.parametrize("order", [1, 3])
def test_cholesky_L_parameterisation_is_much_worse_than_R_at_low_nfe(order_problem, gmm_model, order):
    """gDDIM Table 1 (FID 3.90 vs 368 at NFE 20): with K_t = L_t the frozen eps drifts within a step."""
    u0, ends = order_problem
    for nfe in (10, 20):
        grid = G.cld_time_quadratic(nfe, t_min=T_GDDIM, append_zero=False)
        e_r = err(sb.sample("gddim", gmm_model, u0, grid, order=order), ends[T_GDDIM])
        e_l = err(sb.sample("gddim", gmm_model, u0, grid, order=order, kt="L"), ends[T_GDDIM])
        assert e_l > 5 * e_r, f"NFE {nfe}, order {order}: L error {e_l:.3g} vs R error {e_r:.3g}"


# --- NFE ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("ends_at_zero", [True, False], ids=["to_zero", "to_t_eps"])
@pytest.mark.parametrize("name", CLD_SOLVERS)
def test_counted_nfe_equals_the_plan(gmm_model, name, ends_at_zero):
    """gDDIM's nfe counts the final denoising step: a budget of n is n steps (Heun: 2n - 1 on a grid to 0)."""
    u0 = gmm_model.prior(2, torch.Generator().manual_seed(2))
    for budget in (3, 4, 10, 11):
        plan = sb.solvers.plan(name, budget, schedule="karras", sigma_min=gmm_model.sigma_min,
                               sigma_max=gmm_model.sigma_max, schedule_params={"rho": 2.0}, ends_at_zero=ends_at_zero)
        counter = CountingDenoiser(gmm_model)
        out = run_solver(name, counter, u0, plan.sigmas, generator=generators_for([1, 2]), options=plan.options)
        assert out.shape == u0.shape
        assert counter.nfe == plan.nfe, f"{name} at {budget}: counted {counter.nfe}, planned {plan.nfe}"
        assert plan.nfe == budget or (plan.note and plan.nfe == budget - 1)


# --- the final denoising step ---------------------------------------------------------------------

@pytest.mark.parametrize("name", CLD_SOLVERS)
def test_step_onto_zero_is_gddims_denoising_step(gmm_model, cld, name):
    """noise_removal: u <- u - t_eps (F u - G G^T score(u, t_eps)), one NFE, for every CLD sampler."""
    t = 2e-3
    u = gmm_model.prior(3, torch.Generator().manual_seed(3)) * 0.05
    tt = torch.full((3,), t, dtype=torch.float64)
    score = cld.score_from_eps(u, tt, gmm_model(u, tt))
    expected = u - t * (apply2(cld.F(t), u) - apply2(cld.GGT(t), score))
    counter = CountingDenoiser(gmm_model)
    out = run_solver(name, counter, u, [t, 0.0], generator=generators_for([1, 2, 3]))
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    assert counter.nfe == 1


# --- stochastic samplers --------------------------------------------------------------------------

@pytest.mark.parametrize("ends_at_zero", [True, False])
def test_stochastic_gddim_with_lambda_zero_equals_deterministic_gddim(gmm_model, ends_at_zero):
    u0 = gmm_model.prior(3, torch.Generator().manual_seed(4))
    grid = G.cld_time_quadratic(12, append_zero=ends_at_zero)
    det = sb.sample("gddim", gmm_model, u0, grid, order=1)
    sto = sb.sample("gddim_sde", gmm_model, u0, grid, lambda_coef=0.0, generator=generators_for([5, 6, 7]))
    assert torch.equal(det, sto)


def test_euler_maruyama_with_lambda_zero_equals_euler_on_the_pf_ode(gmm_model):
    u0 = gmm_model.prior(3, torch.Generator().manual_seed(8))
    grid = G.cld_time_quadratic(12)
    em = sb.sample("cld_euler_maruyama", gmm_model, u0, grid, lambda_coef=0.0, generator=generators_for([1, 2, 3]))
    assert torch.equal(em, sb.sample("cld_euler", gmm_model, u0, grid))


@pytest.mark.parametrize("lam", [0.5, 1.0, 2.0])
def test_stochastic_coefficients_preserve_the_kernel_covariance(cld, lam):
    """For a point mass the update maps N(m_s, Sigma_s) to N(m_t, Psi_hat Sigma_s Psi_hat^T + P); Prop. 6
    is exact there, so this must be Sigma_t: in the R frame W W^T + Q = I."""
    times = G.cld_time_quadratic(6, t_min=T_GDDIM, append_zero=False).tolist()
    for s, t in zip(times[:-1], times[1:]):
        W, Q = G._w_and_q(cld, s, t, lam)
        np.testing.assert_allclose(W @ W.T + Q, np.eye(2), atol=1e-8)
        assert np.all(np.linalg.eigvalsh(0.5 * (Q + Q.T)) > -1e-10)
        np.testing.assert_allclose(Q, Q.T, atol=1e-10)


def test_stochastic_gddim_samples_the_exact_law_of_a_single_point(point_model, cld):
    """Started from the exact marginal at T, lambda = 1 gDDIM keeps the exact kernel law N(m_t, Sigma_t)
    at every grid time; the last step has its covariance P zeroed (reference code), so the final law is
    N(m_t, Sigma_t - P_last)."""
    n, y = 6000, point_model.distribution.points[0]
    times = G.cld_time_quadratic(5, t_min=0.05, append_zero=False).tolist()
    x0 = y.expand(n, 2).clone()
    u0, _ = cld.perturb(x0, torch.full((n,), cld.T, dtype=torch.float64), torch.Generator().manual_seed(9))
    out = sb.sample("gddim_sde", point_model, u0, times, lambda_coef=1.0, generator=torch.Generator().manual_seed(10))
    W, Q = G._w_and_q(cld, times[-2], times[-1], 1.0)
    R = cld.R(times[-1])
    cov = cld.cov(times[-1]) - R @ Q @ R.T
    mean = cld.psi(times[-1], 0.0)[:, 0]
    # Whiten each coordinate's (x, v) pair with the expected law: mean 0, covariance I within MC error.
    z = apply2(inv2(chol2(cov)), out - torch.stack([mean[0] * y, mean[1] * y])[None])
    z = z.permute(0, 2, 1).reshape(-1, 2).numpy()
    assert np.abs(z.mean(0)).max() < 5 / math.sqrt(len(z))
    np.testing.assert_allclose(np.cov(z.T), np.eye(2), atol=6 * math.sqrt(2 / len(z)))


@pytest.mark.parametrize("name", ["gddim_sde", "cld_euler_maruyama"])
def test_stochastic_samplers_are_batch_invariant_with_per_sample_generators(gmm_model, name):
    u0 = gmm_model.prior(4, torch.Generator().manual_seed(11))
    grid = G.cld_time_quadratic(8)
    full = sb.sample(name, gmm_model, u0, grid, generator=generators_for([20, 21, 22, 23]))
    part = sb.sample(name, gmm_model, u0[[2, 0]], grid, generator=generators_for([22, 20]))
    assert torch.equal(part, full[[2, 0]])
    other = sb.sample(name, gmm_model, u0, grid, generator=generators_for([30, 31, 32, 33]))
    assert err(other, full) > 1e-3  # the noise is real


# --- registry metadata and errors -----------------------------------------------------------------

def test_cld_samplers_are_registered_for_cld_only_with_their_orders():
    expected = {"gddim": (3, False), "gddim_sde": (1, True), "cld_euler_maruyama": (1, True),
                "cld_euler": (1, False), "cld_heun": (2, False)}
    for name, (order, stochastic) in expected.items():
        meta = sb.solvers.info(name)
        assert meta.processes == ("cld",)
        assert (meta.order, meta.stochastic) == (order, stochastic)
    meta = sb.solvers.info("gddim")
    assert [meta.order_for(meta.validate({"order": k})) for k in (1, 2, 3)] == [1, 2, 3]


@pytest.mark.parametrize("name,options,match", [
    ("gddim", {"order": 4}, "option order=4"),
    ("gddim", {"kt": "cholesky"}, "option kt='cholesky'.*'R', 'L'"),
    ("gddim", {"deis_order": 2}, "no option 'deis_order'"),
    ("gddim_sde", {"lambda_coef": -0.5}, "lambda_coef=-0.5.*>= 0"),
    ("cld_euler_maruyama", {"lambda_coef": float("nan")}, "lambda_coef"),
])
def test_bad_options_raise_one_readable_value_error(gmm_model, name, options, match):
    u0 = gmm_model.prior(1)
    with pytest.raises(ValueError, match=match):
        sb.sample(name, gmm_model, u0, G.cld_time_quadratic(4), **options)


def test_misuse_is_rejected_with_what_to_change(gmm_model):
    u0 = gmm_model.prior(2)
    gaussian = gmm_model.distribution  # the data law: an isotropic denoiser D(x, sigma), not a CLD model
    with pytest.raises(ValueError, match="critically-damped Langevin diffusion only.*`process_def`"):
        sb.sample("gddim", gaussian, u0, G.cld_time_quadratic(4))
    with pytest.raises(ValueError, match="starts at 80.*sigma_max=model.sigma_max"):
        sb.sample("cld_heun", gmm_model, u0, sb.schedules.karras(4, 0.002, 80.0))
    with pytest.raises(ValueError, match=r"\[B, 2, \*data_shape\]"):
        sb.sample("cld_euler", gmm_model, u0[:, 0], G.cld_time_quadratic(4))
