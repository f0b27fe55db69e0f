"""The regression check: a store passes against its own baseline, a value that moved the wrong way
beyond its tolerance fails (exit 1) with the move shown, missing cells fail with a clear line."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from sampler_bench.bench import check as C
from sampler_bench.bench.store import ResultsStore
from sampler_bench.cli import main


def cell(cell_id, solver="heun", nfe=10, status="ok"):
    return {
        "cell_id": cell_id, "sweep_id": "s", "spec_name": "t", "model": "gmm2d", "model_hash": "h", "process": "gaussian",
        "solver": solver, "options": "{}", "requested_options": "{}", "stochastic": False, "declared_order": 2, "schedule": "karras",
        "schedule_params": "{}", "sigma_min": 0.002, "sigma_max": 80.0, "ends_at_zero": True, "nfe_budget": nfe,
        "nfe_planned": nfe, "nfe_counted": nfe, "steps": nfe, "n_samples": 100, "seed": 0, "batch_size": 100,
        "device": "cpu", "precision": "float64", "wall_time_s": 1.0, "samples_per_s": 100.0, "denoiser_fraction": 0.5,
        "metric_time_s": 0.0, "status": status, "reason": "" if status == "ok" else "boom", "version": "0",
    }


def values(**kv):
    lib = {"precision": False}
    return [{"metric": "m", "key": k, "value": v, "lower_is_better": lib.get(k, True)} for k, v in kv.items()]


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "results.sqlite"
    with ResultsStore(path) as s:
        s.put_cell(cell("a", "heun", 10), values(err=0.10, precision=0.80))
        s.put_cell(cell("b", "euler", 10), values(err=0.30, precision=0.70))
    return path


def rewrite(db, cell_id, **kv):
    """The same cell, recomputed with different numbers (as after a code change)."""
    with ResultsStore(db) as s:
        row = s.cells().set_index("cell_id").loc[cell_id]
        s.put_cell(cell(cell_id, row.solver, int(row.nfe_budget)), values(**kv), replace=True)


def test_store_passes_against_its_own_baseline(db, tmp_path):
    base = tmp_path / "baseline.json"
    r = CliRunner().invoke(main, ["check", str(db), "--write-baseline", str(base), "--rel", "0.1"])
    assert r.exit_code == 0, r.output
    doc = json.loads(base.read_text())
    assert doc["format"] == "sampler-bench-baseline" and doc["tolerances"]["default"]["rel"] == 0.1
    assert len(doc["cells"]) == 2 and {v["key"] for v in doc["cells"][0]["values"]} == {"err", "precision"}
    r = CliRunner().invoke(main, ["check", str(db), "--baseline", str(base)])
    assert r.exit_code == 0, r.output
    assert "all 4 values within tolerance" in r.output


def test_regression_beyond_tolerance_exits_1_and_shows_the_move(db, tmp_path):
    base = tmp_path / "baseline.json"
    with ResultsStore(db) as s:
        C.write_baseline(s, base, rel=0.05)
    rewrite(db, "a", err=0.104, precision=0.80)  # +4%: inside the 5% tolerance
    r = CliRunner().invoke(main, ["check", str(db), "--baseline", str(base)])
    assert r.exit_code == 0, r.output
    rewrite(db, "a", err=0.12, precision=0.70)  # +20% error, -12.5% precision: both worse
    r = CliRunner().invoke(main, ["check", str(db), "--baseline", str(base)], env={"COLUMNS": "200"})
    assert r.exit_code == 1, r.output
    assert "regressed" in r.output and "+20.00%" in r.output and "-12.50%" in r.output
    assert "FAILED: 2 of 4" in r.output


def test_improvement_passes_unless_the_tolerance_is_two_sided(db, tmp_path):
    base = tmp_path / "baseline.json"
    with ResultsStore(db) as s:
        doc = C.make_baseline(s, rel=0.05, tolerances={"precision": {"direction": "both"}})
    base.write_text(json.dumps(doc))
    rewrite(db, "b", err=0.1, precision=0.70)  # error much lower: an improvement
    with ResultsStore(db) as s:
        result = C.check(s, C.load_baseline(base))
    assert result.passed and [c.verdict for c in result.comparisons if c.key == "err" and c.cell.startswith("gmm2d euler")] == ["improved"]
    rewrite(db, "b", err=0.3, precision=0.9)  # precision up, but this key is two-sided
    with ResultsStore(db) as s:
        result = C.check(s, C.load_baseline(base))
    assert not result.passed and [c.key for c in result.failures] == ["precision"]


@pytest.mark.parametrize("baseline, current, lower, tol, verdict", [
    (1.0, 1.04, True, {"rel": 0.05, "abs": 0.0, "direction": "worse"}, "ok"),
    (1.0, 1.06, True, {"rel": 0.05, "abs": 0.0, "direction": "worse"}, "regressed"),
    (1.0, 0.90, True, {"rel": 0.05, "abs": 0.0, "direction": "worse"}, "improved"),
    (1.0, 0.90, True, {"rel": 0.05, "abs": 0.0, "direction": "both"}, "changed"),
    (0.0, 0.009, True, {"rel": 0.05, "abs": 0.01, "direction": "worse"}, "ok"),  # abs floor near zero
    (0.5, 0.40, False, {"rel": 0.1, "abs": 0.0, "direction": "worse"}, "regressed"),  # higher is better
    (1.0, float("nan"), True, {"rel": 1.0, "abs": 1.0, "direction": "worse"}, "regressed"),
])
def test_judge_applies_the_larger_of_absolute_and_relative_tolerance(baseline, current, lower, tol, verdict):
    assert C.judge(baseline, current, lower, tol)[0] == verdict


def test_tolerance_lookup_prefers_value_key_then_metric_then_default():
    tol = {"default": {"rel": 0.05}, "fd": {"rel": 0.2}, "kid_mean": {"abs": 0.01}}
    assert C.tolerance_for(tol, "fd", "fd")["rel"] == 0.2
    assert C.tolerance_for(tol, "kid", "kid_mean") == {"rel": 0.05, "abs": 0.01, "direction": "worse"}
    assert C.tolerance_for(tol, "swd", "swd")["rel"] == 0.05


def test_missing_and_failed_cells_fail_with_a_clear_line(db, tmp_path):
    base = tmp_path / "baseline.json"
    with ResultsStore(db) as s:
        doc = C.make_baseline(s)
    extra = dict(doc["cells"][0], solver="dpmpp_2m")
    doc["cells"].append(extra)
    base.write_text(json.dumps(doc))
    with ResultsStore(db) as s:  # the euler cell now fails
        s.put_cell(cell("b", "euler", 10, status="failed"), replace=True)
    r = CliRunner().invoke(main, ["check", str(db), "--baseline", str(base)], env={"COLUMNS": "200"})
    assert r.exit_code == 1
    assert "missing: gmm2d dpmpp_2m karras NFE 10 m/err: cell not in the results store" in r.output
    assert "cell is failed: boom" in r.output


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    ('{"cells": []}', "not a sampler-bench baseline"),
    ('{"format": "sampler-bench-baseline", "version": 1, "tolerances": {"fd": {"rell": 0.1}}, "cells": []}',
     "unknown field 'rell' (did you mean 'rel'?)"),
    ('{"format": "sampler-bench-baseline", "version": 1, "tolerances": {"fd": {"rel": -1}}, "cells": []}', "number >= 0"),
    ('{"format": "sampler-bench-baseline", "version": 1, "cells": [{"model": "x"}]}', "lacks solver"),
])
def test_bad_baseline_files_are_one_readable_error(db, tmp_path, content, message):
    base = tmp_path / "b.json"
    base.write_text(content)
    r = CliRunner().invoke(main, ["check", str(db), "--baseline", str(base)])
    assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output  # 1 means "regressed"


def test_check_needs_exactly_one_mode(db):
    r = CliRunner().invoke(main, ["check", str(db)])
    assert r.exit_code == 2 and "exactly one of --baseline" in r.output
