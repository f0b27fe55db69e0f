"""Plug-in models: the protocol checks (one clear message per violation), provenance, guidance, labels."""

from __future__ import annotations

import pytest
import torch

import sampler_bench as sb
from sampler_bench.models.guidance import (Conditioned, EvaluationCounter, GuidedModel, class_labels_for,
                                           draw_class_labels)
from sampler_bench.models.plugin import DenoiserProtocol, PluginError, load_plugin
from sampler_bench.solvers.driver import CountingDenoiser
from sampler_bench.solvers.noise import generators_for


def test_a_plugin_follows_the_protocol_and_samples_exactly():
    m = load_plugin("plugin_factories:gaussian", {"dim": 3, "mean": 1.0})
    assert isinstance(m.obj, DenoiserProtocol)
    assert (m.shape, m.process, m.sigma_min, m.sigma_max) == ((3,), "gaussian", 0.002, 80.0)
    # the default prior is EDM's: sigma_max times a float32 normal draw per sample generator
    x = m.prior(2, generator=generators_for([7, 8]))
    torch.testing.assert_close(x[0], 80.0 * torch.randn(3, generator=torch.Generator().manual_seed(7)).double())
    out = sb.sample("heun", m, x, sb.schedules.karras(32, 0.002, 80.0))
    assert torch.isfinite(out).all() and out.shape == (2, 3)


@pytest.mark.parametrize("ref, args, message", [
    ("plugin_factories", {}, "must be written \"package.module:function\""),
    ("no_such_module_xyz:f", {}, "module 'no_such_module_xyz' cannot be imported"),
    ("plugin_factories:nope", {}, "has no attribute 'nope'"),
    ("plugin_factories:NOT_CALLABLE", {}, "is not callable"),
    ("plugin_factories:raises", {}, "raised RuntimeError: weights file is corrupt"),
    ("plugin_factories:gaussian", {"colour": 1}, "raised TypeError"),
    ("plugin_factories:missing_sigma_max", {}, "attribute 'sigma_max' is missing"),
    ("plugin_factories:inverted_range", {}, "'sigma_min' \\(80.0\\) must be smaller than 'sigma_max'"),
    ("plugin_factories:wrong_shape", {}, "returned shape \\[2, 1\\] for x of shape \\[2, 2\\]"),
    ("plugin_factories:nan_output", {}, "returned NaN or inf"),
    ("plugin_factories:integer_output", {}, "expected a floating dtype"),
    ("plugin_factories:gaussian", {"weight_files": ["/no/such/file.safetensors"]}, "attribute 'weight_files'"),
    ("plugin_factories:from_pickle", {}, "trust_pickle = true"),
])
def test_each_protocol_violation_is_one_clear_message(ref, args, message):
    with pytest.raises(PluginError, match=message):
        load_plugin(ref, args)


def test_an_unpickling_factory_runs_only_when_trusted():
    assert load_plugin("plugin_factories:from_pickle", {}, trust_pickle=True).provenance()["trust_pickle"]


def test_the_fingerprint_follows_the_weight_files_bytes(tmp_path):
    w = tmp_path / "w.bin"
    w.write_bytes(b"\x00" * 8)
    a = load_plugin("plugin_factories:gaussian", {"weight_files": [str(w)]})
    same = load_plugin("plugin_factories:gaussian", {"weight_files": [str(w)]})
    w.write_bytes(b"\x01" * 8)
    changed = load_plugin("plugin_factories:gaussian", {"weight_files": [str(w)]})
    other_args = load_plugin("plugin_factories:gaussian", {"weight_files": [str(w)], "mean": 0.5})
    assert a.fingerprint() == same.fingerprint()
    assert len({a.fingerprint(), changed.fingerprint(), other_args.fingerprint()}) == 3
    assert a.provenance()["factory"] == "plugin_factories:gaussian" and str(w) in a.provenance()["weight_files"]


def test_class_labels_depend_on_seed_and_index_only():
    seeds = list(range(100, 112))
    whole = draw_class_labels(generators_for(seeds), 10)
    # batches of 5 (and any rank split is a batch split) draw the same labels
    parts = torch.cat([draw_class_labels(generators_for(seeds[a:a + 5]), 10) for a in range(0, 12, 5)])
    assert torch.equal(whole, parts)
    # EDM's order: the prior's float32 normal draw first, then randint from the same generator
    gens = generators_for(seeds)
    for g in gens:
        torch.randn((3, 4, 4), generator=g)
    assert torch.equal(draw_class_labels(gens, 10), class_labels_for(seeds, (3, 4, 4), 10))
    assert len(set(whole.tolist())) > 1


