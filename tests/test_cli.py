"""The command line: sweep (default spec, resume, report), show/export, list, and readable errors
(one line, exit status 2, no traceback, no work done)."""

from __future__ import annotations

import importlib.util

import pandas as pd
import pytest
from click.testing import CliRunner

import sampler_bench as sb
from sampler_bench.bench import spec as S
from sampler_bench.cli import main

WIDE = {"COLUMNS": "250"}
TINY = """
name = "tiny"
nfe = [4, 8]
n_samples = 16
[[model]]
builtin = "gmm2d"
[[sampler]]
name = "euler"
[[sampler]]
name = "heun"
[[metric]]
name = "fd"
"""


def invoke(*args, **kw):
    return CliRunner().invoke(main, list(map(str, args)), env=WIDE, catch_exceptions=False, **kw)


@pytest.fixture
def tiny(tmp_path):
    f = tmp_path / "tiny.toml"
    f.write_text(TINY)
    return f


def test_sweep_writes_the_store_and_report_then_resumes(tiny, tmp_path):
    out = tmp_path / "out"
    r = invoke("sweep", tiny, "--out", out)
    assert r.exit_code == 0, r.output
    assert "sweep tiny: 4 cells" in r.output and "4 computed, 0 reused" in r.output
    assert (out / "results.sqlite").exists()
    if importlib.util.find_spec("sampler_bench.report") is not None:
        assert (out / "report.md").exists() and (out / "report.html").exists()
    r = invoke("sweep", tiny, "--out", out, "--no-report")
    assert r.exit_code == 0 and "0 computed, 4 reused" in r.output
    r = invoke("sweep", tiny, "--out", out, "--no-report", "--force")
    assert r.exit_code == 0 and "4 computed, 0 reused" in r.output
    from sampler_bench.bench.store import ResultsStore

    with ResultsStore(out / "results.sqlite") as s:
        sweeps = s.sweeps()
    assert sweeps["command"].iloc[0].startswith("sampler-bench sweep") and "--out" in sweeps["command"].iloc[0]
    assert sweeps["spec_toml"].iloc[0] == TINY


def test_sweep_without_spec_runs_the_builtin_quickstart(tmp_path, monkeypatch):
    asked = []
    real = S.load_spec

    def spy(ref):
        asked.append(ref)
        return real(ref) if ref != "quickstart" else S.parse_spec(TINY.replace('name = "tiny"\n', ""), name="quickstart")

    monkeypatch.setattr(S, "load_spec", spy)
    r = invoke("sweep", "--out", tmp_path / "q", "--no-report")
    assert r.exit_code == 0, r.output
    assert asked == ["quickstart"] and "sweep quickstart" in r.output


def test_batch_size_override_does_not_change_the_cells(tiny, tmp_path):
    out = tmp_path / "out"
    assert invoke("sweep", tiny, "--out", out, "--no-report").exit_code == 0
    r = invoke("sweep", tiny, "--out", out, "--no-report", "--batch-size", "3")
    assert r.exit_code == 0 and "0 computed, 4 reused" in r.output  # per-sample seeds: same cells


@pytest.mark.parametrize("text, message", [
    (TINY.replace('"heun"', '"huen"'), "did you mean 'heun'"),
    (TINY.replace('name = "fd"', 'name = "fid"'), "unknown metric 'fid'"),
    (TINY.replace("n_samples = 16", "n_samples = 16\nbatch = 4"), "did you mean 'batch_size'"),
    (TINY.replace("nfe = [4, 8]", "nfe = [4, 8"), "malformed TOML"),
    (TINY + "[[schedule]]\nname = \"karras\"\nparams = { rho = 7 }\nsigma_min = 100.0\n", "sigma range"),
])
def test_spec_errors_are_one_line_exit_2_and_do_no_work(tmp_path, text, message):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["sweep", str(f), "--out", str(out)], env=WIDE)
    assert r.exit_code == 2, r.output
    assert message in r.output and r.output.startswith("Error: ") and "Traceback" not in r.output
    assert not (out / "results.sqlite").exists()


def test_missing_spec_and_store_are_clear_errors(tmp_path):
    r = CliRunner().invoke(main, ["sweep", "quickstat"], env=WIDE)
    assert r.exit_code == 2 and "did you mean 'quickstart'" in r.output
    for cmd in (["show"], ["report"], ["check", "--baseline", str(tmp_path / "b.json")]):
        r = CliRunner().invoke(main, [cmd[0], str(tmp_path / "none.sqlite"), *cmd[1:]], env=WIDE)
        assert r.exit_code == 2 and "does not exist" in r.output, (cmd, r.output)


