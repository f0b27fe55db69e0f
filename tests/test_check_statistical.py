"""`check` judges regressions statistically: a deliberately harmful change to a sampler (a wrong
coefficient in Heun's correction) fails it; the same sweep on other seeds (seed-to-seed noise) and an
identical rerun pass; the baseline stores intervals and replicates."""

from __future__ import annotations

import dataclasses
import json

import pytest

from sampler_bench.bench import check as C
from sampler_bench.bench.runner import run_sweep
from sampler_bench.bench.spec import parse_spec
from sampler_bench.bench.store import ResultsStore
from sampler_bench.solvers import registry

SPEC = """
name = "stat-check"
nfe = [10, 20]
n_samples = 400
seed = {seed}
keep_samples = 0
[[model]]
builtin = "gmm2d"
[[sampler]]
name = "euler"
[[sampler]]
name = "heun"
[[metric]]
name = "fd"
[[metric]]
name = "gmm_nll"
"""


def sweep(tmp_path, name, seed=0):
    out = tmp_path / name
    run_sweep(parse_spec(SPEC.format(seed=seed)), out)
    return out / "results.sqlite"


def wrong_heun(ctx, x, i):
    """Heun with a wrong weight on the correction (0.45 instead of 1/2): first order, biased."""
    s, s_next = ctx.sigmas[i], ctx.sigmas[i + 1]
    d = (x - ctx.model(x, s)) / s
    x_euler = x + (s_next - s) * d
    if s_next == 0:
        return x_euler
    d_next = (x_euler - ctx.model(x_euler, s_next)) / s_next
    return x + (s_next - s) * 0.45 * (d + d_next)


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("stat")
    with ResultsStore(sweep(tmp, "base")) as store:
        doc = C.write_baseline(store, tmp / "baseline.json")
    return tmp / "baseline.json", doc


def test_baseline_stores_intervals_and_replicates(baseline):
    path, doc = baseline
    assert doc["version"] == 2
    for cell in doc["cells"]:
        for v in cell["values"]:
            assert v["ci_low"] <= v["corrected"] <= v["ci_high"] and len(v["replicates"]) >= 8
    assert C.load_baseline(path)["cells"][0]["values"][0]["replicates"] == doc["cells"][0]["values"][0]["replicates"]


def test_a_wrong_coefficient_in_a_sampler_fails_the_check(baseline, tmp_path, monkeypatch):
    path, _ = baseline
    monkeypatch.setitem(registry._REGISTRY, "heun", dataclasses.replace(registry._REGISTRY["heun"], step=wrong_heun))
    with ResultsStore(sweep(tmp_path, "harmful")) as store:
        result = C.check(store, C.load_baseline(path))
    regressed = {(c.cell.split()[1], c.key) for c in result.failures}
    assert ("heun", "fd") in regressed and not any(s == "euler" for s, _ in regressed)
    assert all(c.paired for c in result.comparisons if c.p_value is not None)  # same seeds: paired


def test_seed_to_seed_noise_and_an_identical_rerun_pass(baseline, tmp_path):
    path, _ = baseline
    with ResultsStore(sweep(tmp_path, "other-seeds", seed=10_000)) as store:
        result = C.check(store, C.load_baseline(path), any_seed=True)
    assert result.passed, [(c.cell, c.key, c.p_value) for c in result.failures]
    assert all(c.p_value is not None and not c.paired for c in result.comparisons)
    with ResultsStore(sweep(tmp_path, "again")) as store:
        assert C.check(store, C.load_baseline(path)).passed


def test_a_version_1_baseline_without_intervals_keeps_the_tolerance_rule(baseline, tmp_path):
    path, doc = baseline
    old = json.loads(json.dumps(doc))
    old["version"] = 1
    old["tolerances"]["default"]["rel"] = 0.5
    for cell in old["cells"]:
        for v in cell["values"]:
            for f in ("ci_low", "ci_high", "corrected", "replicates"):
                v.pop(f)
    (tmp_path / "v1.json").write_text(json.dumps(old))
    with ResultsStore(sweep(tmp_path, "again")) as store:
        result = C.check(store, C.load_baseline(tmp_path / "v1.json"))
    assert result.passed and all(c.p_value is None for c in result.comparisons)
