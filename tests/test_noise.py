"""Noise sources of the stochastic samplers: the shared `noise` option and the Brownian source.

Properties: every stochastic solver declares the same `noise` option; Brownian increments are
standard normal, independent over disjoint intervals and *additive across grids* (what makes
strong-error studies possible); one path per sample (batch invariance); all randomness comes
from the caller's generator; Euler–Maruyama driven by Brownian increments converges strongly.
"""

from __future__ import annotations

import math

import pytest
import torch

import sampler_bench as sb
from sampler_bench.processes.analytic import IsotropicGaussian
from sampler_bench.solvers import noise as noise_mod
from sampler_bench.solvers.noise import BrownianNoise, generators_for, noise_source, stochastic_options
from sampler_bench.solvers.registry import Option

#: The reverse-SDE samplers of issue #4 (other stochastic families, e.g. gDDIM/CLD, bring their own noise).
STOCHASTIC = [
    "er_sde_1", "er_sde_2", "er_sde_3", "euler_maruyama", "ddim", "euler_ancestral",
    "dpmpp_2s_ancestral", "dpmpp_sde", "dpmpp_2m_sde", "dpmpp_3m_sde", "edm_stochastic",
]


def test_every_stochastic_solver_declares_the_one_shared_noise_option():
    for name in STOCHASTIC:
        info = sb.solvers.info(name)
        assert info.stochastic
        opt = info.options["noise"]
        assert opt is noise_mod._NOISE_OPTION, f"{name} redeclares the noise option"
        assert opt.default == "gaussian"
    for name in sb.solvers.available():
        if not sb.solvers.info(name).stochastic:
            assert "noise" not in sb.solvers.info(name).options, name


def test_stochastic_options_refuses_a_second_noise_option():
    with pytest.raises(RuntimeError, match="shared"):
        stochastic_options(noise=Option("x", str))


def test_noise_source_kinds():
    x = torch.zeros(2, 3, dtype=torch.float64)
    assert noise_source(None, x, [1.0, 0.0]) is None
    assert noise_source("gaussian", x, [1.0, 0.0]) is None
    assert isinstance(noise_source("brownian", x, [1.0, 0.5, 0.0], torch.Generator().manual_seed(0)), BrownianNoise)
    with pytest.raises(ValueError, match="gaussian, brownian"):
        noise_source("pink", x, [1.0, 0.0])


def test_unknown_noise_kind_is_rejected_by_every_stochastic_solver():
    x = torch.zeros(1, 2, dtype=torch.float64)
    for name in STOCHASTIC:
        with pytest.raises(ValueError, match=f"{name}.*noise='pink'.*'gaussian', 'brownian'"):
            sb.sample(name, lambda x, s: x, x, [1.0, 0.0], noise="pink")


def _unnormalised(src, a, b):
    return src(a, b) * math.sqrt(abs(b - a))


def test_brownian_increments_add_up_across_grids():
    """W over a coarse interval equals the sum of W over any finer partition: a fine grid and a
    coarse grid see the same path (docs/findings.md, "Pitfalls": SDE noise)."""
    x = torch.zeros(3, 5, dtype=torch.float64)
    src = BrownianNoise(x, 20.0, generators_for([1, 2, 3]))
    coarse = [20.0, 3.0, 0.4, 0.0]
    fine = [20.0, 11.0, 3.0, 1.7, 0.4, 0.05, 0.0]
    for a, b in zip(coarse[:-1], coarse[1:]):
        parts = [p for p in fine if b <= p <= a]
        total = sum(_unnormalised(src, u, v) for u, v in zip(parts[:-1], parts[1:]))
        torch.testing.assert_close(total, _unnormalised(src, a, b), rtol=1e-12, atol=1e-12)


def test_brownian_increments_are_standard_normal_and_independent_over_disjoint_intervals():
    n = 20000
    src = BrownianNoise(torch.zeros(1, n, dtype=torch.float64), 10.0, torch.Generator().manual_seed(5))
    levels = [10.0, 6.0, 2.5, 1.0, 0.3, 0.02]
    draws = [src(a, b).reshape(-1) for a, b in zip(levels[:-1], levels[1:])]
    for z in draws:
        assert abs(z.mean().item()) < 4 / math.sqrt(n)
        assert abs(z.var().item() - 1) < 4 * math.sqrt(2 / n)
    for z, w in zip(draws[:-1], draws[1:]):
        assert abs(torch.corrcoef(torch.stack([z, w]))[0, 1].item()) < 4 / math.sqrt(n)


