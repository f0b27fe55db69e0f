"""Sweep specs: the shipped specs are valid, and every user mistake is one readable SpecError that
names the place and the closest valid name, raised before any work starts."""

from __future__ import annotations

from pathlib import Path

import pytest

import sampler_bench as sb
from sampler_bench.bench.spec import SpecError, builtin_specs, load_spec, parse_spec

ROOT = Path(__file__).resolve().parents[1]

MINIMAL = """
nfe = [4, 8]
[[model]]
builtin = "gmm2d"
[[sampler]]
name = "euler"
"""


def sweepable() -> list[str]:
    """Every solver a budget can drive: all but the adaptive yardsticks (an adaptive solver with a
    budget -> tolerance map, dpm_adaptive, is swept)."""
    return [n for n in sb.solvers.available()
            if not sb.solvers.info(n).adaptive or sb.solvers.info(n).tolerance_for_nfe is not None]


def test_minimal_spec_fills_documented_defaults():
    spec = parse_spec(MINIMAL, name="tiny")
    assert spec.name == "tiny"
    assert spec.nfe == [4, 8]
    assert (spec.n_samples, spec.seed, spec.batch_size, spec.device, spec.precision, spec.keep_samples) == (
        1000, 0, 1000, "cpu", "float64", 256)
    assert [s.name for s in spec.schedules] == ["karras"] and spec.schedules[0].ends_at_zero
    assert spec.metrics == []
    # solver defaults are filled in, so the stored options say exactly what ran
    assert spec.samplers[0].options == sb.solvers.info("euler").validate({})


def test_nfe_budgets_are_sorted_and_deduplicated():
    spec = parse_spec(MINIMAL.replace("nfe = [4, 8]", "nfe = [8, 4, 8, 2]"))
    assert spec.nfe == [2, 4, 8]


def test_quickstart_is_shipped_and_sweeps_every_registered_sampler():
    assert "quickstart" in builtin_specs()
    spec = load_spec("quickstart")
    # asks the registry, never a fixed list; dpm_adaptive has its own block (see the spec's comment)
    assert {s.name for s in spec.samplers} == set(sweepable()) - {"dpm_adaptive"}
    assert {m.builtin for m in spec.models} == {"gmm2d", "gmm16"}
    assert spec.nfe[0] == 4 and spec.nfe[-1] == 50
    # [[grid]] blocks: dpm_adaptive at its own budgets, and the field's schedules with three samplers
    adaptive, field = spec.grids
    assert [s.name for s in adaptive.samplers] == ["dpm_adaptive"]
    assert [s.name for s in field.samplers] == ["euler", "dpmpp_2m", "res_multistep"]
    new = {"beta", "kl_optimal", "laplace", "linear_quadratic", "simple", "sgm_uniform", "linspace", "trailing", "ays"}
    assert {s.name for s in field.schedules} == new  # 'leading' cannot start at one sigma_max (see the spec)


def test_example_spec_documents_a_valid_sweep():
    spec = load_spec(ROOT / "benchmarks" / "example_sweep.toml")
    assert spec.name == "example"
    assert {s.name for s in spec.schedules} == {"karras", "log_snr_uniform"}
    text = (ROOT / "benchmarks" / "example_sweep.toml").read_text()
    from sampler_bench.bench import spec as S

    for key in S.TOP_KEYS + S.MODEL_KEYS + S.SCHEDULE_KEYS + S.METRIC_KEYS + S.REFERENCE_KEYS:  # all documented
        assert key in text, key


def test_all_samplers_with_exclusions_and_a_named_configuration():
    spec = parse_spec("""
nfe = [4]
all_samplers = true
exclude_samplers = ["euler"]
[[model]]
builtin = "gmm2d"
[[sampler]]
name = "heun"
[[sampler]]
name = "euler"
""")
    names = [s.name for s in spec.samplers]
    assert names.count("heun") == 1  # the same configuration twice is one
    assert "euler" in names  # named explicitly: kept despite the exclusion
    assert "reference" not in names  # adaptive: never swept
    assert not next(s for s in spec.samplers if s.name == "euler").from_all