def test_guidance_at_scale_one_is_the_conditional_model_at_one_network_evaluation():
    m = load_plugin("plugin_factories:conditional")
    x = torch.randn(4, 3, dtype=torch.float64)
    s = torch.full((4,), 2.0, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 3])
    counter = EvaluationCounter()
    out = Conditioned(GuidedModel(m, 1.0), labels, counter)(x, s)
    assert torch.equal(out, m(x, s, class_labels=labels))
    assert (counter.network_evals, counter.forward_calls) == (1, 1)


@pytest.mark.parametrize("null_label, calls, batch", [(True, 1, 8), (False, 2, 4)])
def test_guidance_formula_and_evaluation_counts(null_label, calls, batch):
    m = load_plugin("plugin_factories:conditional", {"null_label": null_label})
    x = torch.randn(4, 3, dtype=torch.float64)
    s = torch.full((4,), 0.7, dtype=torch.float64)
    labels = torch.tensor([3, 1, 2, 0])
    m.obj.forwards.clear()
    counter = EvaluationCounter()
    out = Conditioned(GuidedModel(m, 2.5), labels, counter)(x, s)
    cond, uncond = m(x, s, class_labels=labels), m(x, s, class_labels=torch.full((4,), -1))
    torch.testing.assert_close(out, uncond + 2.5 * (cond - uncond), rtol=0, atol=1e-12)
    assert (counter.network_evals, counter.forward_calls) == (2, calls)
    assert m.obj.forwards[0] == batch  # the two halves share one forward when the model takes the null label
    # a solver's NFE counts guided evaluations; network evaluations are 2 per guided one
    counter = EvaluationCounter()
    guided = Conditioned(GuidedModel(m, 2.5), labels, counter)
    counting = CountingDenoiser(guided)
    sb.sample("euler", counting, 80 * x, sb.schedules.karras(6, 0.002, 80.0))
    assert counting.nfe == 6 and counter.network_evals == 12


def test_guidance_scale_is_part_of_the_identity_and_needs_a_conditional_model():
    m = load_plugin("plugin_factories:conditional")
    assert GuidedModel(m, 1.5).fingerprint() != GuidedModel(m, 2.0).fingerprint()
    with pytest.raises(ValueError, match="class-conditional"):
        GuidedModel(load_plugin("plugin_factories:gaussian"), 2.0)


def test_a_spec_sweeps_a_plugin_model_end_to_end(tmp_path):
    from sampler_bench.bench.runner import run_sweep
    from sampler_bench.bench.spec import parse_spec
    from sampler_bench.bench.store import ResultsStore

    spec = parse_spec("""
name = "plugin"
nfe = [4, 8]
n_samples = 16
batch_size = 8
[[model]]
python = "plugin_factories:gaussian"
args = { dim = 2, mean = 1.0 }
name = "my-gaussian"
[[sampler]]
name = "heun"
""")
    summary = run_sweep(spec, tmp_path)
    assert summary.ok == 2 and summary.failed == 0
    with ResultsStore(tmp_path / "results.sqlite") as store:
        cells = store.cells()
    assert set(cells["model"]) == {"my-gaussian"} and (cells["nfe_counted"] == cells["nfe_planned"]).all()
    # the model hash is the plug-in's fingerprint: factory, args and weights
    assert cells["model_hash"].iloc[0] == load_plugin("plugin_factories:gaussian", {"dim": 2, "mean": 1.0},
                                                      name="my-gaussian").fingerprint()


@pytest.mark.parametrize("model, message", [
    ('python = "plugin_factories:nan_output"', "returned NaN or inf"),
    ('python = "no_such_module_xyz:f"', "cannot be imported"),
    ('python = "plugin_factories:from_pickle"', "trust_pickle = true"),
    ('python = "plugin_factories"', "must be written"),
    ('python = "plugin_factories:gaussian"\nguidance = 2.0', "class-conditional"),
    ('builtin = "gmm2d"\nguidance = 2.0', "guidance applies to class-conditional plug-in models"),
    ('builtin = "gmm2d"\nargs = { a = 1 }', "args is for plug-in models"),
])
def test_bad_plugin_models_exit_2_with_one_message(tmp_path, model, message):
    from click.testing import CliRunner

    from sampler_bench.cli import main

    path = tmp_path / "s.toml"
    path.write_text(f'nfe = [4]\nn_samples = 4\n[[model]]\n{model}\n[[sampler]]\nname = "euler"\n')
    res = CliRunner().invoke(main, ["sweep", str(path), "--out", str(tmp_path / "out"), "--no-report"])
    assert res.exit_code == 2, res.output
    assert message in res.output and "Traceback" not in res.output