def test_brownian_path_of_a_sample_depends_only_on_its_generator():
    x = torch.zeros(3, 4, dtype=torch.float64)
    batch = BrownianNoise(x, 5.0, generators_for([7, 8, 9]))
    alone = BrownianNoise(x[:1], 5.0, generators_for([8]))
    torch.testing.assert_close(batch(5.0, 1.5)[1:2], alone(5.0, 1.5), rtol=0, atol=0)
    again = BrownianNoise(x, 5.0, generators_for([7, 8, 9]))
    assert torch.equal(batch(2.0, 0.5), again(2.0, 0.5))
    other = BrownianNoise(x, 5.0, generators_for([10, 8, 9]))
    assert not torch.equal(batch(2.0, 0.5)[0], other(2.0, 0.5)[0])


def test_reversed_query_flips_the_sign_and_bad_queries_are_rejected():
    src = BrownianNoise(torch.zeros(2, 2, dtype=torch.float64), 4.0, torch.Generator().manual_seed(1))
    torch.testing.assert_close(src(3.0, 1.0), -src(1.0, 3.0), rtol=0, atol=0)
    for a, b in [(5.0, 1.0), (1.0, 1.0), (-0.1, 1.0)]:
        with pytest.raises(ValueError, match="Brownian noise asked for the interval"):
            src(a, b)


@pytest.mark.parametrize("kind", ["gaussian", "brownian"])
def test_all_randomness_comes_from_the_generator(kind):
    """The global RNG is never touched; the same generator seed gives the same samples."""
    model = IsotropicGaussian([0.0, 0.0], 1.0)
    x = 10.0 * torch.randn(4, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    sigmas = sb.schedules.karras(5, 0.05, 10.0)
    state = torch.random.get_rng_state()
    a = sb.sample("euler_maruyama", model, x, sigmas, generator=torch.Generator().manual_seed(3), noise=kind)
    b = sb.sample("euler_maruyama", model, x, sigmas, generator=torch.Generator().manual_seed(3), noise=kind)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(a, b)
    c = sb.sample("euler_maruyama", model, x, sigmas, generator=torch.Generator().manual_seed(4), noise=kind)
    assert not torch.equal(a, c)


def test_brownian_noise_gives_strong_convergence_and_gaussian_noise_does_not():
    """Euler–Maruyama (additive noise: strong order 1) against a fine-grid solution driven by the
    same Brownian path: the error shrinks ~ h. With per-step Gaussian draws the coarse and fine
    paths are unrelated and the 'error' stays O(1). Tolerance: 3 standard errors of the local slope,
    propagated from the standard errors of the mean errors over the batch."""
    n = 64
    model = IsotropicGaussian([0.0], 1.0)
    x = math.sqrt(1 + 5.0**2) * torch.randn(n, 1, generator=torch.Generator().manual_seed(2), dtype=torch.float64)

    def run(steps, kind):
        grid = sb.schedules.log_snr_uniform(steps, 0.1, 5.0, append_zero=False)
        return sb.sample("euler_maruyama", model, x, grid, generator=torch.Generator().manual_seed(9), noise=kind)

    fine = run(256, "brownian")
    errs, ses = [], []
    for steps in (8, 16, 32):
        e = (run(steps, "brownian") - fine).abs().reshape(-1)
        errs.append(e.mean().item())
        ses.append(e.std().item() / math.sqrt(n))
    slopes = [math.log2(errs[k] / errs[k + 1]) for k in range(2)]
    # d log(e) ~ se/e per point; the slope of two points has variance of the sum of both.
    slope_se = [math.sqrt((ses[k] / errs[k]) ** 2 + (ses[k + 1] / errs[k + 1]) ** 2) / math.log(2) for k in range(2)]
    print(f"EM strong errors (brownian) {errs}, local slopes {slopes}")
    for s, se in zip(slopes, slope_se):
        assert s > 0.5 - 3 * se  # EM's strong order is >= 1/2 (1 here: the noise is additive)
    iid = (run(32, "gaussian") - run(256, "gaussian")).abs().mean().item()
    assert iid > 10 * errs[-1], "per-step Gaussian noise should not couple different grids"
