"""Intervals on metric values (Poisson bootstrap keyed on the sample index): calibration of the
bias-corrected Fréchet distance, power of the paired test, invariance to batching, Holm, the
store's interval columns and its schema-1 migration, and bad confidence levels."""

from __future__ import annotations

import math
import sqlite3

import numpy as np
import pytest
import torch

import sampler_bench as sb
import sampler_bench.metrics as M
from sampler_bench.bench.store import ResultsStore
from sampler_bench.metrics import uncertainty as U
from sampler_bench.models.builtin import builtin_model


CELL = {
    "cell_id": "c1", "sweep_id": "s1", "spec_name": "t", "model": "gmm2d", "model_hash": "abc", "process": "gaussian",
    "solver": "heun", "options": "{}", "requested_options": "{}", "stochastic": False, "declared_order": 2,
    "schedule": "karras", "schedule_params": "{}", "sigma_min": 0.002, "sigma_max": 80.0, "ends_at_zero": True,
    "nfe_budget": 10, "nfe_planned": 9, "nfe_counted": 9, "steps": 5, "n_samples": 8, "seed": 0, "batch_size": 8,
    "device": "cpu", "precision": "float64", "wall_time_s": 0.5, "samples_per_s": 16.0, "denoiser_fraction": 0.7,
    "metric_time_s": 0.01, "status": "ok", "reason": "", "version": "0.1.0",
}


@pytest.fixture(scope="module")
def gmm2d():
    return builtin_model("gmm2d")


def fd_estimate(model, x, start=0, batch=None):
    acc = M.make("fd", model, feature_extractor="raw")
    for j, xb in enumerate(x.split(batch or len(x))):
        acc.update(xb, index=start + j * (batch or len(x)))
    return acc.estimates()["fd"]


def test_poisson_weights_depend_only_on_replicate_and_sample_index():
    whole = U.poisson_weights(100, 50, 16)
    parts = torch.cat([U.poisson_weights(100, 20, 16), U.poisson_weights(120, 30, 16)], 1)
    assert torch.equal(whole, parts)
    assert torch.equal(U.poisson_weights_at(np.arange(100, 150), 16), whole)
    w = U.poisson_weights(0, 200_000, 4)
    assert w.mean().item() == pytest.approx(1.0, abs=0.01) and w.var().item() == pytest.approx(1.0, abs=0.02)
    assert (w >= 0).all() and torch.equal(w, w.round())


@pytest.mark.parametrize("name", ["fd", "gmm_nll", "gmm_tv"])
def test_interval_does_not_depend_on_batch_size(name, gmm2d):
    x = gmm2d.sample_data(300, generator=torch.Generator().manual_seed(1))
    out = []
    for batch in (300, 37):
        acc = M.make(name, gmm2d, reference_samples=200, **({"n_projections": 8} if name == "swd" else {}))
        for xb in x.split(batch):
            acc.update(xb)
        out.append(acc.estimates()[M.info(name).keys[0]])
    assert out[0].ci_low == pytest.approx(out[1].ci_low, rel=1e-9, abs=1e-12)
    assert out[0].ci_high == pytest.approx(out[1].ci_high, rel=1e-9, abs=1e-12)
    assert out[0].ci_low < out[0].corrected < out[0].ci_high


def test_bias_corrected_fd_interval_covers_the_population_value_and_the_raw_one_does_not(gmm2d):
    """Calibration: 20 disjoint seed ranges of 400 exact samples (the law of a sampler exact to well
    below the noise; the slow test below uses heun at 100 NFE). The population FD against the exact
    reference moments is 0; the bias-corrected 95% interval must contain it in >= 85% of the ranges,
    the raw estimate's own bootstrap (percentile) interval, centred on the biased value, must not."""
    x = gmm2d.sample_data(8000, generator=torch.Generator().manual_seed(7))
    covered_bc = covered_raw = 0
    for k in range(20):
        e = fd_estimate(gmm2d, x[400 * k: 400 * (k + 1)], start=400 * k)
        assert e.bias_corrected and e.value > 0
        covered_bc += e.ci_low <= 0.0 <= e.ci_high
        lo, hi = np.quantile(e.replicates, [0.025, 0.975])
        covered_raw += lo <= 0.0 <= hi
    assert covered_bc >= 17, covered_bc
    assert covered_raw <= 3, covered_raw


