"""A report reads only its store: a store written by an older commit renders the report it rendered then.

tests/data/old_store/ holds a store written by the sweep of its ``spec.toml`` and the ``report.md``
rendered from it at that commit::

    sampler-bench sweep tests/data/old_store/spec.toml --out OUT
    cp OUT/results.sqlite tests/data/old_store/   # then PRAGMA journal_mode = DELETE; VACUUM
    sampler-bench report tests/data/old_store/results.sqlite --out OUT2 && cp OUT2/report.md tests/data/old_store/

Whatever the registry, planner or option defaults become, that report must come out byte for byte;
a change that breaks this test changes what old reports say about sweeps that were never rerun.
A deliberate change of the report's own wording (captions, explanations) regenerates report.md with
the last command above, and its diff must show wording only: never a number, label or order of a
stored cell.
"""

from __future__ import annotations

import dataclasses
import shutil
import sqlite3
from pathlib import Path

import pytest

from sampler_bench.report import write_report
from sampler_bench.solvers import registry

DATA = Path(__file__).resolve().parent / "data" / "old_store"


def _store_copy(tmp_path: Path) -> Path:
    """A copy of the committed store (a read-only open must never leave files in tests/data)."""
    path = tmp_path / "results.sqlite"
    shutil.copyfile(DATA / "results.sqlite", path)
    return path


@pytest.fixture
def changed_registry(monkeypatch):
    """Today's registry as a later commit might have it: other orders, other option defaults."""
    def change(name, **fields):
        monkeypatch.setitem(registry._REGISTRY, name, dataclasses.replace(registry._REGISTRY[name], **fields))

    unipc = registry._REGISTRY["unipc"]
    change("unipc", order=5, options={**unipc.options, "variant": dataclasses.replace(unipc.options["variant"], default="bh2")})
    change("dpm_solver_3", order=9, steps_for_nfe=None)
    change("euler", order=4)
    change("euler_ancestral", stochastic=False)


def test_report_of_an_old_store_is_byte_identical_to_the_one_rendered_when_it_was_written(tmp_path, changed_registry):
    out = write_report(_store_copy(tmp_path), tmp_path / "report")
    assert out["markdown"].read_text() == (DATA / "report.md").read_text()


def test_a_store_written_before_labels_were_stored_says_not_recorded_instead_of_asking_the_registry(
        tmp_path, changed_registry):
    path = _store_copy(tmp_path)
    with sqlite3.connect(path) as db:  # the store as schema 2 wrote it: no options_label, no requested_order
        for column in ("options_label", "requested_order"):
            db.execute(f"ALTER TABLE cells DROP COLUMN {column}")
        db.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    md = write_report(path, tmp_path / "report")["markdown"].read_text()
    dpm = "dpm_solver_3 (beta_d 19.9, beta_min 0.1, lambda, r1 0.333333, r2 0.666667, dpmsolver, fast)"
    unipc = "unipc (lower_order_final, order 3, use_corrector, bh2)"  # every requested option: no label stored
    order_rows = {line.split(" | ")[0][2:]: line.split(" | ")[1] for line in md.splitlines() if line.endswith(" | 3 |") and ".." in line}
    # the budget plan changed DPM-Solver-3's options, so the stored order is the plan's, not the request's
    assert order_rows[dpm] == "not recorded" and f"| {dpm} | ODE |" in md
    # the others ran as requested: their stored declared order, never the (changed) registry's
    assert order_rows["euler"] == "1" and order_rows["heun"] == "2" and order_rows[unipc] == "2"
    assert f"| {unipc} | ODE, p=2 |" in md and "| euler_ancestral (eta 1, gaussian, s_noise 1) | SDE, p=1 |" in md


def test_a_schema_2_store_opened_for_writing_gains_the_label_columns_as_not_recorded(tmp_path):
    from sampler_bench.bench.store import SCHEMA_VERSION, ResultsStore

    path = _store_copy(tmp_path)
    with sqlite3.connect(path) as db:
        db.execute("ALTER TABLE cells DROP COLUMN options_label")
        db.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    with ResultsStore(path, read_only=True) as store:
        assert store.cells()["options_label"].isna().all()  # read as is: NULL, not recomputed
    with ResultsStore(path) as store:
        cells = store.cells()
        assert cells["options_label"].isna().all() and (cells["requested_order"].notna()).all()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
