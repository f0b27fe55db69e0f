"""The sweep runner: per-sample seeds, resume, cached reference endpoints, skipped and failed cells,
shard reduction, and the reliability promises (SIGKILL + resume, two concurrent sweeps)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

import sampler_bench as sb
from sampler_bench.bench import compute as C
from sampler_bench.bench import prepare as P
from sampler_bench.bench import runner as R
from sampler_bench.bench.reference_cache import ReferenceCache
from sampler_bench.bench.spec import SpecError, parse_spec
from sampler_bench.bench.store import ResultsStore
from sampler_bench.models import builtin_model
from sampler_bench.solvers.noise import generators_for

ROOT = Path(__file__).resolve().parents[1]


def stochastic_sampler() -> str:
    names = [n for n in sb.solvers.available() if sb.solvers.info(n).stochastic]
    assert names, "no stochastic sampler registered"
    return "euler_ancestral" if "euler_ancestral" in names else names[0]


def spec_text(samplers=("euler", "heun"), nfe=(4, 8), n=24, batch=24, metrics=("endpoint_error", "fd"), models=("gmm2d",),
              extra=""):
    out = [extra, f"nfe = {list(nfe)}", f"n_samples = {n}", f"batch_size = {batch}", "seed = 3"]
    for m in models:
        out += ["[[model]]", f'builtin = "{m}"']
    for s in samplers:
        out += ["[[sampler]]", f'name = "{s}"']
    for m in metrics:
        out += ["[[metric]]", f'name = "{m}"']
    return "\n".join(out) + "\n"


def table(store_path) -> pd.DataFrame:
    """The numbers of a store that must not depend on how the sweep ran (no timings, no sweep ids)."""
    with ResultsStore(store_path, create=False) as s:
        j = s.cells().merge(s.metrics(), on="cell_id", how="left")
    cols = ["cell_id", "model", "solver", "options", "nfe_budget", "nfe_planned", "nfe_counted", "steps", "status",
            "reason", "metric", "key", "value"]
    return j[cols].sort_values(["cell_id", "metric", "key"], na_position="first").reset_index(drop=True)


# ---------------------------------------------------------------------------------------------


def test_sample_i_depends_only_on_seed_and_index_not_batch_size(tmp_path):
    """Same seeds, batch sizes 24 and 5: identical kept samples, metric values and cell ids."""
    samplers = ("euler", stochastic_sampler())
    a = R.run_sweep(parse_spec(spec_text(samplers, nfe=(6,), batch=24)), tmp_path / "a")
    b = R.run_sweep(parse_spec(spec_text(samplers, nfe=(6,), batch=5)), tmp_path / "b")
    assert a.ok == b.ok == 2
    ta, tb = table(a.store_path), table(b.store_path)
    pd.testing.assert_frame_equal(ta, tb)
    with ResultsStore(a.store_path) as sa, ResultsStore(b.store_path) as sb_:
        for cid in sa.cells()["cell_id"]:
            assert torch.equal(sa.samples(cid), sb_.samples(cid))
    # and sample i is the solver run from generator seed + i (here 3 + i), whatever batch it was in
    model = builtin_model("gmm2d")
    plan = sb.solvers.plan("euler", 6)
    gens = generators_for([3 + 7])
    x7 = sb.sample("euler", model, model.prior(1, generator=gens), plan.sigmas)
    with ResultsStore(b.store_path) as s:
        cid = s.cells().query("solver == 'euler'")["cell_id"].iloc[0]
        assert torch.allclose(s.samples(cid)[7].double(), x7[0], rtol=0, atol=1e-6)


def test_endpoint_error_is_measured_against_the_reference_from_the_same_noise(tmp_path):
    summary = R.run_sweep(parse_spec(spec_text(("heun",), nfe=(9,), n=6, metrics=("endpoint_error",))), tmp_path)
    model = builtin_model("gmm2d")
    gens = generators_for([3 + i for i in range(6)])
    x = model.prior(6, generator=gens)
    ours = sb.sample("heun", model, x, sb.solvers.plan("heun", 9).sigmas)
    ref = sb.sample("reference", model, x, torch.tensor([80.0, 0.002, 0.0], dtype=torch.float64))
    expected = ((ours - ref).pow(2).sum(1) / 2).mean().sqrt().item()  # RMSE of per-sample L2 / sqrt(dim)
    with ResultsStore(summary.store_path) as s:
        metrics = s.metrics().set_index("key")
    assert metrics["value"]["endpoint_rmse"] == pytest.approx(expected, rel=1e-6)
    # provenance: the reference endpoints' cache key is the value's reference hash
    key = ReferenceCache.key(builtin_model("gmm2d").fingerprint(), 3, 0.002, 80.0, True, "cpu")
    assert metrics["reference_hash"]["endpoint_rmse"] == key
    assert (tmp_path / "cache" / "reference" / f"reference-{key}-0-6.safetensors").exists()


def test_reference_endpoints_are_computed_once_and_reused_by_every_cell_and_rerun(tmp_path):
    spec = parse_spec(spec_text(("euler", "heun"), nfe=(4, 8), n=10, metrics=("endpoint_error",)))
    sweep = R.Sweep(spec, tmp_path, reference_chunk=4)
    sweep.run()
    assert sweep.references.computed == 3  # chunks [0,4) [4,8) [8,10): once, for 4 cells
    files = sorted(p.name for p in (tmp_path / "cache" / "reference").iterdir())
    assert len(files) == 3 and all(f.endswith(".safetensors") for f in files)
    again = R.Sweep(spec, tmp_path, reference_chunk=4, force=True)
    again.run()
    assert again.references.computed == 0  # a new process reads them from disk


def test_rerun_resumes_and_force_recomputes(tmp_path):
    spec = parse_spec(spec_text(nfe=(4,), n=8, metrics=("fd",)))
    first = R.run_sweep(spec, tmp_path)
    second = R.run_sweep(spec, tmp_path)
    assert (first.computed, second.computed, second.reused) == (2, 0, 2)
    forced = R.run_sweep(spec, tmp_path, force=True)
    assert forced.computed == 2
    with ResultsStore(first.store_path) as s:
        assert len(s.cells()) == 2 and len(s.sweeps()) == 3


def test_budget_plans_are_recorded_and_counted_nfe_matches_for_every_sampler(tmp_path):
    """Every registered sampler that applies, at two budgets: the counted NFE is what its law promised,
    budgets it cannot meet are skipped with the planner's message, approximations keep their note."""
    spec = parse_spec(spec_text((), nfe=(3, 8), n=4, metrics=(), extra="all_samplers = true"))
    R.run_sweep(spec, tmp_path)
    with ResultsStore(tmp_path / "results.sqlite") as s:
        cells = s.cells()
    ok = cells[cells.status == "ok"]
    # An adaptive solver's budget only sets its tolerances: no planned NFE, the counted one is stored.
    adaptive = ok[ok.nfe_planned.isna()]
    assert set(adaptive.solver) == {"dpm_adaptive"}
    assert adaptive.nfe_counted.gt(0).all() and adaptive.reason.str.contains("adaptive: asked").all()
    ok = ok[ok.nfe_planned.notna()]
    assert (ok.nfe_counted == ok.nfe_planned).all(), ok[ok.nfe_counted != ok.nfe_planned][["solver", "reason"]]
    assert (ok.nfe_counted <= ok.nfe_budget).all()
    approx = ok[ok.nfe_counted != ok.nfe_budget]
    assert approx["reason"].str.len().gt(0).all()  # e.g. heun at 8 NFE runs 7 and says why
    heun = cells[(cells.solver == "heun") & (cells.nfe_budget == 8)].iloc[0]
    assert heun.nfe_counted == 7 and "cannot be met exactly" in heun.reason
    for _, row in cells[cells.status == "skipped"].iterrows():
        with pytest.raises(ValueError) as err:
            sb.solvers.plan(row.solver, int(row.nfe_budget), **eval_options(row.options))
        assert str(err.value) == row.reason
    assert not (cells.status == "failed").any(), cells[cells.status == "failed"][["solver", "reason"]]