@pytest.mark.slow
def test_heun_at_100_nfe_calibration_of_the_bias_corrected_fd(gmm2d):
    sigmas = sb.schedules.karras(50, gmm2d.sigma_min, gmm2d.sigma_max)
    x0 = gmm2d.sigma_max * torch.randn(8000, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y = sb.sample("heun", gmm2d, x0, sigmas)
    covered = sum(e.ci_low <= 0.0 <= e.ci_high for e in
                  (fd_estimate(gmm2d, y[400 * k: 400 * (k + 1)], start=400 * k) for k in range(20)))
    assert covered >= 17, covered


def test_euler_at_6_nfe_is_outside_the_floor_and_the_paired_test_separates_it_from_heun(gmm2d):
    n = 1000
    x0 = gmm2d.sigma_max * torch.randn(n, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    euler = fd_estimate(gmm2d, sb.sample("euler", gmm2d, x0, sb.schedules.karras(6, gmm2d.sigma_min, gmm2d.sigma_max)))
    heun = fd_estimate(gmm2d, sb.sample("heun", gmm2d, x0, sb.schedules.karras(3, gmm2d.sigma_min, gmm2d.sigma_max)))
    floor = fd_estimate(gmm2d, gmm2d.sample_data(n, generator=torch.Generator().manual_seed(3)))
    assert euler.ci_low > floor.ci_high
    test = U.paired_test(euler.corrected, euler.replicates, heun.corrected, heun.replicates)
    assert test.paired and test.p_value < 0.05


def test_pairing_on_shared_seeds_is_sharper_than_independent_intervals(gmm2d):
    """Two good samplers on the same noise: their common sampling noise cancels in the paired
    difference, so its standard error is far below that of two independent intervals."""
    x0 = gmm2d.sigma_max * torch.randn(1000, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    a, b = (fd_estimate(gmm2d, sb.sample("heun", gmm2d, x0, sb.schedules.karras(n, gmm2d.sigma_min, gmm2d.sigma_max)))
            for n in (10, 25))
    paired = U.paired_test(a.corrected, a.replicates, b.corrected, b.replicates)
    assert paired.se < 0.5 * math.hypot(a.se, b.se)


def test_paired_test_does_not_separate_two_draws_of_the_same_law(gmm2d):
    """Seed-to-seed noise: the same exact law on the same indices but fresh draws is never 'different'
    at 95% more often than chance allows (independent test, since the samples differ)."""
    rejected = 0
    for k in range(10):
        a = fd_estimate(gmm2d, gmm2d.sample_data(400, generator=torch.Generator().manual_seed(100 + k)))
        b = fd_estimate(gmm2d, gmm2d.sample_data(400, generator=torch.Generator().manual_seed(200 + k)))
        rejected += U.paired_test(a.corrected, a.replicates, b.corrected, b.replicates, paired=False).p_value < 0.05
    assert rejected <= 2


def test_holm_rejects_step_down():
    assert U.holm([0.01, 0.04, 0.03], alpha=0.05) == [True, False, False]
    assert U.holm([0.001, 0.02, 0.04], alpha=0.05) == [True, True, True]
    assert U.holm([float("nan"), 0.001]) == [False, True]


@pytest.mark.parametrize("bad", [0, 1, 1.5, -0.2, float("nan"), "x"])
def test_confidence_outside_0_1_is_one_clear_error(bad, gmm2d):
    acc = M.make("gmm_nll", gmm2d)
    acc.update(gmm2d.sample_data(10))
    with pytest.raises(ValueError, match="confidence level"):
        acc.estimates(confidence=bad)


def test_a_higher_confidence_gives_a_wider_interval(gmm2d):
    acc = M.make("gmm_nll", gmm2d)
    acc.update(gmm2d.sample_data(200, generator=torch.Generator().manual_seed(0)))
    e90, e99 = acc.estimates(0.90)["gmm_nll"], acc.estimates(0.99)["gmm_nll"]
    assert e99.ci_low < e90.ci_low < e90.corrected < e90.ci_high < e99.ci_high


def test_store_keeps_intervals_and_replicates_and_migrates_a_schema_1_store(tmp_path):
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT); INSERT INTO meta VALUES ('schema_version', '1');
        CREATE TABLE metrics (cell_id TEXT NOT NULL, metric TEXT NOT NULL, key TEXT NOT NULL, value REAL,
          lower_is_better INTEGER, feature_extractor TEXT, reference_hash TEXT, provenance TEXT,
          PRIMARY KEY (cell_id, metric, key));
        INSERT INTO metrics VALUES ('c0', 'fd', 'fd', 0.5, 1, 'raw', 'r', '{}');""")
    db.commit()
    db.close()
    with ResultsStore(path) as store:
        old = store.metrics()
        assert old["value"].tolist() == [0.5] and math.isnan(old["ci_low"][0])
        row = {"metric": "endpoint_error", "key": "endpoint_rmse", "value": 0.25, "lower_is_better": True,
               "ci_low": 0.2, "ci_high": 0.3, "corrected": 0.26, "replicates": [0.24, 0.27]}
        assert store.put_cell(CELL, [row])
        m = store.metrics().set_index("cell_id")
        assert (m.loc["c1", "ci_low"], m.loc["c1", "ci_high"], m.loc["c1", "corrected"]) == (0.2, 0.3, 0.26)
        assert store.replicates()[("c1", "endpoint_error", "endpoint_rmse")].tolist() == [0.24, 0.27]


def weighted_fd(x, w, mu_ref, cov_ref):
    """An independent transcription: FD of the w-weighted sample (numpy moments, n_w - 1 divisor)."""
    x, w = x.numpy(), w.numpy()
    n = w.sum()
    m = (w[:, None] * x).sum(0) / n
    c = ((w[:, None] * (x - m)).T @ (x - m)) / (n - 1)
    from sampler_bench.metrics.fd import frechet_distance

    return frechet_distance(torch.from_numpy(m), torch.from_numpy(c), mu_ref, cov_ref)


def test_vectorised_fd_replicates_equal_the_fd_of_each_weighted_sample(gmm2d):
    """All replicates in one batched computation (sums by one matrix product, one batched eigvalsh)
    give, replicate by replicate, the FD of the Poisson-weighted sample computed from scratch."""
    x = gmm2d.sample_data(300, generator=torch.Generator().manual_seed(5))
    acc = M.make("fd", gmm2d, feature_extractor="raw")
    for a in range(0, 300, 70):  # uneven batches, indices from 1000 (a shard that does not start at 0)
        acc.update(x[a:a + 70], index=1000 + a)
    e = acc.estimates()["fd"]
    w = U.poisson_weights(1000, 300, acc.replicates)
    mu, cov = acc.ref_mean, acc.ref_cov
    expected = [weighted_fd(x, w[r], mu, cov) for r in range(acc.replicates)]
    assert np.allclose(e.replicates, expected, rtol=1e-9, atol=1e-13)
    assert e.value == pytest.approx(weighted_fd(x, torch.ones(300, dtype=torch.float64), mu, cov), rel=1e-10)


@pytest.mark.parametrize("name", ["fd", "gmm_nll", "gmm_tv", "endpoint_error"])
def test_vectorised_replicates_equal_the_replicate_by_replicate_computation(name, gmm2d):
    """A metric written with _compute only (a user's plug-in) gets its replicates one _compute at a
    time; the built-in metrics compute them all at once with _values: the two agree."""
    x = gmm2d.sample_data(200, generator=torch.Generator().manual_seed(6))
    ref = x + 0.01 * torch.randn(x.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    acc = M.make(name, gmm2d, feature_extractor="raw") if name == "fd" else M.make(name, gmm2d)
    acc.update(x, reference=ref if name == "endpoint_error" else None)
    vectorised = acc.estimates()
    cls = type(acc)
    acc.__class__ = type("LoopOnly", (cls,), {
        "_values": lambda self, state: None,
        "_compute": lambda self: {k: float(v) for k, v in cls._values(self, self._state).items()}})
    looped = acc.estimates()
    for key, e in vectorised.items():
        assert np.allclose(e.replicates, looped[key].replicates, rtol=1e-12, atol=1e-15), key
        assert (e.ci_low, e.ci_high) == pytest.approx((looped[key].ci_low, looped[key].ci_high), rel=1e-12)


@pytest.mark.parametrize("d", [3, 70])
def test_replicate_outer_product_sums_equal_the_weighted_sums(d):
    """Both ways of adding replicate outer products (one flattened product for small d, batched
    per-replicate products for large d) equal sum_i w[r, i] x_i x_i^T."""
    from sampler_bench.metrics.base import Accumulator

    acc = Accumulator(object())
    acc._state["s"] = torch.zeros(d, d, dtype=torch.float64)
    acc._state["rep:s"] = torch.zeros(acc.replicates, d, d, dtype=torch.float64)
    x = torch.randn(50, d, dtype=torch.float64, generator=torch.Generator().manual_seed(d))
    acc._weights = U.poisson_weights(0, 50, acc.replicates)
    acc._add_outer("s", x)
    expected = torch.einsum("rb,bi,bj->rij", acc._weights, x, x)
    assert torch.allclose(acc._state["rep:s"], expected, rtol=1e-12, atol=1e-12)
    assert torch.allclose(acc._state["s"], x.T @ x, rtol=1e-12, atol=1e-12)


def test_cached_poisson_weights_are_copies():
    a = U.poisson_weights(0, 100, 8)
    a += 5.0  # a caller that modifies its weights does not change anyone else's
    assert torch.equal(U.poisson_weights(0, 100, 8), U.poisson_weights_at(np.arange(100), 8))


@pytest.mark.slow
def test_away_from_zero_the_interval_is_calibrated_not_just_conservative(gmm2d):
    """The interval is wide only at a population value of 0 (benchmarks/RESULTS.md, "Calibration near
    0"): at a population FD of 0.08 (every coordinate shifted by 0.2), over 100 disjoint ranges of 400
    samples, it covers the population value in 85-99% of them and its mean half-width is within 25% of
    1.96 times the spread of the corrected values."""
    x = gmm2d.sample_data(40_000, generator=torch.Generator().manual_seed(11)) + 0.2
    est = [fd_estimate(gmm2d, x[400 * k: 400 * (k + 1)], start=400 * k) for k in range(100)]
    covered = sum(e.ci_low <= 0.08 <= e.ci_high for e in est)
    spread = np.std([e.corrected for e in est], ddof=1)
    assert 85 <= covered <= 99, covered
    assert np.mean([e.half_width for e in est]) == pytest.approx(1.96 * spread, rel=0.25)
