"""The CLD process: closed-form moments, gDDIM's R_t, HSM training pieces, prior, exact CLD oracles.

Formulas: docs/processes.md (CLD, exact denoisers); docs/solvers.md (CLD samplers).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

from sampler_bench.processes.analytic import GaussianMixture
from sampler_bench.processes.cld import (
    CLD, CLDAnalyticModel, CLDGaussianMixture, CLDPointSet, apply2, inv2, split_state, stack_state,
)
from sampler_bench.solvers.noise import generators_for


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def cld() -> CLD:
    return CLD()


@pytest.fixture(scope="module")
def mixture() -> GaussianMixture:
    """2-D mixture of 3 full-covariance components (one nearly degenerate)."""
    f64 = {"dtype": torch.float64}
    covs = torch.tensor([[[0.30, 0.10], [0.10, 0.20]], [[0.05, 0.0], [0.0, 0.40]], [[0.01, 0.0], [0.0, 1e-6]]], **f64)
    return GaussianMixture(torch.tensor([0.5, 0.3, 0.2], **f64), torch.tensor([[1.0, 0.0], [-1.0, 0.5], [0.2, -1.0]], **f64), covs)


def noisy_states(dist, cld: CLD, t, n: int, seed: int) -> torch.Tensor:
    """States drawn from the exact marginal p_t (data draw, then the CLD kernel)."""
    x0 = dist.sample(n, generator=gen(seed))
    u, _ = cld.perturb(x0, torch.full((n,), float(t), dtype=torch.float64), gen(seed + 1))
    return u


# --- moments --------------------------------------------------------------------------------------

@pytest.mark.parametrize("params", [{}, {"beta_1": 3.0, "m_inv": 2.0, "gamma": 0.5}], ids=["defaults", "time_varying_beta"])
def test_closed_form_mean_and_covariance_match_the_moment_odes(params):
    """dm/dt = F m and dSigma/dt = F Sigma + Sigma F^T + G G^T (solved with DOP853) against Psi and cov()."""
    c = CLD(**params)
    s0 = np.diag([0.3, 0.7])  # a general diagonal Sigma_0, not only the HSM one
    m0 = np.array([0.8, -0.4])

    def rhs(t, y):
        F, GG = c.F(t), c.GGT(t)
        S = y[2:].reshape(2, 2)
        return np.concatenate([F @ y[:2], (F @ S + S @ F.T + GG).ravel()])

    ts = [1e-3, 0.05, 0.3, 1.0]
    sol = solve_ivp(rhs, (0.0, 1.0), np.concatenate([m0, s0.ravel()]), method="DOP853", rtol=1e-12, atol=1e-14,
                    t_eval=ts)
    for k, t in enumerate(ts):
        np.testing.assert_allclose(c.psi(t, 0.0) @ m0, sol.y[:2, k], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(c.cov(t, s0), sol.y[2:, k].reshape(2, 2), rtol=1e-9, atol=1e-12)
    # Psi composes as a transition matrix, and Sigma_T is close to the equilibrium diag(1, M) at T = 1.
    np.testing.assert_allclose(c.psi(0.9, 0.2), c.psi(0.9, 0.5) @ c.psi(0.5, 0.2), rtol=1e-12, atol=1e-14)
    if not params:
        np.testing.assert_allclose(c.cov(1.0), c.stationary_cov, atol=5e-5)


def test_hsm_covariance_keeps_full_relative_accuracy_at_tiny_times(cld):
    """Sigma_xx ~ numerical_eps + O(t^2) near 0: the cancellation-free closed form agrees with the
    Lyapunov ODE (integrated with a relative tolerance only) entry by entry to 1e-9 relative."""
    S0 = cld.sigma0

    def rhs(t, y):
        S = y.reshape(2, 2)
        return (cld.F(t) @ S + S @ cld.F(t).T + cld.GGT(t)).ravel()

    ts = [1e-7, 1e-5, 1e-3, 1e-1]
    sol = solve_ivp(rhs, (0.0, 0.1), S0.ravel(), method="DOP853", rtol=1e-13, atol=1e-30, t_eval=ts)
    for k, t in enumerate(ts):
        np.testing.assert_allclose(cld.cov(t), sol.y[:, k].reshape(2, 2), rtol=1e-9, atol=0)
    np.testing.assert_array_equal(cld.cov(0.0), S0)


# --- R_t ------------------------------------------------------------------------------------------

def test_R_at_1_matches_the_reference_value(cld):
    """Independently derived: R_1 ~ [[0.99662, -0.08206], [0.04104, 0.49831]] (not symmetric, not Cholesky)."""
    R1 = cld.R(1.0)
    np.testing.assert_allclose(R1, [[0.99662, -0.08206], [0.04104, 0.49831]], atol=6e-6)
    assert not np.allclose(R1, cld.L(1.0), atol=1e-3)


def test_R_R_transpose_equals_the_lyapunov_covariance(cld):
    ts = np.concatenate([[0.0], np.geomspace(1e-6, 1.0, 40)])
    R = cld.R(ts)
    S = cld.cov(ts)
    rel = np.abs(R @ np.swapaxes(R, -1, -2) - S).max(axis=(1, 2)) / np.abs(S).max(axis=(1, 2))
    assert rel.max() < 1e-11


def test_R_solves_gddim_eq_17(cld):
    """Central differences of the interpolated R_t satisfy dR/dt = F R + 1/2 G G^T R^{-T}."""
    for t in (2e-3, 0.1, 0.6):
        h = 1e-5 * t
        dR = (cld.R(t + h) - cld.R(t - h)) / (2 * h)
        R = cld.R(t)
        rhs = cld.F(t) @ R + 0.5 * cld.GGT(t) @ inv2(R).T
        np.testing.assert_allclose(dR, rhs, rtol=1e-5, atol=1e-5 * np.abs(rhs).max())


def test_R_rejects_times_outside_the_process(cld):
    with pytest.raises(ValueError, match=r"\[0, T=1\]"):
        cld.R(1.5)


# --- kernel, training, prior ----------------------------------------------------------------------

def test_perturb_draws_the_hsm_kernel(cld):
    n, t = 40000, 0.2
    x0 = torch.full((n, 1), 0.7, dtype=torch.float64)
    u, eps = cld.perturb(x0, t, gen(3))
    assert u.shape == (n, 2, 1) and eps.shape == (n, 2, 1)
    flat = u[:, :, 0].numpy()
    mean = cld.psi(t, 0.0)[:, 0] * 0.7
    se = np.sqrt(np.diag(cld.cov(t)) / n)
    assert np.all(np.abs(flat.mean(0) - mean) < 5 * se)
    np.testing.assert_allclose(np.cov(flat.T), cld.cov(t), rtol=0.05, atol=1e-6)
    # u = mean + R eps exactly, with the eps handed back as the regression target.
    np.testing.assert_allclose(flat - mean, eps[:, :, 0].numpy() @ cld.R(t).T, atol=1e-12)


def test_hsm_loss_vanishes_for_the_exact_eps_of_a_single_point(cld):
    """For one data point the exact eps is R_t^{-1}(u - Psi(t,0)(x0, 0)), i.e. the noise drawn: loss 0.
    A network that outputs zeros pays E|eps|^2 = 2 d per sample instead."""
    y = torch.tensor([[0.4, -1.2, 0.3]], dtype=torch.float64)
    exact = CLDPointSet(y, cld)
    x0 = y.expand(64, 3).clone()
    assert cld.hsm_loss(exact, x0, gen(4)).item() < 1e-16
    zero = cld.hsm_loss(lambda u, t: torch.zeros_like(u), x0, gen(4), reduction="none")
    assert zero.shape == (64,)
    assert abs(zero.mean().item() - 6.0) < 5 * math.sqrt(12 / 64)
    with pytest.raises(ValueError, match="shape"):
        cld.hsm_loss(lambda u, t: u[:, 0], x0, gen(4))


def test_training_times_lie_in_the_training_range(cld):
    t = cld.sample_time(5000, gen(5))
    assert t.min() >= cld.t_min_train and t.max() <= cld.T
    assert abs(t.mean().item() - 0.5 * (cld.t_min_train + cld.T)) < 0.02


def test_prior_is_the_equilibrium_and_per_sample_seeded(cld):
    u = cld.prior(40000, (2,), gen(6))
    assert u.shape == (40000, 2, 2)
    x, v = split_state(u)
    assert abs(x.var().item() - 1.0) < 0.03 and abs(v.var().item() - cld.M) < 0.03 * cld.M
    a = cld.prior(3, (2,), generators_for([7, 8, 9]))
    b = cld.prior(1, (2,), generators_for([8]))
    torch.testing.assert_close(a[1:2], b, rtol=0, atol=0)


def test_config_round_trips_and_bad_parameters_raise():
    c = CLD(m_inv=2.0, beta_1=1.0, numerical_eps=1e-9)
    assert CLD.from_config(c.config()) == c
    with pytest.raises(ValueError, match="m_inv"):
        CLD(m_inv=0.0)
    with pytest.raises(ValueError, match="t_eps"):
        CLD(t_eps=2.0)
    with pytest.raises(ValueError, match="unexpected keyword"):
        CLD.from_config({"name": "cld", "mass": 1.0})


# --- exact oracles --------------------------------------------------------------------------------

def _dense_gmm_terms(mixture: GaussianMixture, cld: CLD, u: torch.Tensor, t: float):
    """Direct Gaussian conditioning with explicit 2d x 2d matrices (layout [x_1..x_d, v_1..v_d])."""
    d = mixture.dim
    a = torch.as_tensor(cld.psi(t, 0.0)[:, 0])
    eye = torch.eye(d, dtype=torch.float64)
    A = torch.cat([a[0] * eye, a[1] * eye], 0)  # [2d, d]
    S = torch.kron(torch.as_tensor(cld.cov(t)), eye)
    flat = u.reshape(u.shape[0], 2 * d)
    logits, scores, posts = [], [], []
    for k in range(mixture.n_components):
        C = A @ mixture.covs[k] @ A.T + S
        Cinv = torch.linalg.inv(C)
        diff = flat - (A @ mixture.means[k])
        logits.append(torch.log(mixture.weights[k])
                      + torch.distributions.MultivariateNormal(A @ mixture.means[k], C).log_prob(flat))
        scores.append(-diff @ Cinv)
        posts.append(mixture.means[k] + diff @ Cinv @ A @ mixture.covs[k])
    w = torch.softmax(torch.stack(logits, 1), 1)
    score = (w[:, :, None] * torch.stack(scores, 1)).sum(1)
    post = (w[:, :, None] * torch.stack(posts, 1)).sum(1)
    return torch.logsumexp(torch.stack(logits, 1), 1), score.reshape(u.shape), post


@pytest.mark.parametrize("t", [2e-3, 0.05, 0.5])
def test_gmm_oracle_matches_direct_gaussian_conditioning(mixture, cld, t):
    oracle = CLDGaussianMixture(mixture, cld)
    u = noisy_states(oracle, cld, t, 16, seed=10)
    logp, score, post = _dense_gmm_terms(mixture, cld, u, t)
    tt = torch.full((16,), t, dtype=torch.float64)
    torch.testing.assert_close(oracle.log_prob(u, tt), logp, rtol=1e-10, atol=1e-8)
    torch.testing.assert_close(oracle.score(u, tt), score, rtol=1e-8, atol=1e-8 * score.abs().max().item())
    torch.testing.assert_close(oracle.posterior_mean(u, tt), post, rtol=1e-8, atol=1e-9)
    torch.testing.assert_close(oracle.velocity_score(u, tt), score[:, 1], rtol=1e-8, atol=1e-8 * score.abs().max().item())
    # The score is the gradient of the log-density (autograd through the oracle's own log_prob).
    ug = u.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(oracle.log_prob(ug, tt).sum(), ug)
    torch.testing.assert_close(grad, oracle.score(u, tt), rtol=1e-8, atol=1e-8 * score.abs().max().item())


def test_gmm_posterior_mean_matches_monte_carlo(mixture, cld):
    """E[x0 | u] by self-normalised importance sampling over 400k data draws (kernel as the weight)."""
    t = 0.3
    oracle = CLDGaussianMixture(mixture, cld)
    u = noisy_states(oracle, cld, t, 3, seed=11)
    x0 = mixture.sample(400_000, generator=gen(12))
    a = cld.psi(t, 0.0)[:, 0]
    P = torch.as_tensor(inv2(cld.cov(t)))
    for b in range(3):
        ex = u[b, 0][None] - a[0] * x0
        ev = u[b, 1][None] - a[1] * x0
        logw = -0.5 * (P[0, 0] * ex**2 + 2 * P[0, 1] * ex * ev + P[1, 1] * ev**2).sum(1)
        w = torch.softmax(logw, 0)
        mc = (w[:, None] * x0).sum(0)
        ess = 1.0 / (w**2).sum().item()
        assert ess > 1000
        spread = torch.sqrt((w[:, None] * (x0 - mc) ** 2).sum(0) / ess)
        exact = oracle.posterior_mean(u[b:b + 1], torch.tensor([t], dtype=torch.float64))[0]
        assert torch.all((mc - exact).abs() < 5 * spread + 1e-9), (mc, exact, spread)


@pytest.mark.parametrize("t", [2e-3, 0.2])
def test_point_set_oracle_matches_brute_force(cld, t):
    pts = torch.randn(7, 3, generator=gen(13), dtype=torch.float64)
    oracle = CLDPointSet(pts, cld)
    u = noisy_states(oracle, cld, t, 5, seed=14)
    tt = torch.full((5,), t, dtype=torch.float64)
    a = cld.psi(t, 0.0)[:, 0]
    P = torch.as_tensor(inv2(cld.cov(t)))

    def logp(state):  # log sum_i exp(-Q_i/2), Q_i summed over coordinates, one point at a time
        terms = []
        for y in pts:
            ex, ev = state[:, 0] - a[0] * y, state[:, 1] - a[1] * y
            terms.append(-0.5 * (P[0, 0] * ex**2 + 2 * P[0, 1] * ex * ev + P[1, 1] * ev**2).sum(1))
        return torch.logsumexp(torch.stack(terms, 1), 1), torch.softmax(torch.stack(terms, 1), 1)

    _, w = logp(u)
    torch.testing.assert_close(oracle.posterior_mean(u, tt), w @ pts, rtol=1e-10, atol=1e-12)
    ug = u.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(logp(ug)[0].sum(), ug)
    torch.testing.assert_close(oracle.score(u, tt), grad, rtol=1e-9, atol=1e-9 * grad.abs().max().item())


def test_point_set_equals_a_zero_variance_mixture(cld):
    pts = torch.tensor([[0.5, -0.2], [-1.0, 0.3], [0.1, 1.1]], dtype=torch.float64)
    as_points = CLDPointSet(pts, cld)
    as_mixture = CLDGaussianMixture(GaussianMixture(torch.ones(3), pts, torch.zeros(3, 2, 2)), cld)
    u = noisy_states(as_points, cld, 0.1, 6, seed=15)
    tt = torch.full((6,), 0.1, dtype=torch.float64)
    torch.testing.assert_close(as_points.eps(u, tt), as_mixture.eps(u, tt), rtol=1e-9, atol=1e-9)


def test_exact_eps_is_minus_K_transpose_score_for_both_factors(mixture, cld):
    oracle = CLDGaussianMixture(mixture, cld)
    u = noisy_states(oracle, cld, 0.3, 4, seed=16)
    tt = torch.full((4,), 0.3, dtype=torch.float64)
    score = oracle.score(u, tt)
    for kind in ("R", "L"):
        eps = oracle.eps(u, tt, kind)
        K = cld.K(0.3, kind)
        # score = -K^{-T} eps recovers the score from either parameterisation.
        torch.testing.assert_close(apply2(-inv2(K).T, eps), score, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(cld.score_from_eps(u, tt, oracle.eps(u, tt)), score, rtol=1e-10, atol=1e-10)


def test_analytic_model_follows_the_cld_model_contract(mixture, cld):
    model = CLDAnalyticModel.from_mixture("gmm2d_cld", mixture, cld)
    assert model.process == "cld" and model.cld is cld and model.shape == (2,)
    assert (model.sigma_min, model.sigma_max) == (cld.t_eps, cld.T)
    u = model.prior(5, gen(17))
    assert u.shape == (5, 2, 2)
    eps = model(u, torch.full((5,), 0.7, dtype=torch.float64))
    assert eps.shape == u.shape and eps.dtype == u.dtype
    torch.testing.assert_close(model.data_from_state(u), u[:, 0])
    assert torch.equal(stack_state(*split_state(u)), u)
    assert model.fingerprint() == CLDAnalyticModel.from_mixture("gmm2d_cld", mixture, cld).fingerprint()
    assert model.fingerprint() != CLDAnalyticModel.from_mixture("gmm2d_cld", mixture, CLD(m_inv=2.0)).fingerprint()
    # float32 states in, float32 eps out (networks run in float32).
    assert model(u.float(), torch.full((5,), 0.7)).dtype == torch.float32