def eval_options(text):
    import json

    return json.loads(text)


class WrappedModel:
    """gmm2d with a different process or data law, or a denoiser that returns NaN below a noise level."""

    def __init__(self, process=None, nan_below=None, distribution="keep"):
        self.inner = builtin_model("gmm2d")
        self.name, self.shape = "wrapped", self.inner.shape
        self.sigma_min, self.sigma_max = self.inner.sigma_min, self.inner.sigma_max
        self.process = process or self.inner.process
        self.distribution = self.inner.distribution if distribution == "keep" else distribution
        self.nan_below = nan_below

    def __call__(self, x, sigma):
        out = self.inner(x, sigma)
        if self.nan_below is not None and float(sigma.min()) < self.nan_below:
            out = out * float("nan")
        return out

    def prior(self, n, generator=None):
        return self.inner.prior(n, generator=generator)

    def sample_data(self, n, generator=None):
        return self.inner.sample_data(n, generator=generator)

    def fingerprint(self):
        return f"wrapped-{self.process}-{self.nan_below}-{self.distribution is None}"


def patch_models(monkeypatch, models):
    real = P.load_model
    monkeypatch.setattr(P, "load_model", lambda m, device="cpu": models[m.label]() if m.label in models else real(m, device))


def test_nan_in_one_cell_fails_it_with_sampler_nfe_and_step_and_the_sweep_goes_on(tmp_path, monkeypatch):
    patch_models(monkeypatch, {"bad": lambda: WrappedModel(nan_below=1.0)})
    text = spec_text(("euler",), nfe=(4, 6), n=8, metrics=("fd",), models=())
    text += '[[model]]\nbuiltin = "gmm2d"\nname = "bad"\n[[model]]\nbuiltin = "gmm2d"\n'  # the bad model runs first
    summary = R.run_sweep(parse_spec(text), tmp_path)
    with ResultsStore(summary.store_path) as s:
        cells = s.cells().set_index(["model", "nfe_budget"])
        metrics = s.metrics()
    assert summary.failed == 2 and summary.ok == 2
    for budget in (4, 6):
        reason = cells.loc[("bad", budget), "reason"]
        assert cells.loc[("bad", budget), "status"] == "failed"
        assert "'euler'" in reason and "NaN" in reason and f"NFE budget {budget}" in reason and "step" in reason
        assert cells.loc[("gmm2d", budget), "status"] == "ok"  # the cells after it still ran
    assert set(metrics.cell_id) == set(cells[cells.status == "ok"]["cell_id"])  # failed cells have no values