@pytest.mark.parametrize("text, expected", [
    ("n_sample = 10\n" + MINIMAL, ["unknown key 'n_sample'", "did you mean 'n_samples'", "line 1"]),
    (MINIMAL + "n_samples = 10\n", ["[[sampler]] #1: unknown key 'n_samples'", "before the first [[...]] table"]),
    (MINIMAL.replace('"euler"', '"dpmpp_2mm"'), ["unknown sampler 'dpmpp_2mm'", "did you mean 'dpmpp_2m'", "line 6"]),
    (MINIMAL.replace('"gmm2d"', '"gmm2"'), ["unknown built-in model 'gmm2'", "did you mean 'gmm2d'"]),
    (MINIMAL + '[[schedule]]\nname = "karas"\n', ["unknown schedule 'karas'", "did you mean 'karras'"]),
    (MINIMAL + '[[schedule]]\nname = "karras"\nparams = { rh = 7 }\n', ["no parameter 'rh'", "did you mean 'rho'"]),
    (MINIMAL + '[[schedule]]\nname = "karras"\nparams = { rho = -1 }\n', ["rho must be a positive number"]),
    (MINIMAL + '[[schedule]]\nsigma_min = 5.0\nsigma_max = 1.0\n', ["sigma_min (5.0) must be smaller"]),
    (MINIMAL + '[[metric]]\nname = "fid_raw"\n', ["unknown metric 'fid_raw'"]),
    (MINIMAL + '[[metric]]\nname = "gmm_tvv"\n', ["did you mean 'gmm_tv'"]),
    (MINIMAL + '[[metric]]\nname = "fd"\nfeature_extractor = "rwa"\n', ["unknown feature extractor 'rwa'", "did you mean 'raw'"]),
    (MINIMAL + '[[metric]]\nnme = "fd"\n', ["[[metric]] #1: unknown key 'nme'", "did you mean 'name'"]),
    (MINIMAL.replace("nfe = [4, 8]", "nfe = [4, 0]"), ["NFE budget must be >= 1"]),
    (MINIMAL.replace("nfe = [4, 8]", ""), ["needs NFE budgets"]),
    ('precision = "float16"\n' + MINIMAL, ["precision must be one of float64, float32"]),
    ("keep_samples = 1000\n" + MINIMAL, ["keep_samples must be <= 256"]),
    ('device = "gpu"\n' + MINIMAL, ["not a torch device"]),
    (MINIMAL + '[[model]]\ncheckpoint = "no/such/dir"\n', ["does not exist"]),
    (MINIMAL + '[[model]]\nbuiltin = "gmm16"\ncheckpoint = "x"\n', ["exactly one of builtin"]),
    (MINIMAL + '[[model]]\nbuiltin = "gmm2d"\n', ["both called 'gmm2d'"]),
    (MINIMAL + '[[sampler]]\nname = "reference"\n', ["is adaptive", "cannot be swept"]),
    ('exclude_samplers = ["eulr"]\n' + MINIMAL, ["unknown sampler 'eulr'", "did you mean 'euler'"]),
    (MINIMAL + "[reference]\nrtol = 0\n", ["[reference] rtol must be a number in (0, 1)"]),
    (MINIMAL + "[reference]\nrtoll = 1e-6\n", ["[reference]: unknown key 'rtoll'", "did you mean 'rtol'"]),
    ("nfe = [4]\n[[sampler]]\nname = \"euler\"\n", ["names no model"]),
    ("nfe = [4]\n[[model]]\nbuiltin = \"gmm2d\"\n", ["names no sampler", "all_samplers = true"]),
])
def test_spec_mistakes_are_one_readable_error_with_the_closest_name(text, expected):
    with pytest.raises(SpecError) as err:
        parse_spec(text)
    message = str(err.value)
    for piece in expected:
        assert piece in message, (piece, message)
    assert "\n" not in message.strip() or "[[model]]" in message  # one message, not a dump


def test_bad_sampler_option_names_sampler_option_and_allowed_values():
    with pytest.raises(SpecError) as err:
        parse_spec(MINIMAL + '[[sampler]]\nname = "heun"\noptions = { ordr = 2 }\n')
    assert "[[sampler]] #2" in str(err.value) and "'heun'" in str(err.value) and "'ordr'" in str(err.value)
    opt_solver = next((n for n in sweepable() if sb.solvers.info(n).options), None)
    assert opt_solver is not None
    key, option = next(iter(sb.solvers.info(opt_solver).options.items()))
    with pytest.raises(SpecError) as err:
        parse_spec(MINIMAL + f'[[sampler]]\nname = "{opt_solver}"\noptions = {{ {key} = [1, "x"] }}\n')
    assert key in str(err.value) and "expected" in str(err.value)


def test_malformed_toml_reports_the_line(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('nfe = [4, 8]\n[[model]]\nbuiltin = "gmm2d\n')
    with pytest.raises(SpecError) as err:
        load_spec(bad)
    assert "malformed TOML" in str(err.value) and "line 3" in str(err.value) and "bad.toml" in str(err.value)


def test_unknown_spec_reference_suggests_the_builtin_spec(tmp_path):
    with pytest.raises(SpecError, match="did you mean 'quickstart'"):
        load_spec("quickstrat")
    with pytest.raises(SpecError, match="does not exist"):
        load_spec(tmp_path / "missing.toml")


def test_checkpoint_paths_are_relative_to_the_spec_file(tmp_path):
    (tmp_path / "ckpt").mkdir()
    f = tmp_path / "s.toml"
    f.write_text(MINIMAL.replace('builtin = "gmm2d"', 'checkpoint = "ckpt"\nname = "mine"'))
    spec = load_spec(f)
    assert spec.models[0].checkpoint == str(tmp_path / "ckpt") and spec.models[0].label == "mine"
