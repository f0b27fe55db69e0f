"""The noise floor is stored and shown, ties follow the stated rule (every sampler inside the floor is
tied when the best is), `replicates = K` runs K disjoint seed ranges and reports mean, interval and
EDM's minimum, and bad replicate / confidence settings are one clear spec error."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sampler_bench.bench.runner import run_sweep
from sampler_bench.bench.spec import SpecError, parse_spec
from sampler_bench.bench.store import ResultsStore
from sampler_bench.report import plots
from sampler_bench.report.ties import column_verdict

BASE = """
name = "t"
nfe = [{nfe}]
n_samples = {n}
{extra}
keep_samples = 0
[[model]]
builtin = "gmm2d"
{samplers}
[[metric]]
name = "fd"
"""


def spec(nfe="30", n=1000, extra="", samplers=("euler", "heun", "dpmpp_2m")):
    text = BASE.format(nfe=nfe, n=n, extra=extra, samplers="\n".join(f'[[sampler]]\nname = "{s}"' for s in samplers))
    return parse_spec(text)


@pytest.fixture(scope="module")
def nfe30(tmp_path_factory):
    out = tmp_path_factory.mktemp("nfe30")
    run_sweep(spec(), out)
    with ResultsStore(out / "results.sqlite") as store:
        return store.joined(), store.replicates(), store.floors()


def test_the_floor_of_exact_samples_is_stored_with_its_interval(nfe30):
    _, _, floors = nfe30
    f = floors[(floors["metric"] == "fd") & (floors["key"] == "fd")]
    assert len(f) == 1 and int(f["n_samples"].iloc[0]) == 1000
    f = f.iloc[0]
    # exact samples: the population FD is 0 and the bias-corrected interval covers it
    assert f["value"] > 0 and f["ci_low"] <= 0.0 <= f["ci_high"]


def test_at_nfe_30_every_sampler_inside_the_floor_is_tied_with_the_best(nfe30):
    joined, reps, floors = nfe30
    col = joined[joined["key"] == "fd"].assign(row=lambda d: d["solver"])
    floor = floors[floors["key"] == "fd"].iloc[0].to_dict()
    verdict = column_verdict(col, {c: r for (c, m, k), r in reps.items() if k == "fd"}, True, floor)
    assert verdict.in_floor, "some sampler at 30 NFE must be within the noise floor of 1000 samples"
    assert verdict.best in verdict.in_floor
    assert verdict.in_floor <= verdict.tied
    # and the tie set is not everything by default: a sampler outside the floor and separated is not tied
    assert verdict.tied <= set(col["row"])


def test_a_sampler_separated_by_the_paired_test_is_not_tied():
    rng = np.random.default_rng(0)
    shared = rng.normal(0, 1, 48)
    col = pd.DataFrame({"row": ["a", "b"], "cell_id": ["a", "b"], "value": [1.0, 1.2], "corrected": [1.0, 1.2],
                        "ci_low": [0.0, 0.2], "ci_high": [2.0, 2.2], "seed": [0, 0], "n_samples": [100, 100]})
    reps = {"a": 1.0 + shared, "b": 1.2 + shared + rng.normal(0, 0.01, 48)}  # wide alone, sharp when paired
    assert column_verdict(col, reps, True).tied == {"a"}
    reps["b"] = 1.2 + rng.normal(0, 1, 48)  # unrelated noise: not separable
    assert column_verdict(col, reps, True).tied == {"a", "b"}


def test_replicates_run_disjoint_seed_ranges_and_report_mean_and_edm_minimum(tmp_path):
    out = tmp_path / "rep"
    run_sweep(spec(nfe="8", n=100, extra="replicates = 3", samplers=("euler",)), out)
    with ResultsStore(out / "results.sqlite") as store:
        cells = store.cells()
        joined = store.joined()
    assert sorted(cells["seed"].astype(int)) == [0, 100, 200]
    from sampler_bench.report.build import write_report

    paths = write_report(out / "results.sqlite", tmp_path / "report")
    text = paths["markdown"].read_text()
    fd = joined[joined["key"] == "fd"]["value"].to_numpy()
    assert "Replicates: each cell run on 3 disjoint seed ranges" in text and "EDM's convention" in text
    assert f"min {float(fd.min()):.3g}" in text and f"{float(fd.mean()):.3g} ±" in text
    # `sampler-bench show` combines them the same way: one row, mean ± t-interval and EDM's minimum
    from click.testing import CliRunner
    from scipy import stats

    from sampler_bench.cli import main

    shown = CliRunner().invoke(main, ["show", str(out / "results.sqlite"), "-m", "fd"], env={"COLUMNS": "250"},
                               catch_exceptions=False).output
    half = stats.t.ppf(0.975, 2) * fd.std(ddof=1) / np.sqrt(3)
    assert f"{fd.mean():.3g} ± {half:.2g} · min {fd.min():.3g}" in shown, shown
    words = " ".join(shown.split())  # the caption wraps at the table's width
    assert "3 disjoint seed ranges" in words and "EDM's convention" in words and "seed=" not in shown
    assert shown.count("euler") == 1


@pytest.mark.parametrize("extra, message", [
    ("replicates = 0", "replicates"), ("replicates = -1", "replicates"), ("replicates = 1.5", "replicates"),
    ("confidence = 0", "confidence"), ("confidence = 1", "confidence"), ("confidence = 95", "confidence"),
    ("confidence = -0.5", "confidence"),
])
def test_bad_replicates_or_confidence_is_one_clear_spec_error(extra, message):
    with pytest.raises(SpecError, match=message):
        spec(extra=extra)


def test_metric_plot_draws_interval_bands_the_floor_and_one_panel_per_family():
    style = plots.palette(["a", "b", "c"])
    series = [{"row": r, "label": r, "nfe": [4, 8], "value": [1.0, 0.5], "ci_low": [0.8, 0.4], "ci_high": [1.2, 0.6],
               "family": fam} for r, fam in (("a", "x"), ("b", "x"), ("c", "y"))]
    fig = plots.metric_vs_nfe(series, title="t", ylabel="fd", style=style, floor={"value": 0.1, "ci_low": 0.05,
                                                                                     "ci_high": 0.2})
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == ["x", "y"]
    for ax in visible:
        assert len(ax.collections) >= 1  # interval bands
        assert any(abs(p.get_extents().height) > 0 for p in ax.patches)  # the floor band


@pytest.mark.parametrize("reference_split", ["test", "train"])
def test_the_floor_of_a_trained_model_shares_no_row_with_its_reference(reference_split):
    """Every row of the dataset is unique (its value is its identity): the rows the noise floor scores
    and the rows the reference statistics are computed from (refstats' draws, as a sweep makes them)
    never meet, whichever split the reference reads and however many rows either takes."""
    import torch

    from sampler_bench.bench.floor import exact_samples
    from sampler_bench.data.base import Dataset
    from sampler_bench.metrics.refstats import _draws
    from sampler_bench.models.guidance import GuidedModel
    from sampler_bench.models.trained import TrainedModel
    from sampler_bench.processes.catalog import process_from_config

    model = TrainedModel(torch.nn.Linear(1, 1), process_from_config({"name": "edm"}), (1,),
                         config={"reference_split": reference_split}, name="unique-rows")
    model._dataset = Dataset("unique", torch.arange(0.0, 300.0)[:, None], torch.arange(1000.0, 1060.0)[:, None], {})
    reference = torch.cat(list(_draws(model, None, 500, seed=0)))  # more rows than the test split: replacement
    floor = exact_samples(model, 2500, 0, 0, 2500)
    assert floor.shape == (2500, 1) and reference.shape == (500, 1)
    assert not set(reference[:, 0].tolist()) & set(floor[:, 0].tolist())
    ref_split = model.dataset.test_raw if reference_split == "test" else model.dataset.train_raw
    assert set(reference[:, 0].tolist()) <= set(ref_split[:, 0].tolist())
    # wrappers a sweep puts around a model forward it (a guided model too)
    model.num_classes = 10
    assert torch.equal(GuidedModel(model, 2.0).floor_data(5, torch.Generator().manual_seed(1)),
                       model.floor_data(5, torch.Generator().manual_seed(1)))