def test_sampler_for_another_process_is_skipped_with_the_reason(tmp_path, monkeypatch):
    sde = stochastic_sampler()
    assert "pfgmpp" not in sb.solvers.info(sde).processes
    patch_models(monkeypatch, {"pfgm": lambda: WrappedModel(process="pfgmpp")})
    text = spec_text(("euler", sde), nfe=(4,), n=4, metrics=()).replace('builtin = "gmm2d"', 'builtin = "gmm2d"\nname = "pfgm"')
    summary = R.run_sweep(parse_spec(text), tmp_path)
    with ResultsStore(summary.store_path) as s:
        cells = s.cells().set_index("solver")
    assert cells.loc["euler", "status"] == "ok"
    assert cells.loc[sde, "status"] == "skipped"
    assert "reverse SDE" in cells.loc[sde, "reason"] and "'pfgmpp'" in cells.loc[sde, "reason"]
    # all_samplers leaves such samplers out for that model instead, with a note
    text_all = spec_text((), nfe=(4,), n=4, metrics=(), extra="all_samplers = true").replace(
        'builtin = "gmm2d"', 'builtin = "gmm2d"\nname = "pfgm"')
    sweep = R.Sweep(parse_spec(text_all), tmp_path / "all")
    assert sde not in {c.sampler.name for c in sweep.cells}
    assert any("all_samplers: left out" in n and sde in n for n in sweep.models[0].notes)


def test_metric_that_does_not_apply_to_a_model_is_left_out_with_a_note(tmp_path, monkeypatch):
    patch_models(monkeypatch, {"nolaw": lambda: WrappedModel(distribution=None)})
    text = spec_text(("euler",), nfe=(4,), n=4, metrics=("gmm_nll", "fd")).replace(
        'builtin = "gmm2d"', 'builtin = "gmm2d"\nname = "nolaw"')
    sweep = R.Sweep(parse_spec(text), tmp_path)
    assert [m.spec.name for m in sweep.models[0].metrics] == ["fd"]
    assert any("gmm_nll" in n for n in sweep.models[0].notes)


def test_shard_states_reduce_to_the_whole_cell(tmp_path):
    """The distributed-ready path: two index ranges, states reduced, equal one range (float64 round-off)."""
    spec = parse_spec(spec_text(("heun",), nfe=(8,), n=10, batch=3, metrics=("endpoint_error", "fd", "gmm_tv")))
    sweep = R.Sweep(spec, tmp_path)
    cell = sweep.cells[0]
    assert cell.plan.sigmas.tolist() == sb.solvers.plan("heun", 8).sigmas.tolist()
    ref = sweep.references.for_rank(sweep.world, cell.reference)
    whole = C.cell_shard(cell, 0, 10, reference=ref)
    parts = [C.cell_shard(cell, a, b, reference=ref) for a, b in ((0, 4), (4, 10))]
    one = {r["key"]: r["value"] for r in C.finish_cell(cell, [whole])}
    two = {r["key"]: r["value"] for r in C.finish_cell(cell, parts)}
    assert one.keys() == two.keys() == {"endpoint_rmse", "endpoint_mean_l2", "fd", "gmm_tv"}
    for k in one:
        assert two[k] == pytest.approx(one[k], rel=1e-9, abs=1e-12), k
    assert torch.equal(torch.cat([p.kept for p in parts]), whole.kept)


