"""Exact denoisers (sampler_bench.processes.analytic) against independent formulas.

Each oracle here is computed a different way from the class it checks: Tweedie's formula with an
autograd score, a direct Gaussian-conditioning formula with scipy densities, brute-force sums over
points, Monte Carlo, and finite differences of the closed-form ODE solution.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from sampler_bench.processes.analytic import GaussianMixture, IsotropicGaussian, PointSet

SIGMAS = [1e-3, 0.05, 0.7, 3.0, 80.0]


def _points(seed: int, n: int, d: int) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _direct_posterior_mean(gmm: GaussianMixture, x: torch.Tensor, sigma: float) -> torch.Tensor:
    """E[x0 | x] by Gaussian conditioning per component, weights from scipy's multivariate normal."""
    d = gmm.dim
    logw = []
    posts = []
    for k in range(gmm.n_components):
        cov, mu = gmm.covs[k].numpy(), gmm.means[k].numpy()
        noisy = cov + sigma**2 * np.eye(d)
        logw.append(math.log(gmm.weights[k]) + stats.multivariate_normal(mu, noisy).logpdf(x.numpy()))
        gain = np.linalg.solve(noisy, cov).T  # cov (cov + s^2 I)^-1
        posts.append(mu + (x.numpy() - mu) @ gain.T)
    logw = np.array(logw).reshape(gmm.n_components, -1)
    w = np.exp(logw - logw.max(0))
    w /= w.sum(0)
    out = sum(w[k][:, None] * posts[k] for k in range(gmm.n_components))
    return torch.as_tensor(out)