def test_show_tables_and_csv_export(tiny, tmp_path):
    out = tmp_path / "out"
    invoke("sweep", tiny, "--out", out, "--no-report")
    db = out / "results.sqlite"
    r = invoke("show", db)
    assert r.exit_code == 0 and "gmm2d: fd" in r.output and "heun" in r.output
    assert "(3)" in r.output and "(7)" in r.output  # heun's counted NFE differs from the budgets 4 and 8
    r = invoke("show", db, "--long")
    assert r.exit_code == 0 and r.output.count("gmm2d") == 4
    r = CliRunner().invoke(main, ["show", str(db), "--metric", "fdd"], env=WIDE)
    assert r.exit_code == 2 and "did you mean 'fd'" in r.output
    csv = tmp_path / "all.csv"
    assert invoke("show", db, "--csv", csv).exit_code == 0
    frame = pd.read_csv(csv)
    assert len(frame) == 4 and {"solver", "nfe_budget", "nfe_counted", "metric", "key", "value", "status"} <= set(frame.columns)
    # every value is exported with its interval, next to it
    cols = list(frame.columns)
    assert cols[cols.index("value") + 1: cols.index("value") + 3] == ["ci_low", "ci_high"]
    assert (frame["ci_low"] <= frame["corrected"]).all() and (frame["corrected"] <= frame["ci_high"]).all()
    assert " ± " in invoke("show", db).output


@pytest.mark.skipif(importlib.util.find_spec("pyarrow") is not None, reason="pyarrow is installed: the hint is not shown")
def test_parquet_without_pyarrow_says_how_to_install_it(tiny, tmp_path):
    out = tmp_path / "out"
    invoke("sweep", tiny, "--out", out, "--no-report")
    r = CliRunner().invoke(main, ["show", str(out), "--parquet", str(tmp_path / "x.parquet")], env=WIDE)
    assert r.exit_code == 1 and "pip install 'sampler-bench[parquet]'" in r.output


def test_list_shows_every_registered_sampler_schedule_model_and_spec():
    r = invoke("list")
    assert r.exit_code == 0
    for name in sb.solvers.available() + sorted(sb.schedules.BUILDERS) + ["gmm2d", "gmm16", "quickstart"]:
        assert name in r.output, name
    import sampler_bench.metrics as M

    for name in M.available() + M.features.available():
        assert name in r.output, name
    r = invoke("list", "samplers")
    assert r.exit_code == 0 and "schedules" not in r.output
    heun = next(line for line in r.output.splitlines() if line.startswith("│ heun "))
    assert "2" in heun and "gaussian" in heun


def test_lazy_train_command_never_breaks_the_cli():
    r = invoke("--help")
    assert r.exit_code == 0 and "sweep" in r.output
    if importlib.util.find_spec("sampler_bench.train.cli") is None:
        res = CliRunner().invoke(main, ["train", "--help"], env=WIDE)
        assert res.exit_code != 0 and "No such command" in res.output
    else:
        assert "train" in r.output


def test_bad_device_override_is_rejected_before_any_work(tiny, tmp_path):
    r = CliRunner().invoke(main, ["sweep", str(tiny), "--out", str(tmp_path / "o"), "--device", "gpu0"], env=WIDE)
    assert r.exit_code == 2 and "command-line override: device 'gpu0' is not a torch device" in r.output
    assert not (tmp_path / "o").exists()


@pytest.mark.skipif(importlib.util.find_spec("sampler_bench.report") is None, reason="the report module is not installed")
def test_report_command_writes_markdown_and_html_from_a_store(tiny, tmp_path):
    out = tmp_path / "out"
    invoke("sweep", tiny, "--out", out, "--no-report")
    assert not (out / "report.md").exists()
    r = invoke("report", out / "results.sqlite", "--out", tmp_path / "rep")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "rep" / "report.md").exists() and (tmp_path / "rep" / "report.html").exists()
    assert "euler" in (tmp_path / "rep" / "report.md").read_text()


def test_threads_sets_torch_threads_and_is_recorded_not_part_of_the_cells(tiny, tmp_path):
    import sqlite3

    import torch

    out = tmp_path / "out"
    before = torch.get_num_threads()
    try:
        assert invoke("sweep", tiny, "--out", out, "--no-report").exit_code == 0
        r = invoke("sweep", tiny, "--out", out, "--no-report", "--threads", "1")
        assert r.exit_code == 0 and "0 computed, 4 reused" in r.output  # the same cells
        assert torch.get_num_threads() == 1
        with sqlite3.connect(out / "results.sqlite") as db:
            commands = [c for (c,) in db.execute("SELECT command FROM sweeps ORDER BY started_at")]
        assert "--threads" not in commands[0] and "--threads 1" in commands[-1]  # how the numbers were made
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("text, message", [
    (TINY.replace("n_samples = 16", "n_samples = 16\nthreads = 0"), "threads (torch CPU threads per sweep process) must be >= 1"),
    (TINY.replace("n_samples = 16", 'n_samples = 16\nthreads = "2"'), "must be an integer"),
    (TINY.replace("n_samples = 16", "n_samples = 16\nthread = 2"), "did you mean 'threads'"),
])
def test_bad_threads_is_one_line(tmp_path, text, message):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    r = CliRunner().invoke(main, ["sweep", str(f), "--out", str(tmp_path / "o")], env=WIDE)
    assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output, r.output


def test_threads_option_refuses_zero(tiny, tmp_path):
    r = invoke("sweep", tiny, "--out", tmp_path / "o", "--threads", "0")
    assert r.exit_code == 2 and "--threads" in r.output and "Traceback" not in r.output
