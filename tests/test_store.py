"""The results store: the read contract the report relies on, one atomic transaction per cell,
a cell written twice stored once, NaN kept as NaN, and clear errors for a wrong file."""

from __future__ import annotations

import math
import sqlite3

import pytest
import torch

from sampler_bench.bench.store import CELL_COLUMNS, METRIC_COLUMNS, SWEEP_COLUMNS, ResultsStore, StoreError

CONTRACT_CELLS = (
    "cell_id sweep_id spec_name model model_hash process solver options stochastic declared_order schedule "
    "schedule_params sigma_min sigma_max ends_at_zero nfe_budget nfe_planned nfe_counted steps n_samples seed "
    "batch_size device precision wall_time_s samples_per_s denoiser_fraction status reason version created_at"
).split()
CONTRACT_METRICS = ("cell_id metric key value lower_is_better feature_extractor reference_hash provenance "
                    "ci_low ci_high corrected").split()
CONTRACT_SWEEPS = "sweep_id spec_name spec_toml command version hostname python torch started_at finished_at".split()


def cell_row(cell_id="c1", status="ok", **kw):
    row = {
        "cell_id": cell_id, "sweep_id": "s1", "spec_name": "t", "model": "gmm2d", "model_hash": "abc", "process": "gaussian",
        "solver": "heun", "options": "{}", "requested_options": "{}", "stochastic": False, "declared_order": 2, "schedule": "karras",
        "schedule_params": '{"rho": 7.0}', "sigma_min": 0.002, "sigma_max": 80.0, "ends_at_zero": True, "nfe_budget": 10,
        "nfe_planned": 9, "nfe_counted": 9, "steps": 5, "n_samples": 8, "seed": 0, "batch_size": 8, "device": "cpu",
        "precision": "float64", "wall_time_s": 0.5, "samples_per_s": 16.0, "denoiser_fraction": 0.7, "metric_time_s": 0.01,
        "status": status, "reason": "", "version": "0.1.0",
    }
    if status != "ok":
        row.update(nfe_planned=None, nfe_counted=None, steps=None, wall_time_s=None, samples_per_s=None,
                   denoiser_fraction=None, metric_time_s=None, reason="why")
    row.update(kw)
    return row


def metric_row(key="endpoint_rmse", value=0.25, metric="endpoint_error"):
    return {"metric": metric, "key": key, "value": value, "lower_is_better": True, "feature_extractor": "",
            "reference_hash": "r1", "provenance": {"n_samples": 8}}


@pytest.fixture
def store(tmp_path):
    with ResultsStore(tmp_path / "results.sqlite") as s:
        yield s


def test_store_meets_the_read_contract_with_typed_columns(store):
    store.begin_sweep("s1", spec_name="t", spec_toml="nfe=[10]", command="sampler-bench sweep t",
                      environment={"version": "0.1.0", "hostname": "h", "python": "3.11", "torch": "2"})
    kept = torch.randn(5, 2, dtype=torch.float64)
    assert store.put_cell(cell_row("c1"), [metric_row(), metric_row("endpoint_mean_l2", 0.5)], kept)
    assert store.put_cell(cell_row("c2", status="skipped"))
    store.finish_sweep("s1")

    cells, metrics, joined, sweeps = store.cells(), store.metrics(), store.joined(), store.sweeps()
    assert set(CONTRACT_CELLS) <= set(cells.columns) and list(cells.columns) == list(CELL_COLUMNS)
    assert list(metrics.columns) == CONTRACT_METRICS == list(METRIC_COLUMNS)
    assert list(sweeps.columns) == CONTRACT_SWEEPS == list(SWEEP_COLUMNS)
    assert len(cells) == 2 and len(metrics) == 2 and len(joined) == 2
    assert set(CONTRACT_CELLS) | set(CONTRACT_METRICS) <= set(joined.columns)
    ok = cells.set_index("cell_id").loc["c1"]
    assert ok["stochastic"] is False or ok["stochastic"] == False  # noqa: E712 (numpy bool)
    assert cells["stochastic"].dtype == bool and cells["ends_at_zero"].dtype == bool
    assert int(ok["nfe_counted"]) == 9 and ok["wall_time_s"] == 0.5
    skipped = cells.set_index("cell_id").loc["c2"]
    assert skipped["status"] == "skipped" and skipped["reason"] == "why"
    assert skipped["nfe_counted"] is None or str(skipped["nfe_counted"]) == "<NA>"  # unknown, never a fake 0
    assert metrics["lower_is_better"].dtype == bool and metrics["value"].dtype == float
    # kept samples come back as float32 pictures of the same values
    back = store.samples("c1")
    assert back.dtype == torch.float32 and torch.equal(back, kept.float())
    assert store.samples("c2") is None
    sw = sweeps.iloc[0]
    assert sw["spec_toml"] == "nfe=[10]" and sw["finished_at"] and sw["hostname"] == "h"
    assert store.cells(sweep_id="s1")["cell_id"].tolist() == ["c1", "c2"]


