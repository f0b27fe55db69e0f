"""write_report on a real results store: written through ResultsStore's API, read back, rendered.

The store reads skipped cells with missing (NA) planned/counted NFE and booleans as SQLite
integers; the report must take what the store gives and show the same numbers as from the
DataFrames directly.
"""

from __future__ import annotations

import re

import pytest

from sampler_bench.bench.store import CELL_COLUMNS, ResultsStore
from sampler_bench.report import write_report
from sampler_bench.report.build import _open_store

from test_report import SPEC_TOML, FakeResults


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
    r = FakeResults()
    for b in (4, 8):
        for solver, order in (("euler", 1), ("heun", 2)):
            counted = b if solver == "euler" else b - 1
            cid = r.cell("gmm2d", solver, b, order=order, counted=counted)
            r.metric(cid, "endpoint_rmse", 2.0 * counted ** -order)
            r.metric(cid, "fd", 0.5 / counted)
    r.cell("gmm2d", "lms", 4, order=4, status="skipped", reason="a budget of 4 NFE is too small")
    path = tmp_path_factory.mktemp("store") / "results.sqlite"
    with ResultsStore(path) as store:
        store.begin_sweep("sw1", spec_name="synthetic", spec_toml=SPEC_TOML, command="sampler-bench sweep synthetic.toml",
                          environment={"version": "0.1.0", "hostname": "testhost", "python": "3.11.7", "torch": "2.13.0"})
        for cell in r.cells:
            row = {c: cell.get(c) for c in CELL_COLUMNS}  # columns the store has beyond the contract stay None
            if cell["status"] != "ok":
                row.update(nfe_planned=None, nfe_counted=None)  # how the runner stores a skipped cell
            store.put_cell(row, [m for m in r.metrics if m["cell_id"] == cell["cell_id"]],
                           r.samples.get(cell["cell_id"]))
        store.finish_sweep("sw1")
    return path, r


@pytest.fixture(scope="module")
def report(store_path, tmp_path_factory):
    path, _ = store_path
    return write_report(path, tmp_path_factory.mktemp("report"), title="Store report")


def test_write_report_renders_a_results_store_with_the_values_it_holds(report):
    md = report["markdown"].read_text()
    assert md.startswith("# Store report\n")
    # heun at budget 8 spends 7 NFE: 2 * 7^-2 = 0.0408, shown with the counted NFE.
    assert re.search(r"\| heun \| ODE, p=2 \| [^|]+ \| \*\*0\.0408 \(7\)\*\* \|", md), md
    assert "skipped: a budget of 4 NFE is too small" in md
    assert "\n```toml\n" + SPEC_TOML in md and "testhost" in md
    assert len(report["figures"]) == 4  # endpoint_rmse and fd vs NFE, Pareto, samples
    assert report["html"].read_text().count("data:image/png;base64,") == 4


def test_write_report_accepts_an_open_store_and_the_sweep_directory(store_path, report, tmp_path):
    path, _ = store_path
    with ResultsStore(path) as store:
        from_store = write_report(store, tmp_path / "b", title="Store report")
    assert from_store["markdown"].read_text() == report["markdown"].read_text()
    store, opened = _open_store(path.parent)
    try:
        assert opened and len(store.cells()) == 5
    finally:
        store.close()