@pytest.mark.parametrize("sigma", SIGMAS)
def test_mixture_denoiser_equals_direct_gaussian_conditioning(gmm3d, sigma):
    x = _points(0, 16, 3) * (1 + sigma)
    torch.testing.assert_close(gmm3d(x, sigma), _direct_posterior_mean(gmm3d, x, sigma), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("sigma", [0.05, 0.7, 3.0])
def test_mixture_denoiser_satisfies_tweedie_with_the_autograd_score(gmm3d, sigma):
    """D(x, sigma) = x + sigma^2 grad log p_sigma(x), the score taken by autograd of log_prob."""
    x = (_points(1, 16, 3) * (1 + sigma)).requires_grad_(True)
    (score,) = torch.autograd.grad(gmm3d.log_prob(x, sigma).sum(), x)
    torch.testing.assert_close(gmm3d(x.detach(), sigma), x.detach() + sigma**2 * score, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(gmm3d.score(x.detach(), sigma), score, rtol=1e-10, atol=1e-12)


def test_mixture_denoiser_agrees_with_monte_carlo_posterior_mean(gmm3d):
    """Self-normalised importance sampling from the prior: E[x0 | x] = sum w_i x0_i, w ~ N(x; x0_i, s^2)."""
    sigma = 0.8
    x0 = gmm3d.sample(200_000, generator=torch.Generator().manual_seed(2))
    x = _points(3, 4, 3)
    logw = -((x[:, None, :] - x0[None]) ** 2).sum(-1) / (2 * sigma**2)
    w = torch.softmax(logw, dim=1)
    mc = w @ x0
    ess = 1.0 / (w**2).sum(1)  # effective sample size: the Monte Carlo error is ~ spread / sqrt(ess)
    assert (ess > 2000).all()
    torch.testing.assert_close(gmm3d(x, sigma), mc, rtol=0, atol=0.05)


def test_mixture_log_prob_equals_scipy_mixture_density(gmm3d):
    x = _points(4, 32, 3) * 2
    for sigma in (0.0, 0.3, 5.0):
        dens = sum(gmm3d.weights[k].item() * stats.multivariate_normal(
            gmm3d.means[k].numpy(), gmm3d.covs[k].numpy() + sigma**2 * np.eye(3)).pdf(x.numpy())
            for k in range(gmm3d.n_components))
        np.testing.assert_allclose(gmm3d.log_prob(x, sigma).numpy(), np.log(dens), rtol=1e-11)


def test_mixture_log_prob_integrates_to_one():
    gmm = GaussianMixture(torch.tensor([0.2, 0.8]), torch.tensor([[-1.0, 0.5], [1.5, 0.0]]),
                          torch.tensor([[[0.3, 0.1], [0.1, 0.2]], [[0.5, -0.2], [-0.2, 0.4]]]))
    grid = torch.linspace(-7, 7, 701, dtype=torch.float64)
    xx, yy = torch.meshgrid(grid, grid, indexing="ij")
    pts = torch.stack([xx.reshape(-1), yy.reshape(-1)], 1)
    cell = (grid[1] - grid[0]) ** 2
    for sigma in (0.0, 0.5):
        assert math.isclose((gmm.log_prob(pts, sigma).exp().sum() * cell).item(), 1.0, abs_tol=1e-6)


def test_mixture_sample_moments_match_mean_and_covariance(gmm3d):
    x = gmm3d.sample(100_000, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(x.mean(0), gmm3d.mean, rtol=0, atol=0.03)
    torch.testing.assert_close(torch.cov(x.T), gmm3d.covariance, rtol=0, atol=0.05)


def test_mixture_sample_i_depends_only_on_its_own_generator(gmm3d):
    gens = lambda seeds: [torch.Generator().manual_seed(s) for s in seeds]  # noqa: E731
    full = gmm3d.sample(4, generator=gens([7, 8, 9, 10]))
    assert torch.equal(gmm3d.sample(2, generator=gens([9, 7])), full[[2, 0]])


@pytest.mark.parametrize("sigma", [1e-8, 1e-6])
def test_mixture_denoiser_is_finite_and_exact_at_tiny_sigma(gmm3d, sigma):
    """Far from every mean, the log-sum-exp keeps the responsibilities finite; D -> x as sigma -> 0
    for a full-rank mixture (the data density is smooth)."""
    x = torch.tensor([[40.0, -35.0, 20.0], [0.1, 0.2, 0.3], [-3.0, 5.0, 1.0]], dtype=torch.float64)
    out = gmm3d(x, sigma)
    assert torch.isfinite(out).all()
    # D - x = sigma^2 * score, and |score| < 1e3 at these points.
    torch.testing.assert_close(out, x, rtol=0, atol=1e3 * sigma**2 + 1e-12)
    assert torch.isfinite(gmm3d.log_prob(x, sigma)).all()
    assert torch.isfinite(gmm3d.responsibilities(x, sigma)).all()


def test_mixture_denoiser_at_huge_sigma_is_the_mean_plus_covariance_term(gmm3d):
    """For any data law, D(x, sigma) = mean + Cov (x - mean)/sigma^2 + O(|x|^2/sigma^4)."""
    sigma = 1e3
    x = _points(6, 8, 3) * sigma
    linear = gmm3d.mean + (x - gmm3d.mean) @ gmm3d.covariance / sigma**2  # ~1e-3 away from the mean
    assert (linear - gmm3d.mean).abs().max() > 1e-4
    torch.testing.assert_close(gmm3d(x, sigma), linear, rtol=0, atol=1e-5)


def test_mixture_denoiser_accepts_per_sample_sigma(gmm3d):
    x = _points(7, 3, 3)
    sig = torch.tensor([0.1, 1.0, 10.0], dtype=torch.float64)
    rows = torch.cat([gmm3d(x[i:i + 1], float(sig[i])) for i in range(3)])
    torch.testing.assert_close(gmm3d(x, sig), rows, rtol=1e-14, atol=1e-14)


def test_isotropic_mixture_with_one_component_equals_isotropic_gaussian(gaussian3d):
    gmm = GaussianMixture.isotropic([1.0], gaussian3d.mean[None], gaussian3d.std)
    x = _points(8, 8, 3) * 3
    for sigma in (0.01, 1.0, 50.0):
        torch.testing.assert_close(gmm(x, sigma), gaussian3d(x, sigma), rtol=1e-13, atol=1e-14)


# ------------------------------------------------------------------------------------------------
# Finite point sets.
# ------------------------------------------------------------------------------------------------


def _brute_force_point_denoiser(points, weights, x, sigma):
    out = torch.empty_like(x)
    for b in range(x.shape[0]):
        logits = torch.tensor([math.log(w) - ((x[b] - p) ** 2).sum().item() / (2 * sigma**2)
                               for p, w in zip(points, weights)], dtype=torch.float64)
        out[b] = (torch.softmax(logits, 0)[:, None] * points).sum(0)
    return out


@pytest.mark.parametrize("sigma", [0.05, 0.5, 5.0])
def test_point_set_denoiser_equals_brute_force(sigma):
    pts = _points(9, 12, 4)
    w = torch.rand(12, generator=torch.Generator().manual_seed(10), dtype=torch.float64) + 0.1
    x = _points(11, 6, 4) * 1.5
    expected = _brute_force_point_denoiser(pts, (w / w.sum()).tolist(), x, sigma)
    torch.testing.assert_close(PointSet(pts, w)(x, sigma), expected, rtol=1e-11, atol=1e-12)
    torch.testing.assert_close(PointSet(pts)(x, sigma), _brute_force_point_denoiser(pts, [1 / 12] * 12, x, sigma),
                               rtol=1e-11, atol=1e-12)


def test_point_set_keeps_image_shapes():
    pts = _points(12, 5, 2 * 3 * 3).reshape(5, 2, 3, 3)
    x = _points(13, 4, 18).reshape(4, 2, 3, 3)
    out = PointSet(pts)(x, 0.7)
    assert out.shape == x.shape
    torch.testing.assert_close(out.reshape(4, -1), PointSet(pts.reshape(5, -1))(x.reshape(4, -1), 0.7))


def test_point_set_denoiser_snaps_to_the_nearest_point_at_tiny_sigma_without_nan():
    pts = _points(14, 20, 3)
    x = torch.cat([_points(15, 5, 3), 1e3 * _points(16, 2, 3)])  # two states far from every point
    out = PointSet(pts)(x, 1e-6)
    assert torch.isfinite(out).all()
    nearest = pts[torch.cdist(x, pts).argmin(1)]
    torch.testing.assert_close(out, nearest, rtol=0, atol=1e-12)


# ------------------------------------------------------------------------------------------------
# Isotropic Gaussian: the closed-form probability-flow ODE solution.
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sigma", [0.01, 0.3, 2.0, 40.0])
def test_isotropic_gaussian_ode_solution_satisfies_the_pf_ode(gaussian3d, sigma):
    """d x(sigma)/d sigma = (x - D(x, sigma))/sigma along the closed-form solution (central differences)."""
    x0 = _points(17, 8, 3) * 80
    h = 1e-5 * sigma
    x = gaussian3d.ode_solution(x0, 80.0, sigma)
    derivative = (gaussian3d.ode_solution(x0, 80.0, sigma + h) - gaussian3d.ode_solution(x0, 80.0, sigma - h)) / (2 * h)
    torch.testing.assert_close(derivative, (x - gaussian3d(x, sigma)) / sigma, rtol=1e-7, atol=1e-8)


def test_isotropic_gaussian_ode_solution_composes_and_ends_on_the_data_law(gaussian3d):
    x = _points(18, 8, 3) * 80
    direct = gaussian3d.ode_solution(x, 80.0, 0.0)
    via = gaussian3d.ode_solution(gaussian3d.ode_solution(x, 80.0, 1.3), 1.3, 0.0)
    torch.testing.assert_close(via, direct, rtol=1e-13, atol=1e-13)
    # Transport of N(mean, (std^2 + 80^2) I) ends exactly on N(mean, std^2 I).
    z = (direct - gaussian3d.mean) / gaussian3d.std
    z_start = (x - gaussian3d.mean) / math.sqrt(gaussian3d.std**2 + 80.0**2)
    torch.testing.assert_close(z, z_start, rtol=1e-13, atol=1e-13)


def test_isotropic_gaussian_rejects_non_positive_std():
    with pytest.raises(ValueError, match="std must be positive"):
        IsotropicGaussian([0.0], 0.0)


def _textbook_mixture_denoiser(gmm: GaussianMixture, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The previous implementation's formula, transcribed as it was: per-component differences,
    einsums with each eigenbasis, log-variances recomputed on every call, softmax over rows."""
    s2 = sigma.reshape(-1, 1) ** 2
    diff = x[:, None, :] - gmm.means[None]
    y = torch.einsum("bkd,kde->bke", diff, gmm.eigvecs)
    var = gmm.eigvals[None] + s2[:, :, None]
    logits = gmm.log_weights[None] - 0.5 * torch.log(var).sum(-1) - 0.5 * (y**2 / var).sum(-1)
    w = torch.softmax(logits, dim=1)
    post = gmm.means[None] + torch.einsum("bke,kde->bkd", y * (gmm.eigvals[None] / var), gmm.eigvecs)
    return (w[:, :, None] * post).sum(1)


def _builtin_mixtures():
    from sampler_bench.models.builtin import available, builtin_model

    out = {}
    for name in available():
        dist = builtin_model(name).distribution
        out[name] = dist if isinstance(dist, GaussianMixture) else dist.mixture  # CLD wraps the data mixture
    return out


def test_fast_mixture_denoiser_equals_the_textbook_formula_on_every_builtin_model():
    """Stacked eigenbases, cached per-level constants and one product each way change only round-off:
    shared levels (a sampler's steps, cached after the first call) and per-sample levels alike."""
    mixtures = _builtin_mixtures()
    assert {"gmm2d", "gmm16"} <= set(mixtures)
    for name, gmm in mixtures.items():
        for sigma in [1e-3, 0.002, 0.05, 0.7, 3.0, 80.0]:
            x = _points(1, 257, gmm.dim) * (2 + sigma)
            s = torch.full((257,), sigma, dtype=torch.float64)
            want = _textbook_mixture_denoiser(gmm, x, s)
            for _ in range(2):  # the second call reads the level cache
                torch.testing.assert_close(gmm(x, s), want, rtol=1e-11, atol=1e-12 * (1 + sigma), msg=name)
        x = _points(2, 300, gmm.dim) * 3
        s = torch.logspace(-3, 2, 300, dtype=torch.float64)
        torch.testing.assert_close(gmm(x, s), _textbook_mixture_denoiser(gmm, x, s), rtol=1e-11, atol=1e-11, msg=name)
        # a row of a shared-level batch equals the same row inside a mixed-level batch
        mixed = s.clone()
        mixed[::2] = 0.7
        shared = gmm(x, torch.full((300,), 0.7, dtype=torch.float64))
        torch.testing.assert_close(gmm(x, mixed)[::2], shared[::2], rtol=1e-12, atol=1e-13)


def test_per_sample_sigma_path_equals_the_scalar_sigma_path_to_round_off():
    """The batched per-sample-level path (an adaptive solver's per-sample steps: one product for the
    log determinants and Mahalanobis terms, in-place temporaries) gives, row by row, what the cached
    one-level path gives for that row's level: denoiser, responsibilities and log density, on every
    built-in mixture and at batch sizes around K d (where one-level and per-sample shapes coincide)."""
    for name, gmm in _builtin_mixtures().items():
        K, d = gmm.n_components, gmm.dim
        for batch in (K * d, 3 * K * d + 1):
            x = _points(3, batch, d) * 4
            s = torch.logspace(-3, 2, batch, dtype=torch.float64)[torch.randperm(batch, generator=torch.Generator().manual_seed(9))]
            scalar = [(gmm(x[i:i + 1], float(s[i])), gmm.responsibilities(x[i:i + 1], float(s[i])),
                       gmm.log_prob(x[i:i + 1], float(s[i]))) for i in range(batch)]
            for got, want in zip((gmm(x, s), gmm.responsibilities(x, s), gmm.log_prob(x, s)), zip(*scalar)):
                torch.testing.assert_close(got, torch.cat(want), rtol=1e-12, atol=1e-12, msg=name)
