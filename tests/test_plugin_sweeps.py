"""Plug-in models in sweeps: class labels per sample, guidance counts in the store, the decoder hook."""

from __future__ import annotations

import json

import pytest
import torch

from sampler_bench.bench.runner import run_sweep
from sampler_bench.bench.spec import parse_spec
from sampler_bench.bench.store import ResultsStore

CONDITIONAL = """
name = "cond"
nfe = [4]
n_samples = 12
batch_size = {batch}
keep_samples = 12
[[model]]
python = "plugin_factories:conditional"
name = "cond"
guidance = [1.0, 3.0]
[[sampler]]
name = "euler"
[[metric]]
name = "fd"
"""


def _run(tmp_path, text, name):
    run_sweep(parse_spec(text), tmp_path / name)
    with ResultsStore(tmp_path / name / "results.sqlite") as store:
        cells, metrics = store.cells(), store.metrics()
        kept = {c.model: store.samples(c.cell_id) for c in cells.itertuples()}
    return cells, metrics, kept


def test_guided_sweep_stores_both_evaluation_counts_and_labels_ignore_the_batch_size(tmp_path):
    cells, metrics, kept = _run(tmp_path, CONDITIONAL.format(batch=12), "a")
    assert set(cells["status"]) == {"ok"} and set(cells["nfe_counted"]) == {4}  # NFE: guided evaluations
    evals = {c.model: json.loads(metrics[metrics.cell_id == c.cell_id]["provenance"].iloc[0])["evaluations"]
             for c in cells.itertuples()}
    assert evals["cond w=1"]["network_per_sample"] == 4 and evals["cond w=3"]["network_per_sample"] == 8
    assert evals["cond w=3"]["forward_calls"] == 4  # both halves in one forward per evaluation
    _, _, kept_small = _run(tmp_path, CONDITIONAL.format(batch=5), "b")
    for model in kept:  # labels drawn from (seed, i): the same samples whatever the batch size
        torch.testing.assert_close(kept[model], kept_small[model], rtol=0, atol=0)
    assert not torch.equal(kept["cond w=1"], kept["cond w=3"])


def test_a_decoder_feeds_the_metrics_and_is_timed_apart(tmp_path):
    text = """
nfe = [3]
n_samples = 8
[[model]]
python = "plugin_factories:latent_gaussian"
name = "latent"
decode = "plugin_factories:stack_squares"
[[sampler]]
name = "euler"
[[metric]]
name = "fd"
"""
    cells, metrics, kept = _run(tmp_path, text, "d")
    assert cells["status"].iloc[0] == "ok"
    assert kept["latent"].shape == (8, 4)  # the decoded samples are what is kept and scored
    prov = json.loads(metrics["provenance"].iloc[0])
    assert prov["decode"]["decoder"] == "plugin_factories:stack_squares" and prov["decode"]["seconds"] >= 0


@pytest.mark.parametrize("decode, message", [
    ("plugin_factories:nan_decoder", "returned NaN or inf"),
    ("plugin_factories:nope", "has no attribute 'nope'"),
])
def test_a_bad_decoder_is_one_message(tmp_path, decode, message):
    from click.testing import CliRunner

    from sampler_bench.cli import main

    path = tmp_path / "s.toml"
    path.write_text(f'nfe = [3]\nn_samples = 4\n[[model]]\npython = "plugin_factories:gaussian"\ndecode = "{decode}"\n'
                    '[[sampler]]\nname = "euler"\n')
    res = CliRunner().invoke(main, ["sweep", str(path), "--out", str(tmp_path / "out"), "--no-report"])
    assert res.exit_code == 2, res.output
    assert message in res.output and "Traceback" not in res.output


ENDPOINTS = """
name = "cond-endpoints"
nfe = [35]
n_samples = 10
seed = 5
batch_size = {batch}
[[model]]
python = "plugin_factories:conditional"
name = "cond"
guidance = {guidance}
[[sampler]]
name = "heun"
[[metric]]
name = "endpoint_error"
"""


