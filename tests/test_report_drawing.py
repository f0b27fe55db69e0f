"""Report figures drawn in worker processes are the bytes drawn in this process (report/drawing.py)."""

from __future__ import annotations

import pytest

from sampler_bench.report import build_document, drawing, plots
from sampler_bench.report.document import Figure

from test_report import synthetic


def test_figures_drawn_by_a_pool_of_processes_are_the_serial_bytes(monkeypatch):
    frames = synthetic().frames()
    serial = build_document(*frames, workers=1)
    submitted = []
    real_later = drawing.later

    def spy(function, *args, **kwargs):
        d = real_later(function, *args, **kwargs)
        submitted.append(d.future is not None)
        return d

    monkeypatch.setattr("sampler_bench.report.build.later", spy)
    pooled = build_document(*frames, workers=2)
    figs_s = [b for b in serial.blocks if isinstance(b, Figure)]
    figs_p = [b for b in pooled.blocks if isinstance(b, Figure)]
    assert len(figs_s) >= drawing.MIN_FIGURES_FOR_POOL and len(submitted) == len(figs_s) and all(submitted)
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


def test_a_small_report_or_one_worker_opens_no_pool(monkeypatch):
    import concurrent.futures

    def no_pool(*a, **k):
        raise AssertionError("a pool was started")

    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", no_pool)
    for workers, expected in ((4, drawing.MIN_FIGURES_FOR_POOL - 1), (1, 100)):
        with drawing.pool(workers, expected):
            d = drawing.later(plots.tile_images.__globals__["Figure"], figsize=(1, 1))
        assert d.future is None and drawing.draw_all([d])[0].startswith(b"\x89PNG")


@pytest.mark.parametrize("command", ["report", "sweep"])
def test_a_bad_worker_setting_is_one_line_before_any_work(tmp_path, monkeypatch, command):
    from click.testing import CliRunner

    from sampler_bench.cli import main

    monkeypatch.setenv(drawing.WORKERS_ENV, "two")
    args = ["report", str(tmp_path / "missing.sqlite")] if command == "report" else ["sweep", "--out", str(tmp_path / "o")]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2 and "SAMPLER_BENCH_REPORT_WORKERS='two'" in r.output and "Traceback" not in r.output, r.output
    assert not (tmp_path / "o").exists()