def test_a_cell_written_twice_is_stored_once_unless_replaced(store):
    assert store.put_cell(cell_row("c1"), [metric_row(value=1.0)]) is True
    assert store.put_cell(cell_row("c1", sweep_id="s2"), [metric_row(value=2.0)]) is False
    assert len(store.cells()) == 1 and store.metrics()["value"].tolist() == [1.0]
    assert set(store.cells(sweep_id="s2")["cell_id"]) == {"c1"}  # the second sweep still records using it
    assert store.put_cell(cell_row("c1"), [metric_row(value=3.0)], replace=True) is True
    assert len(store.cells()) == 1 and store.metrics()["value"].tolist() == [3.0]


def test_a_cell_whose_write_fails_leaves_nothing_behind(store):
    # the same (metric, key) twice violates the primary key: the failure comes after the cell row
    # was inserted inside the transaction, which must roll back as a whole
    with pytest.raises(sqlite3.IntegrityError):
        store.put_cell(cell_row("c1"), [metric_row(), metric_row()], torch.zeros(2, 2))
    assert store.status("c1") is None and store.metrics().empty and store.samples("c1") is None
    # and the store is still usable afterwards (no transaction left open)
    assert store.put_cell(cell_row("c1"), [metric_row()])
    assert store.status("c1") == "ok"


def test_nan_metric_values_read_back_as_nan(store):
    store.put_cell(cell_row("c1"), [metric_row(value=float("nan"))])
    assert math.isnan(store.metrics()["value"].iloc[0])


def test_store_is_in_wal_mode_with_a_busy_timeout(tmp_path):
    path = tmp_path / "r.sqlite"
    ResultsStore(path).close()
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    con.close()


def test_bad_cell_status_is_rejected(store):
    with pytest.raises(ValueError, match="status must be one of"):
        store.put_cell(cell_row("c1", status="done"))


def test_missing_or_foreign_files_are_clear_errors(tmp_path):
    with pytest.raises(StoreError, match="does not exist"):
        ResultsStore(tmp_path / "nope.sqlite", create=False)
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="not a sampler-bench results store"):
        ResultsStore(junk)
    with pytest.raises(StoreError, match="without a results.sqlite"):
        ResultsStore(tmp_path, create=False)
    # a sweep directory is accepted in place of its results.sqlite
    ResultsStore(tmp_path / "results.sqlite").close()
    with ResultsStore(tmp_path, create=False) as s:
        assert s.path.name == "results.sqlite"


def test_concurrent_writers_store_every_cell_once(tmp_path):
    """Two connections (as two processes would) writing overlapping cells: no loss, no duplicate."""
    import threading

    path = tmp_path / "results.sqlite"
    ResultsStore(path).close()
    results = {}

    def writer(name, ids):
        with ResultsStore(path) as s:
            results[name] = [s.put_cell(cell_row(f"c{i}", sweep_id=name), [metric_row(value=float(i))]) for i in ids]

    threads = [threading.Thread(target=writer, args=("a", range(0, 40))), threading.Thread(target=writer, args=("b", range(20, 60)))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with ResultsStore(path) as s:
        assert s.integrity_ok()
        cells, metrics = s.cells(), s.metrics()
        assert sorted(cells["cell_id"]) == sorted(f"c{i}" for i in range(60))
        assert len(metrics) == 60 and (metrics.set_index("cell_id")["value"] == [float(c[1:]) for c in metrics["cell_id"]]).all()
        assert sum(results["a"]) + sum(results["b"]) == 60  # each overlapping cell written by exactly one of them
        assert len(s.cells(sweep_id="a")) == 40 and len(s.cells(sweep_id="b")) == 40


def test_a_store_from_an_incompatible_version_is_refused_with_advice(tmp_path):
    path = tmp_path / "old.sqlite"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
    con.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    con.execute("CREATE TABLE cells (cell_id TEXT PRIMARY KEY, solver TEXT)")
    con.commit()
    con.close()
    with pytest.raises(StoreError, match="incompatible sampler-bench .*table cells lacks .*new --out directory"):
        ResultsStore(path)


def test_processes_opening_a_fresh_store_together_all_get_it(tmp_path):
    """Switching a fresh store to WAL needs an exclusive lock that SQLite refuses at once (without
    its busy handler) to a second opener; the store waits instead of failing the second sweep."""
    import threading

    for trial in range(25):
        path = tmp_path / f"s{trial}" / "results.sqlite"
        start, errors = threading.Barrier(4), []

        def open_store():
            start.wait()
            try:
                ResultsStore(path).close()
            except Exception as e:  # noqa: BLE001 - collected and asserted below
                errors.append(repr(e))

        threads = [threading.Thread(target=open_store) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
