"""Published anchors: the committed table is complete and documented, and the report prints the
paper's value beside ours exactly when a cell measured the same thing."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from sampler_bench.bench.store import CELL_COLUMNS, ResultsStore
from sampler_bench.report.anchors import ANCHORS_FILE, anchor_blocks, load_anchors, matched

ROOT = Path(__file__).resolve().parent.parent


def test_the_anchor_table_holds_the_field_reference_numbers():
    anchors = {a["id"]: a for a in load_anchors()}
    grid = {(a["sb_solver"], a["nfe"]): a["value"] for a in anchors.values() if a["id"].startswith("diff-sampler")}
    assert len(grid) == 20 and grid[("ipndm", 10)] == 2.77 and grid[("euler", 5)] == 49.66
    assert anchors["edm-cifar10-uncond-vp-heun-nfe35"]["value"] == 1.97
    assert anchors["er-sde-imagenet64-nfe20"]["value"] == 3.45
    assert anchors["gddim-cld-cifar10-nfe50"]["value"] == 2.26
    assert anchors["pfgmpp-cifar10-uncond-d2048-nfe35"]["value"] == 1.91
    for a in anchors.values():  # every row names its source and what was checked
        assert a["arxiv"] and a["source"] and a["verified"] and a["fid_implementation"]
    readme = (ANCHORS_FILE.parent / "README.md").read_text()
    for column in ("sb_solver", "sb_options", "sb_schedule", "nfe_convention", "verified", "fid_implementation"):
        assert column in readme


def _cell(**over):
    row = {c: None for c in CELL_COLUMNS if c != "created_at"}
    row.update(cell_id="c1", sweep_id="s", spec_name="calib", model="edm-cifar10-32x32-uncond-vp", model_hash="h",
               process="gaussian", solver="ipndm", options=json.dumps({"order": 4}), requested_options=json.dumps({"order": 4}),
               stochastic=False, declared_order=2, schedule="karras", schedule_params=json.dumps({"rho": 7.0}),
               sigma_min=0.002, sigma_max=80.0, ends_at_zero=False, nfe_budget=10, nfe_planned=10, nfe_counted=10, steps=10,
               n_samples=50000, seed=0, batch_size=500, device="cuda", precision="float64", wall_time_s=1.0,
               samples_per_s=1.0, denoiser_fraction=0.9, metric_time_s=0.1, status="ok", reason="", version="x")
    row.update(over)
    return row


def _fid(cell_id, value, extractor="inception-v3-compat"):
    return {"cell_id": cell_id, "metric": "fd", "key": "fd", "value": value, "lower_is_better": True,
            "feature_extractor": extractor, "reference_hash": "r", "provenance": {}}


@pytest.mark.parametrize("change, matches", [
    ({}, True),
    ({"model": "my-cifar10"}, False),                       # another checkpoint
    ({"model_hash": "edm-cifar10-32x32-uncond-vp", "model": "renamed"}, True),  # the name may be the fingerprint
    ({"nfe_counted": 11}, False),                           # counted NFE must agree, not the budget
    ({"ends_at_zero": True}, False),                        # a final denoise step is another NFE convention
    ({"schedule": "log_snr_uniform", "schedule_params": "{}"}, False),
    ({"schedule_params": json.dumps({"rho": 5.0})}, False),
    ({"options": json.dumps({"order": 3})}, False),
    ({"sigma_min": 0.01}, False),
])
def test_a_cell_matches_an_anchor_only_when_it_measured_the_same_thing(change, matches):
    cells = pd.DataFrame([_cell(**change)])
    values = pd.DataFrame([_fid("c1", 2.9)])
    found = matched(cells, values, load_anchors())
    assert (len(found) == 1) == matches
    if matches:
        assert found[0][0]["value"] == 2.77 and found[0][2] == 2.9


def test_only_inception_fid_is_put_beside_a_paper_fid():
    cells = pd.DataFrame([_cell()])
    assert not matched(cells, pd.DataFrame([_fid("c1", 2.9, extractor="raw")]), load_anchors())


def test_the_report_prints_the_papers_value_beside_ours(tmp_path):
    from sampler_bench.report import write_report

    with ResultsStore(tmp_path / "results.sqlite") as store:
        store.begin_sweep("s", spec_name="calib", spec_toml="", command="", environment={})
        store.put_cell(_cell(), [_fid("c1", 2.912)])
        store.put_cell(_cell(cell_id="c2", solver="euler", options="{}", requested_options="{}", declared_order=1),
                       [_fid("c2", 16.2)])
        store.finish_sweep("s")
    paths = write_report(tmp_path / "results.sqlite", tmp_path / "report")
    md = Path(paths["markdown"]).read_text()
    assert "published anchors" in md and "2.77" in md and "2.91" in md and "15.7" in md and "16.2" in md
    assert "arXiv 2312.00094" in md


def test_the_calibration_spec_has_the_settings_of_every_reproducible_diff_sampler_row():
    from sampler_bench.bench.spec import load_spec

    spec = load_spec(ROOT / "benchmarks" / "calibration" / "edm_cifar10.toml")
    assert spec.n_samples == 50000 and spec.seed == 0  # EDM's seeds 0-49999
    rows = [a for a in load_anchors() if a["id"].startswith("diff-sampler") and a["sb_schedule"]]
    assert len(rows) == 20  # DEIS-tAB3 included, through its [[grid]] block

    def block_runs(block, a) -> bool:
        return (a["nfe"] in block.nfe
                and any(s.name == a["sb_solver"] and all(s.options.get(k) == v for k, v in a["sb_options"].items())
                        for s in block.samplers)
                and any(sc.name == a["sb_schedule"] and sc.params == a["sb_schedule_params"]
                        and sc.ends_at_zero == a["ends_at_zero"] and (sc.sigma_min, sc.sigma_max) == (a["sigma_min"], a["sigma_max"])
                        for sc in block.schedules))

    for a in rows:
        assert any(m.label == a["checkpoint"] for m in spec.models)
        assert any(block_runs(b, a) for b in spec.blocks), a["id"]
    fid = spec.metrics[0]
    assert fid.feature_extractor == "inception-v3-compat" and fid.params["reference_stats"].endswith("cifar10-32x32.npz")


def test_sample_i_starts_from_edms_draw_for_seed_i():
    import torch

    from sampler_bench.bench.states import initial_states
    from sampler_bench.models.plugin import load_plugin

    m = load_plugin("plugin_factories:gaussian", {"dim": 12})
    x = initial_states(m, 0, 3, 6, 80.0, "cpu")
    for i in range(3, 6):  # EDM generate.py: StackedRandomGenerator seeds, float32 randn, then float64 * sigma_max
        edm = torch.randn([12], generator=torch.Generator().manual_seed(i)).to(torch.float64) * 80.0
        assert torch.equal(x[i - 3], edm)


def test_the_calibration_specs_deis_block_matches_the_deis_anchors():
    """diff-sampler's DEIS-tAB3 grid is vp_time_quadratic with a fitted, negative beta_min: the calibration
    spec's [[grid]] block asks for exactly the anchors' solver, options and schedule parameters."""
    from sampler_bench.bench.spec import load_spec
    from sampler_bench.report.anchors import matches
    from sampler_bench.solvers.schedules import vp_fit

    spec = load_spec(ROOT / "benchmarks" / "calibration" / "edm_cifar10.toml")
    (block,) = spec.grids
    (sampler,), (schedule,) = block.samplers, block.schedules
    assert schedule.params == pytest.approx(dict(zip(("beta_d", "beta_min"), vp_fit(0.002, 80.0))), rel=1e-15)
    deis = [a for a in load_anchors() if a["sb_solver"] == "deis"]
    assert len(deis) == 4
    for a in deis:
        cell = pd.Series(_cell(solver=sampler.name, options=json.dumps(sampler.options), schedule=schedule.name,
                               schedule_params=json.dumps(schedule.params), nfe_counted=a["nfe"],
                               ends_at_zero=schedule.ends_at_zero))
        assert matches(a, cell), a["id"]
        assert not matches(a, cell.copy().replace({cell["schedule_params"]: json.dumps({**schedule.params, "beta_min": 0.1})}))
