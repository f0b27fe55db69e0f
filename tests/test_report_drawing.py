"""Report figures drawn in worker processes are the bytes drawn in this process (report/drawing.py)."""

from __future__ import annotations

import pytest

from sampler_bench.report import build_document, drawing
from sampler_bench.report.document import Figure

from test_report import synthetic


def test_figures_drawn_by_a_pool_of_processes_are_the_serial_bytes(monkeypatch):
    frames = synthetic().frames()
    serial = build_document(*frames, workers=1)
    pooled_calls = []
    real_pool = drawing.draw_all

    def spy(drawings, workers=None):
        pooled_calls.append((len(drawings), workers))
        return real_pool(drawings, workers)

    monkeypatch.setattr(drawing, "MIN_FIGURES_FOR_POOL", 2)
    monkeypatch.setattr("sampler_bench.report.build.draw_all", spy)
    pooled = build_document(*frames, workers=2)
    figs_s = [b for b in serial.blocks if isinstance(b, Figure)]
    figs_p = [b for b in pooled.blocks if isinstance(b, Figure)]
    assert len(figs_s) >= 2 and pooled_calls == [(len(figs_s), 2)]
    assert all(isinstance(f.png, bytes) and f.png.startswith(b"\x89PNG") for f in figs_p)
    assert [(f.name, f.png) for f in figs_p] == [(f.name, f.png) for f in figs_s]


def test_worker_count_from_the_environment(monkeypatch):
    monkeypatch.setenv(drawing.WORKERS_ENV, "3")
    assert drawing.default_workers() == 3
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv(drawing.WORKERS_ENV, bad)
        with pytest.raises(ValueError, match="must be a positive integer"):
            drawing.default_workers()
    monkeypatch.delenv(drawing.WORKERS_ENV)
    assert 1 <= drawing.default_workers() <= 8


def test_few_figures_are_drawn_here_without_a_pool(monkeypatch):
    import concurrent.futures

    def no_pool(*a, **k):
        raise AssertionError("a pool was started for a handful of figures")

    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", no_pool)
    from sampler_bench.report import plots

    d = drawing.later(plots.tile_images.__globals__["Figure"], figsize=(1, 1))
    assert drawing.draw_all([d, d], workers=4)[0].startswith(b"\x89PNG")
