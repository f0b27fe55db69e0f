"""Crash consistency with concurrent readers: benchmarks/stress_store.py at its small size.

A real sweep is killed (SIGKILL or SIGTERM) mid-write four times, resuming the same store in between,
while a `sampler-bench show` loop and a raw SQLite reader poll the store; SQLite's integrity check must
pass after every kill. The long run (60 rounds, random kill moments) is in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _stress_module():
    spec = importlib.util.spec_from_file_location("stress_store", ROOT / "benchmarks" / "stress_store.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_store_survives_kills_mid_write_with_concurrent_readers(tmp_path):
    stress = _stress_module()
    lines = []
    summary = stress.stress(tmp_path, rounds=4, seed=3, min_delay=0.0, max_delay=0.5, fresh_every=4, quick=True,
                            kill_after_cells=20, log=lines.append)
    assert summary["corrupt"] == [], lines
    assert summary["killed_while_writing"] >= 3, lines  # the kills really landed while the sweep wrote
    verdict, cells = stress.integrity(tmp_path / "o0" / "results.sqlite")
    assert verdict == "ok" and cells >= 4 * 20, lines  # every round resumed and added cells
