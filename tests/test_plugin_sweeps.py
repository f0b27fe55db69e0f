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