def test_unusable_settings_are_rejected_before_any_cell(tmp_path, monkeypatch):
    text = spec_text(("euler",), nfe=(4,), n=4, metrics=())
    patch_models(monkeypatch, {"p": lambda: WrappedModel(process="pfgmpp")})
    pfgm_text = text.replace('builtin = "gmm2d"', 'builtin = "gmm2d"\nname = "p"') + "[[schedule]]\nsigma_max = 10.0\n"
    with pytest.raises(SpecError, match="only supported for Gaussian"):
        R.Sweep(parse_spec(pfgm_text), tmp_path)
    with pytest.raises(SpecError, match="fd.*no option 'nprojections'"):
        R.Sweep(parse_spec(text + '[[metric]]\nname = "fd"\nparams = { nprojections = 3 }\n'), tmp_path)
    assert not (tmp_path / "results.sqlite").exists()


# ---------------------------------------------------------------------------------------------
# Reliability: real processes.

RELIABILITY_SPEC = spec_text(("euler", "heun", "dpmpp_2m"),
                             nfe=(10, 20, 30, 40), n=600, batch=600, metrics=("endpoint_error", "fd", "gmm_tv"))


def sweep_process(spec_file, out, *extra) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "sampler_bench", "sweep", str(spec_file), "--out", str(out),
                             "--no-report", *extra], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def stored_cells(path) -> int:
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            return con.execute("SELECT count(*) FROM cells").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return 0


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    spec = parse_spec(RELIABILITY_SPEC)
    summary = R.run_sweep(spec, out)
    assert summary.ok == summary.total == 12
    return table(summary.store_path)


def test_sigkill_mid_sweep_then_rerun_gives_the_uninterrupted_table(tmp_path, uninterrupted):
    spec_file = tmp_path / "spec.toml"
    spec_file.write_text(RELIABILITY_SPEC)
    for attempt in range(3):  # a starved poller may see the sweep finish first: then try again
        out = tmp_path / f"out{attempt}"
        proc = sweep_process(spec_file, out)
        db = out / "results.sqlite"
        deadline = time.time() + 120
        while stored_cells(db) < 2 and proc.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        done = stored_cells(db)
        if done < 12:
            break
    assert 2 <= done < 12, f"the sweep must be killed mid-run (stored {done} of 12 cells)"
    with ResultsStore(db) as s:  # what survived is whole: every stored cell has all its values
        assert s.integrity_ok()
        counts = s.metrics().groupby("cell_id").size()
        assert len(counts) == done and (counts == counts.iloc[0]).all()
    summary = R.run_sweep(parse_spec(RELIABILITY_SPEC), out)
    assert summary.reused == done and summary.computed == 12 - done
    pd.testing.assert_frame_equal(table(db), uninterrupted)


def test_two_concurrent_sweeps_on_one_store_do_not_corrupt_it(tmp_path, uninterrupted):
    """A sweep process and this process run the same spec into one store at the same time: both
    compute the remaining cells, each cell is stored once, and the table is the uninterrupted one."""
    spec_file = tmp_path / "spec.toml"
    spec_file.write_text(RELIABILITY_SPEC)
    out = tmp_path / "out"
    other = sweep_process(spec_file, out)
    db = out / "results.sqlite"
    deadline = time.time() + 120
    while stored_cells(db) < 1 and other.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    mine = R.run_sweep(parse_spec(RELIABILITY_SPEC), out)  # starts while the other process is mid-sweep
    _, err = other.communicate(timeout=240)
    assert other.returncode == 0, err.decode()[-2000:]
    assert mine.computed >= 1, "the two sweeps did not overlap"
    with ResultsStore(db) as s:
        assert s.integrity_ok()
        sweeps = s.sweeps()
        assert len(sweeps) == 2 and sweeps["finished_at"].notna().all()
        for sweep_id in sweeps["sweep_id"]:  # each sweep records all 12 cells it used, computed or not
            assert len(s.cells(sweep_id=sweep_id)) == 12
    pd.testing.assert_frame_equal(table(db), uninterrupted)  # each cell stored once, same numbers


def test_reference_tolerances_suit_the_model_and_the_spec_can_set_them():
    spec = parse_spec(spec_text(("euler",), nfe=(4,), n=4, metrics=()))
    assert P.reference_options(builtin_model("gmm2d"), spec)["rtol"] == 1e-10  # exact float64 denoiser
    assert P.reference_options(WrappedModel(), spec)["rtol"] == P.NETWORK_REFERENCE["rtol"]  # anything else
    tight = parse_spec(spec_text(("euler",), nfe=(4,), n=4, metrics=()) + "[reference]\nrtol = 1e-9\n")
    assert P.reference_options(WrappedModel(), tight) == {**sb.solvers.info("reference").validate({}), "rtol": 1e-9,
                                                         "atol": P.NETWORK_REFERENCE["atol"]}
    keys = {ReferenceCache.key("h", 0, 0.002, 80.0, True, "cpu", o) for o in ({}, {"rtol": 1e-9})}
    assert len(keys) == 2  # other tolerances, other cached endpoints
