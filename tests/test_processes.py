"""Physical processes: kernel distributions, exact point-set denoisers, priors, the D -> inf limit."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

import sampler_bench as sb
from sampler_bench.processes.analytic import PointSet
from sampler_bench.processes.catalog import process_from_config
from sampler_bench.processes.gaussian import GaussianProcess
from sampler_bench.processes.pfgmpp import PFGMPPPointSet, PFGMPPProcess, beta_prime_radius
from sampler_bench.solvers.noise import generators_for


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- kernels ----------------------------------------------------------------------------------

def test_pfgmpp_kernel_coordinates_are_student_t_with_D_degrees_of_freedom():
    N, D, sigma = 4, 5, 0.7
    x = PFGMPPProcess(D=D).noise((40000, N), sigma, gen(0)) / sigma
    for k in range(N):
        assert stats.kstest(x[:, k].numpy(), stats.t(df=D).cdf).pvalue > 1e-3
    # E|x - y|^2 = sigma^2 N D/(D - 2) (docs/processes.md, PFGM++); D = 5 has a finite 4th moment, so a z-test is valid.
    sq = (x**2).sum(1)
    se = sq.std() / math.sqrt(sq.numel())
    assert abs(sq.mean() - N * D / (D - 2)) < 4 * se
    # The Gaussian kernel would be rejected by the same test: the test has power.
    assert stats.kstest(x[:, 0].numpy(), stats.norm(scale=math.sqrt(D / (D - 2))).cdf).pvalue < 1e-6


def test_pfgmpp_radius_follows_the_beta_prime_law():
    N, D, r = 64, 128, 3.0
    R = beta_prime_radius(30000, N, D, r, gen(1))
    assert R.dtype == torch.float64
    assert stats.kstest((R / r).pow(2).numpy(), stats.betaprime(N / 2, D / 2).cdf).pvalue > 1e-3
    # Quantiles of (R/r)^2 at 1%, 50%, 99% within the Monte-Carlo error of the exact ones.
    q = np.quantile((R / r).pow(2).numpy(), [0.01, 0.5, 0.99])
    np.testing.assert_allclose(q, stats.betaprime(N / 2, D / 2).ppf([0.01, 0.5, 0.99]), rtol=0.03)


def test_pfgmpp_heavy_tailed_kernel_at_D_1_is_multivariate_cauchy():
    # D = 1 (PFGM): every coordinate is Cauchy; its median |x| is sigma.
    x = PFGMPPProcess(D=1).noise((40000, 3), 2.0, gen(2)) / 2.0
    assert stats.kstest(x[:, 1].numpy(), stats.cauchy.cdf).pvalue > 1e-3


@pytest.mark.parametrize("variant", ["edm", "ve", "vp"])
def test_gaussian_kernel_is_normal_with_std_sigma(variant):
    x = GaussianProcess(variant).noise((20000, 2), 0.3, gen(3)) / 0.3
    assert stats.kstest(x.reshape(-1).numpy(), stats.norm.cdf).pvalue > 1e-3


def test_training_sigma_laws_match_their_definitions():
    g = gen(4)
    s = GaussianProcess("edm").sample_sigma(40000, g)
    assert stats.kstest(torch.log(s).numpy(), stats.norm(loc=-1.2, scale=1.2).cdf).pvalue > 1e-3
    s = GaussianProcess("ve", sigma_min=0.02, sigma_max=100).sample_sigma(40000, g)
    assert stats.kstest(torch.log(s).numpy(), stats.uniform(math.log(0.02), math.log(100 / 0.02)).cdf).pvalue > 1e-3
    vp = GaussianProcess("vp")
    s = vp.sample_sigma(40000, g)
    t = sb.schedules.vp_time(s)
    assert stats.kstest(t.numpy(), stats.uniform(vp.eps_t, 1 - vp.eps_t).cdf).pvalue > 1e-3
    s = PFGMPPProcess(D=128).sample_sigma(40000, g)
    assert stats.kstest(torch.log(s).numpy(), stats.norm(loc=-1.2, scale=1.2).cdf).pvalue > 1e-3


def test_edm_loss_weight_is_the_inverse_target_variance():
    # EDM eq. (8): lambda = 1/c_out^2 = (s^2 + sd^2)/(s sd)^2, so the effective target has unit variance.
    s = torch.tensor([0.01, 0.5, 80.0], dtype=torch.float64)
    sd = 0.5
    c_out = s * sd / torch.sqrt(s**2 + sd**2)
    for p in (GaussianProcess("edm"), PFGMPPProcess(D=64)):
        torch.testing.assert_close(p.loss_weight(s, sd) * c_out**2, torch.ones(3, dtype=torch.float64))


# --- priors ------------------------------------------------------------------------------------

@pytest.mark.parametrize("process", [PFGMPPProcess(D=16), GaussianProcess("edm"), GaussianProcess("vp")], ids=str)
def test_prior_sample_depends_only_on_its_own_generator(process):
    seeds = [11, 12, 13, 14]
    full = process.prior(4, (3, 2), generators_for(seeds))
    part = process.prior(2, (3, 2), generators_for(seeds[2:]))
    assert full.shape == (4, 3, 2) and full.dtype == torch.float64
    torch.testing.assert_close(full[2:], part, rtol=0, atol=0)


def test_pfgmpp_prior_is_the_kernel_at_sigma_max():
    N, D = 64, 128
    p = PFGMPPProcess(D=D, sigma_max=80.0)
    x = p.prior(20000, (N,), gen(5))
    ratio2 = (x.norm(dim=1) / (80.0 * math.sqrt(D))) ** 2
    assert stats.kstest(ratio2.numpy(), stats.betaprime(N / 2, D / 2).cdf).pvalue > 1e-3
    # uniform direction: the mean direction vanishes
    u = x / x.norm(dim=1, keepdim=True)
    assert u.mean(0).abs().max() < 5 / math.sqrt(20000 * N)


def test_vp_prior_is_standard_normal_in_the_scaled_state():
    p = GaussianProcess("vp")
    x = p.prior(20000, (2,), gen(6)) / math.sqrt(1 + p.sigma_max**2)
    assert stats.kstest(x.reshape(-1).numpy(), stats.norm.cdf).pvalue > 1e-3


# --- exact point-set denoisers -----------------------------------------------------------------

def _tower_property_z2(process, points, denoiser, sigma, n, seed, coord=0, bins=25):
    """Mean squared z-score of E[y | x in bin] - E[D(x) | x in bin] over bins of x[:, coord].

    For the exact denoiser D(x) = E[y | x], the tower property makes both bin means equal for any
    bin, so the z-scores are standard normal and their mean square is ~1.
    """
    g = gen(seed)
    idx = torch.randint(points.shape[0], (n,), generator=g)
    y = points[idx]
    x = process.perturb(y, sigma, g)
    resid = (y - denoiser(x, torch.full((n,), sigma, dtype=torch.float64)))[:, coord].numpy()
    xc = x[:, coord].numpy()
    edges = np.quantile(xc, np.linspace(0, 1, bins + 1))
    which = np.clip(np.searchsorted(edges, xc, side="right") - 1, 0, bins - 1)
    z = []
    for b in range(bins):
        r = resid[which == b]
        z.append(r.mean() / (r.std() / math.sqrt(r.size) + 1e-300))
    return float(np.mean(np.square(z)))


def test_pfgmpp_point_set_denoiser_agrees_with_monte_carlo_in_1d():
    points = torch.tensor([[-1.0], [0.5], [2.0]], dtype=torch.float64)
    p = PFGMPPProcess(D=3)
    exact = PFGMPPPointSet(points, D=3)
    assert _tower_property_z2(p, points, exact, 0.8, 200000, seed=7) < 2.0
    # The Gaussian-kernel denoiser is wrong for this kernel, and the test sees it.
    assert _tower_property_z2(p, points, PointSet(points), 0.8, 200000, seed=7) > 20.0


def test_pfgmpp_point_set_denoiser_agrees_with_monte_carlo_in_5d():
    points = torch.tensor([[1.0, 0, 0, 0, 0], [-1.0, 1, 0, 0, 0], [0.0, -1, 1, 0, 0], [0.5, 0.5, 0.5, 0.5, 0.5]],
                          dtype=torch.float64)
    p = PFGMPPProcess(D=6)
    exact = PFGMPPPointSet(points, D=6)
    assert _tower_property_z2(p, points, exact, 0.6, 100000, seed=8) < 2.0
    # Using the wrong dimension N in the exponent (N + D)/2 would be caught as well.
    wrong_N = PFGMPPPointSet(points, D=6)
    wrong_N.N = 1
    assert _tower_property_z2(p, points, wrong_N, 0.6, 100000, seed=8) > 10.0


def test_pfgmpp_ode_from_the_prior_with_the_exact_denoiser_ends_on_data_points():
    g = gen(9)
    points = torch.randn(6, 2, generator=g, dtype=torch.float64)
    p = PFGMPPProcess(D=4, sigma_max=80.0)
    denoiser = p.point_set_denoiser(points)
    x = p.prior(64, (2,), g)
    sigmas = sb.schedules.karras(80, 0.002, 80.0)
    out = sb.sample("heun", denoiser, x, sigmas)
    dist = torch.cdist(out, points).min(1).values
    assert dist.max() < 1e-4
    # ...and more than one data point is reached (no collapse onto one mode).
    assert torch.cdist(out, points).argmin(1).unique().numel() >= 4


def test_pfgmpp_denoiser_approaches_the_gaussian_one_as_D_grows():
    g = gen(10)
    points = torch.randn(8, 3, generator=g, dtype=torch.float64)
    x = 1.5 * torch.randn(32, 3, generator=g, dtype=torch.float64)
    sigma = torch.full((32,), 0.7, dtype=torch.float64)
    gauss = PointSet(points)(x, sigma)
    errs = [(PFGMPPPointSet(points, D)(x, sigma) - gauss).abs().max().item() for D in (1e2, 1e4, 1e6)]
    assert errs[0] > errs[1] > errs[2]
    # The logit gap is O(|x - y|^4 / (D sigma^4)): the error falls like 1/D.
    assert errs[1] / errs[2] == pytest.approx(100, rel=0.2)
    assert errs[2] < 1e-4


def test_pfgmpp_kernel_approaches_the_gaussian_as_D_grows():
    kurt = []
    for D in (8, 64, 100000):
        x = PFGMPPProcess(D=D).noise((40000, 4), 1.0, gen(11)).reshape(-1).numpy()
        kurt.append(stats.kurtosis(x))
    # excess kurtosis of Student-t is 6/(D - 4); Gaussian is 0
    assert kurt[0] > kurt[1] > abs(kurt[2])
    assert abs(kurt[2]) < 0.05


def test_pfgmpp_with_infinite_D_is_the_gaussian_process():
    p = PFGMPPProcess(D="inf")
    assert p.kind == "gaussian" and p.has_reverse_sde
    torch.testing.assert_close(p.noise((5, 3), 0.4, gen(12)), GaussianProcess("edm").noise((5, 3), 0.4, gen(12)))
    assert isinstance(p.point_set_denoiser(torch.zeros(2, 3)), PointSet)
    assert process_from_config(p.config()) == p


def test_finite_D_pfgmpp_has_no_reverse_sde_so_stochastic_samplers_do_not_apply():
    p = PFGMPPProcess(D=128)
    assert p.kind == "pfgmpp" and not p.has_reverse_sde
    for name in sb.solvers.available():
        meta = sb.solvers.info(name)
        if "gaussian" not in meta.processes:
            continue  # solvers of other processes (CLD) apply to neither
        assert (p.kind in meta.processes) == (not meta.stochastic), name


# --- configuration -----------------------------------------------------------------------------

@pytest.mark.parametrize("process", [GaussianProcess("edm"), GaussianProcess("ve"), GaussianProcess("vp"),
                                     PFGMPPProcess(D=128), PFGMPPProcess(D=2.5)], ids=str)
def test_process_config_round_trips(process):
    import json

    again = process_from_config(json.loads(json.dumps(process.config())))
    assert again == process and again.kind == process.kind


@pytest.mark.parametrize("config, message", [
    ({"name": "pfgm++"}, "did you mean 'pfgmpp'"),
    ({"name": "pfgmpp", "D": 0.5}, "D >= 1"),
    ({"name": "pfgmpp", "D": "many"}, "D >= 1"),
    ({"name": "edm", "sigma_min": 5.0, "sigma_max": 1.0}, "below sigma_max"),
    ({"name": "edm", "P_sd": 1.0}, "P_sd"),
    ({"D": 3}, "'name'"),
])
def test_bad_process_config_raises_one_readable_value_error(config, message):
    with pytest.raises(ValueError, match=message):
        process_from_config(config)