@pytest.mark.parametrize("guidance", ["1.0", "2.5"])
def test_endpoint_error_of_a_class_conditional_model_compares_with_the_same_labels(tmp_path, guidance):
    """The reference ODE runs each sample under the label its cell drew (seed, i): every class
    mean here is c * ones, so a reference under other labels would be O(1) away, not Heun's ~0.04."""
    from sampler_bench.bench.cells import expand_cells
    from sampler_bench.bench.prepare import prepare_models
    from sampler_bench.bench.reference_cache import ReferenceCache
    from sampler_bench.models.guidance import class_labels_for

    spec = parse_spec(ENDPOINTS.format(batch=4, guidance=guidance))
    cells, metrics, _ = _run(tmp_path, ENDPOINTS.format(batch=4, guidance=guidance), "e")
    assert list(cells["status"]) == ["ok"]
    err = metrics[metrics.key == "endpoint_rmse"]["value"]  # Heun at 35 NFE: 0.042 (w = 1)
    assert len(err) == 1 and 0 < float(err.iloc[0]) < 0.1
    # the reference endpoints are the exact PF-ODE solutions under each sample's own label
    (cell,) = expand_cells(spec, prepare_models(spec, None))
    target = cell.reference
    ends = ReferenceCache(None).endpoints(target, 0, 10)
    labels = class_labels_for(range(5, 15), (3,), 4)
    w = float(guidance)  # guided mean w * mu_c + (1 - w) * 0 (the null label's mean), still a Gaussian of unit variance
    mu = (w * labels.double())[:, None].expand(-1, 3)
    x_top = target.initial(0, 10)
    exact = mu + (x_top - mu) / (1 + 80.0**2) ** 0.5
    torch.testing.assert_close(ends, exact, rtol=1e-6, atol=1e-6)
    assert len(set(labels.tolist())) > 1  # the labels differ between samples, so the test can tell


def test_class_conditional_results_do_not_depend_on_batch_size_or_shard_split(tmp_path):
    """Labels and results are functions of (seed, i): one cell computed in batches of 10, 3 and 4,
    and as shards [0, 4) + [4, 10) (how ranks split a cell), gives the same labels, samples and states."""
    from sampler_bench.bench.cells import expand_cells
    from sampler_bench.bench.compute import cell_shard
    from sampler_bench.bench.prepare import prepare_models
    from sampler_bench.bench.reference_cache import ReferenceCache
    from sampler_bench.bench.states import class_labels

    def shards(batch, cuts):
        spec = parse_spec(ENDPOINTS.format(batch=batch, guidance="2.5").replace("n_samples = 10", "n_samples = 10\nkeep_samples = 10"))
        (cell,) = expand_cells(spec, prepare_models(spec, None))
        cache = ReferenceCache(None)
        ref = lambda a, b: cache.endpoints(cell.reference, a, b)  # noqa: E731
        parts = [cell_shard(cell, a, b, ref) for a, b in zip(cuts[:-1], cuts[1:])]
        labels = torch.cat([class_labels(cell.model.model, spec.seed, a, b, cell.sigma_max, "cpu")
                            for a, b in zip(cuts[:-1], cuts[1:])])
        return labels, torch.cat([p.kept for p in parts]), parts

    labels, kept, (whole,) = shards(10, [0, 10])
    for batch, cuts in ((3, [0, 10]), (4, [0, 4, 10]), (10, [0, 4, 10])):
        l2, k2, parts = shards(batch, cuts)
        assert torch.equal(l2, labels)
        torch.testing.assert_close(k2, kept, rtol=0, atol=0)
        summed = {k: sum(p.states["endpoint_error"][k] for p in parts) for k in whole.states["endpoint_error"]
                  if not k.startswith("cat:")}
        for k, v in summed.items():
            torch.testing.assert_close(v, whole.states["endpoint_error"][k], rtol=1e-12, atol=1e-12)
