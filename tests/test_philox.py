"""Counter-based noise (sampler_bench.philox): the published Philox4x32-10 answers, sample i's noise
whatever the batch, shard or run, standard normal values, and independence across samples, draws
and elements."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

import sampler_bench as sb
from sampler_bench.processes.analytic import IsotropicGaussian
from sampler_bench.philox import PhiloxNoise, normal, philox4x32
from sampler_bench.rng import check_generator, generators_for, noise_generator, randn_like


@pytest.mark.parametrize("counter, key, expected", [
    # Known-answer vectors of Random123 (Salmon et al. 2011), kat_vectors: philox4x32 10 rounds.
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
])
def test_philox4x32_10_matches_the_published_known_answers(counter, key, expected):
    words = philox4x32([torch.tensor([c]) for c in counter], key)
    assert tuple(int(w) for w in words) == expected


@pytest.fixture(scope="module")
def million():
    """1e6 values: 1000 samples x 10 draws x 100 elements."""
    return normal(123, torch.arange(1000), range(10), 100).double()


def test_sample_noise_is_bit_identical_across_batches_shards_and_runs():
    whole = PhiloxNoise(7, range(0, 60))
    draws_whole = [whole.randn((3, 5)) for _ in range(4)]
    for split in ([0, 60], [0, 1, 60], [0, 17, 41, 60], [0, 59, 60]):
        parts = []
        for a, b in zip(split[:-1], split[1:]):
            g = PhiloxNoise(7, range(a, b))
            parts.append([g.randn((3, 5)) for _ in range(4)])
        for j in range(4):
            assert torch.equal(torch.cat([p[j] for p in parts]), draws_whole[j])
    # a batch of arbitrary, unordered indices holds the same rows; a rerun gives the same bits
    picked = PhiloxNoise(7, [41, 3, 59])
    for j in range(4):
        assert torch.equal(picked.randn((3, 5)), draws_whole[j][[41, 3, 59]])
    again = PhiloxNoise(7, range(0, 60))
    assert all(torch.equal(again.randn((3, 5)), d) for d in draws_whole)


def test_prefetching_and_chunking_change_no_value(monkeypatch):
    import sampler_bench.philox as P

    reference = normal(5, torch.arange(9), range(3, 8), 13)
    monkeypatch.setattr(P, "CHUNK_BLOCKS", 5)  # chunk boundaries inside samples and draws
    assert torch.equal(normal(5, torch.arange(9), range(3, 8), 13), reference)
    monkeypatch.setattr(P.PhiloxNoise, "PREFETCH_VALUES", 1)  # one draw at a time
    g = PhiloxNoise(5, range(9))
    g.draw = 3
    assert all(torch.equal(g.randn((13,)), reference[:, j]) for j in range(5))


def test_stochastic_sampler_output_for_sample_i_does_not_depend_on_the_batch():
    # An elementwise exact denoiser: its output for row i cannot depend on the batch, so any difference
    # would be the noise's (a matrix-product denoiser may round differently at other batch sizes).
    gmm = IsotropicGaussian([0.5, -1.0], 0.3)
    sigmas = sb.schedules.karras(8, 0.01, 10.0)
    x = 10.0 * torch.randn(12, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for name, opts in [("euler_ancestral", {}), ("dpmpp_sde", {}), ("edm_stochastic", {"S_churn": 10.0}),
                       ("euler_ancestral", {"noise": "brownian"})]:
        whole = sb.sample(name, gmm, x, sigmas, generator=PhiloxNoise(3, range(12)), **opts)
        halves = torch.cat([sb.sample(name, gmm, x[a:b], sigmas, generator=PhiloxNoise(3, range(a, b)), **opts)
                            for a, b in [(0, 5), (5, 12)]])
        assert torch.equal(whole, halves), name
        other_seed = sb.sample(name, gmm, x, sigmas, generator=PhiloxNoise(4, range(12)), **opts)
        assert not torch.equal(whole, other_seed), name


def test_values_are_standard_normal_by_moments_and_kolmogorov_smirnov(million):
    z = million.flatten().numpy()
    n = z.size
    assert n == 1_000_000
    # standard errors of the sample mean, variance, skewness and excess kurtosis of N(0, 1)
    assert abs(z.mean()) < 5 / math.sqrt(n)
    assert abs(z.var() - 1) < 5 * math.sqrt(2 / n)
    assert abs(stats.skew(z)) < 5 * math.sqrt(6 / n)
    assert abs(stats.kurtosis(z)) < 5 * math.sqrt(24 / n)
    assert stats.kstest(z, "norm").pvalue > 1e-3
    # tails: P(|z| > 3) = 0.0027
    tail = (np.abs(z) > 3).mean()
    assert abs(tail - 2 * stats.norm.sf(3)) < 5 * math.sqrt(0.0027 / n)


def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(np.corrcoef(a.flatten().numpy(), b.flatten().numpy())[0, 1])


def test_values_are_uncorrelated_across_samples_draws_and_elements(million):
    z = million  # [1000, 10, 100]
    pairs = {
        "neighbouring samples": (z[:-1], z[1:]),
        "neighbouring draws": (z[:, :-1], z[:, 1:]),
        "neighbouring elements (one Box-Muller pair)": (z[..., 0::2], z[..., 1::2]),
        "elements of one Philox block": (z[..., 0::4], z[..., 2::4]),
        "neighbouring blocks": (z[..., :-4], z[..., 4:]),
    }
    for what, (a, b) in pairs.items():
        bound = 5 / math.sqrt(a.numel())
        assert abs(_corr(a, b)) < bound, what
        # squares too: a shared Box-Muller radius or a weak mixing shows up as dependent magnitudes
        assert abs(_corr(a**2, b**2)) < bound, what


def test_seeds_give_unrelated_streams():
    """(seed, i) is the key and the counter, not seed + i: seed 1's sample 0 is not seed 0's sample 1."""
    a = normal(0, torch.tensor([1]), range(1), 1000)
    b = normal(1, torch.tensor([0]), range(1), 1000)
    assert abs(_corr(a.double(), b.double())) < 5 / math.sqrt(1000)
    big = normal(2**62 + 5, torch.tensor([2**40 + 3]), range(1), 8)  # 64-bit seeds and indices work
    assert torch.isfinite(big).all()


def test_noise_generator_kinds_and_validation():
    torch_gens = noise_generator("torch", 10, 2, 5)
    assert [g.initial_seed() for g in torch_gens] == [12, 13, 14]
    x = torch.zeros(3, 4)
    assert torch.equal(randn_like(x, torch_gens), randn_like(x, generators_for([12, 13, 14])))
    philox = noise_generator("philox", 10, 2, 5)
    assert torch.equal(randn_like(x, philox), normal(10, torch.arange(2, 5), range(1), 4)[:, 0])
    with pytest.raises(ValueError, match="noise generator"):
        noise_generator("mt", 0, 0, 1)
    with pytest.raises(ValueError, match="covers 3 samples"):
        check_generator(philox, 4)
    with pytest.raises(ValueError):
        PhiloxNoise(0, [])


def _sweep(tmp_path, generator: str, batch: int):
    from sampler_bench.bench import runner as R
    from sampler_bench.bench.spec import parse_spec

    text = (f'noise_generator = "{generator}"\nnfe = [6]\nn_samples = 12\nbatch_size = {batch}\nseed = 3\n'
            '[[model]]\nbuiltin = "gmm2d"\n[[sampler]]\nname = "euler"\n[[sampler]]\nname = "euler_ancestral"\n'
            '[[metric]]\nname = "fd"\nfeature_extractor = "raw"\n')
    return R.run_sweep(parse_spec(text), tmp_path / f"{generator}{batch}").store_path


def test_sweeps_default_to_philox_noise_recorded_in_the_stochastic_cells_identity_and_provenance(tmp_path):
    import json

    from sampler_bench.bench.store import ResultsStore
    from sampler_bench.models import builtin_model
    from sampler_bench.rng import generators_for

    stores = {k: _sweep(tmp_path, *k) for k in [("philox", 12), ("philox", 5), ("torch", 12)]}
    tables = {}
    for k, path in stores.items():
        with ResultsStore(path, create=False) as s:
            j = s.cells().merge(s.metrics(), on="cell_id")
            tables[k] = j.set_index("solver")
            samples = {sol: s.samples(cid) for sol, cid in s.cells()[["solver", "cell_id"]].itertuples(index=False)}
            tables[(*k, "samples")] = samples
    p, p5, t = tables["philox", 12], tables["philox", 5], tables["torch", 12]
    # deterministic cells do not depend on the noise generator: same id, same values
    assert p.loc[["euler"], "cell_id"].tolist() == t.loc[["euler"], "cell_id"].tolist()
    assert p.loc[["euler"], "value"].tolist() == t.loc[["euler"], "value"].tolist()
    # stochastic cells do: another id, the generator in the provenance; philox is batch invariant
    assert set(p.loc[["euler_ancestral"], "cell_id"]).isdisjoint(t.loc[["euler_ancestral"], "cell_id"])
    assert all(json.loads(v)["noise_generator"] == "philox" for v in p.loc[["euler_ancestral"], "provenance"])
    assert all(json.loads(v)["noise_generator"] == "torch" for v in t.loc[["euler_ancestral"], "provenance"])
    # the noise is bit-identical across batch sizes (tested above); the sweep's mixture denoiser is a
    # batched matrix product, which may round differently at batch 5 and 12, so the value agrees to round-off
    assert p.loc[["euler_ancestral"], "value"].tolist() == pytest.approx(
        p5.loc[["euler_ancestral"], "value"].tolist(), rel=1e-12, abs=0)
    # sample 7 is the sampler run from generator seed 3 + 7's prior and the counter stream (seed 3, index 7)
    model = builtin_model("gmm2d")
    sigmas = sb.solvers.plan("euler_ancestral", 6).sigmas
    x7 = sb.sample("euler_ancestral", model, model.prior(1, generator=generators_for([10])), sigmas,
                   generator=PhiloxNoise(3, [7]))
    kept = tables["philox", 5, "samples"]["euler_ancestral"]
    assert torch.allclose(kept[7].double(), x7[0], rtol=0, atol=1e-6)
