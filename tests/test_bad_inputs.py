"""Bad inputs and faults (issue 18): every case stops with one message that names the problem, exit
status 2 from the command line (1 for an environment failure), no traceback, and nothing silently
wrong or lost. Each table row is one case a careless user or an attacker tried."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3

import pytest
from click.testing import CliRunner

from sampler_bench.bench import check as C
from sampler_bench.bench import spec as S
from sampler_bench.bench.store import ResultsStore, StoreError
from sampler_bench.cli import main

WIDE = {"COLUMNS": "250"}
BASE = """name = "t"
nfe = [4]
n_samples = 8
[[model]]
builtin = "gmm2d"
[[sampler]]
name = "euler"
"""


def invoke(*args, **kw):
    return CliRunner().invoke(main, [str(a) for a in args], env=WIDE, **kw)


def assert_refused(r, *pieces, code=2):
    """One readable message: the exit status, no traceback, and the words that name the problem."""
    assert r.exit_code == code, (r.exit_code, r.output, r.exception)
    assert isinstance(r.exception, SystemExit), repr(r.exception)  # click's exit, not an escaped exception
    assert "Traceback" not in r.output
    for p in pieces:
        assert p in r.output, (p, r.output)


def with_top(text: str, line: str) -> str:
    """BASE with one more top-level line (before the first [[table]])."""
    return text.replace("n_samples = 8\n", f"n_samples = 8\n{line}\n", 1)


# ---------------------------------------------------------------------------------------------
# item 10, 12 and 6: specs


SPEC_CASES = [
    # (id, spec text, words the message must hold)
    ("name-parent-dirs", BASE.replace('name = "t"', 'name = "../../../x"'), ["name '../../../x'", "one path component"]),
    ("name-absolute", BASE.replace('name = "t"', 'name = "/tmp/x"'), ["name '/tmp/x'", "one path component"]),
    ("name-dotdot", BASE.replace('name = "t"', 'name = ".."'), ["name '..'"]),
    ("seed-u64-max", with_top(BASE, "seed = 18446744073709551615"), ["seed = 18446744073709551615 is too large",
                                                                     "signed 64-bit"]),
    ("seed-just-too-large", with_top(BASE, f"seed = {2**63 - 7}"), ["is too large", "n_samples = 8"]),
    ("sigma-max-1e150", BASE + '[[schedule]]\nname = "karras"\nsigma_max = 1e150\n',
     ["sigma_max = 1e+150 is outside the supported noise levels"]),
    ("rho-1e308", BASE + '[[schedule]]\nname = "karras"\nparams = { rho = 1e308 }\n', ["rho = 1e+308", "[0.001, 1000]"]),
    ("iddpm-M-0", BASE + '[[schedule]]\nname = "edm_iddpm"\nparams = { M = 0 }\n', ["parameter M = 0", "integer"]),
    ("fd-one-sample", BASE.replace("n_samples = 8", "n_samples = 1") + '[[metric]]\nname = "fd"\n',
     ["metric 'fd' needs at least 2 samples", "n_samples = 1"]),
    ("pr-three-samples", BASE.replace("n_samples = 8", "n_samples = 3") + '[[metric]]\nname = "precision_recall"\n',
     ["metric 'precision_recall' needs at least 4 samples"]),
    ("device-meta", with_top(BASE, 'device = "meta"'), ["device 'meta'", "hold no data"]),
    ("deep-nesting", "x = " + "[" * 3000 + "]" * 3000 + "\n", ["nested too deeply"]),
]


@pytest.mark.parametrize("text,pieces", [c[1:] for c in SPEC_CASES], ids=[c[0] for c in SPEC_CASES])
def test_bad_specs_are_refused_before_any_work(tmp_path, text, pieces):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    r = invoke("sweep", f, "--out", tmp_path / "out")
    assert_refused(r, *pieces)
    assert not (tmp_path / "out").exists()  # no directory, no store: nothing was done


def test_a_spec_name_without_out_never_writes_outside_results(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.toml").write_text(BASE.replace('name = "t"', 'name = "../../escaped"'))
    assert_refused(invoke("sweep", "x.toml", "--no-report"), "one path component")
    assert not (tmp_path.parent / "escaped").exists() and not (tmp_path / "results").exists()
    # a file name that is not a plain name is made one when the spec has no name = "..."
    assert S.parse_spec(BASE.replace('name = "t"\n', ""), path=tmp_path / "my spec (v2).toml").name == "my_spec_v2_"


SPEC_FILE_CASES = [
    ("binary", lambda p: p.write_bytes(b"\x7fELF\x02\x01\x01\x00\x00" * 20), ["is a binary file"]),
    ("latin-1", lambda p: p.write_bytes(b'name = "caf\xe9"\n'), ["is not UTF-8 text"]),
    ("directory", lambda p: p.mkdir(), ["is a directory"]),
    ("fifo", lambda p: os.mkfifo(p), ["is not a regular file"]),
    ("broken-link", lambda p: p.symlink_to(p.parent / "nowhere.toml"), ["cannot be read"]),
]


@pytest.mark.parametrize("make,pieces", [c[1:] for c in SPEC_FILE_CASES], ids=[c[0] for c in SPEC_FILE_CASES])
def test_spec_files_that_are_not_text_are_named_for_what_they_are(tmp_path, make, pieces):
    p = tmp_path / "spec.toml"
    make(p)
    assert_refused(invoke("sweep", p, "--out", tmp_path / "out"), *pieces)


def test_an_unreadable_spec_file_says_permission_denied(tmp_path, monkeypatch):
    p = tmp_path / "spec.toml"
    p.write_text(BASE)

    def denied(*a, **k):
        raise PermissionError(13, "Permission denied", str(p))

    monkeypatch.setattr(S, "open", denied, raising=False)  # as root chmod 000 would not stop the read
    assert_refused(invoke("sweep", p, "--out", tmp_path / "out"), "cannot be read: Permission denied")


def test_a_utf8_byte_order_mark_is_accepted(tmp_path):
    p = tmp_path / "bom.toml"
    p.write_bytes(b"\xef\xbb\xbf" + BASE.encode())
    assert S.load_spec(p).name == "t"
    assert S.parse_spec("\ufeff" + BASE).name == "t"


@pytest.mark.parametrize("device,pieces", [
    ("mps", ["device 'mps'", "not available"]),
    ("cuda:7", ["device 'cuda:7'"]),
    ("meta", ["device 'meta'"]),
])
def test_devices_are_checked_before_any_cell(tmp_path, device, pieces):
    import torch

    if device.startswith("cuda") and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    if device == "mps" and getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    f = tmp_path / "s.toml"
    f.write_text(BASE)
    r = invoke("sweep", f, "--out", tmp_path / "out", "--device", device)
    assert_refused(r, *pieces)
    assert not (tmp_path / "out" / "results.sqlite").exists()


# ---------------------------------------------------------------------------------------------
# item 13: output locations


def test_out_below_a_file_or_on_a_device_is_refused(tmp_path):
    f = tmp_path / "s.toml"
    f.write_text(BASE)
    (tmp_path / "afile").write_text("x")
    assert_refused(invoke("sweep", f, "--out", tmp_path / "afile" / "sub"), "is below", "a file, not a directory")
    assert_refused(invoke("sweep", f, "--out", tmp_path / "afile"), "afile' is a file")
    assert_refused(invoke("sweep", f, "--out", "/dev/null"), "'/dev/null' is a file")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_out_in_a_read_only_directory_is_refused(tmp_path):
    f = tmp_path / "s.toml"
    f.write_text(BASE)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        assert_refused(invoke("sweep", f, "--out", ro / "out"), "not a writable directory")
    finally:
        ro.chmod(0o755)


# ---------------------------------------------------------------------------------------------
# items 3 and 14: baselines


def _cell(cell_id="a", status="ok"):
    return {
        "cell_id": cell_id, "sweep_id": "s", "spec_name": "t", "model": "gmm2d", "model_hash": "h", "process": "gaussian",
        "solver": "heun", "options": "{}", "requested_options": "{}", "stochastic": False, "declared_order": 2,
        "schedule": "karras", "schedule_params": "{}", "sigma_min": 0.002, "sigma_max": 80.0, "ends_at_zero": True,
        "nfe_budget": 10, "nfe_planned": 10, "nfe_counted": 10, "steps": 10, "n_samples": 100, "seed": 0,
        "batch_size": 100, "device": "cpu", "precision": "float64", "wall_time_s": 1.0, "samples_per_s": 100.0,
        "denoiser_fraction": 0.5, "metric_time_s": 0.0, "status": status, "reason": "", "version": "0",
    }


@pytest.fixture
def store_path(tmp_path):
    path = tmp_path / "results.sqlite"
    with ResultsStore(path) as s:
        s.put_cell(_cell(), [{"metric": "m", "key": "err", "value": 0.1, "lower_is_better": True}])
    return path


def _good_baseline(store_path) -> dict:
    with ResultsStore(store_path, read_only=True) as s:
        return C.make_baseline(s)


def _edit(path_of_cell, value):
    def apply(doc):
        target = doc
        for k in path_of_cell[:-1]:
            target = target[k]
        target[path_of_cell[-1]] = value
        return doc
    return apply


BASELINE_CASES = [
    ("no-cells", _edit(["cells"], []), ["holds no cells"]),
    ("empty-values", _edit(["cells", 0, "values"], []), ["values must be a non-empty list"]),
    ("lower-is-better-string", _edit(["cells", 0, "values", 0, "lower_is_better"], "false"),
     ["lower_is_better must be true or false", "'false'"]),
    ("value-string", _edit(["cells", 0, "values", 0, "value"], "0.1"), ["a baseline value must be a finite number"]),
    ("value-null", _edit(["cells", 0, "values", 0, "value"], None), ["a baseline value must be a finite number"]),
    ("nfe-string", _edit(["cells", 0, "nfe_budget"], "10"), ["nfe_budget must be an integer"]),
    ("seed-float", _edit(["cells", 0, "seed"], 0.5), ["seed must be an integer"]),
    ("options-list", _edit(["cells", 0, "options"], []), ["options must be an object"]),
    ("ends-at-zero-int", _edit(["cells", 0, "ends_at_zero"], 1), ["ends_at_zero must be true or false"]),
    ("cell-not-object", _edit(["cells", 0], "heun"), ["baseline cell #1 must be an object"]),
    ("value-not-object", _edit(["cells", 0, "values", 0], 3), ["each value needs metric, key and value"]),
    ("metric-number", _edit(["cells", 0, "values", 0, "metric"], 7), ["metric and key must be strings"]),
    ("cells-object", _edit(["cells"], {}), ['"cells" must be a list']),
]


@pytest.mark.parametrize("edit,pieces", [c[1:] for c in BASELINE_CASES], ids=[c[0] for c in BASELINE_CASES])
def test_malformed_baselines_fail_the_check_with_a_message(tmp_path, store_path, edit, pieces):
    b = tmp_path / "b.json"
    b.write_text(json.dumps(edit(_good_baseline(store_path))))
    assert_refused(invoke("check", store_path, "--baseline", b), *pieces)


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_baseline_values_are_refused(tmp_path, store_path, constant):
    b = tmp_path / "b.json"
    b.write_text(json.dumps(_good_baseline(store_path)).replace('"value": 0.1', f'"value": {constant}'))
    assert constant in b.read_text()
    assert_refused(invoke("check", store_path, "--baseline", b), constant, "must be finite")


def test_binary_and_deeply_nested_baselines_are_refused(tmp_path, store_path):
    b = tmp_path / "b.json"
    b.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe" * 10)
    assert_refused(invoke("check", store_path, "--baseline", b), "not UTF-8 JSON text")
    b.write_text("[" * 100000 + "]" * 100000)
    assert_refused(invoke("check", store_path, "--baseline", b), "nested too deeply")


def test_a_baseline_from_an_empty_store_is_not_written_and_an_empty_check_fails(tmp_path, store_path):
    empty = tmp_path / "empty" / "results.sqlite"
    ResultsStore(empty).close()
    b = tmp_path / "b.json"
    assert_refused(invoke("check", empty, "--write-baseline", b), "no 'ok' cell")
    assert not b.exists()
    with pytest.raises(C.BaselineError, match="compare nothing"):
        with ResultsStore(store_path, read_only=True) as s:
            C.check(s, {"cells": [], "tolerances": {}})
    # the good baseline still passes: the checks above are not a check that always fails
    b.write_text(json.dumps(_good_baseline(store_path)))
    r = invoke("check", store_path, "--baseline", b)
    assert r.exit_code == 0 and "all 1 values within tolerance" in r.output


def test_write_baseline_into_a_missing_directory_is_one_message(tmp_path, store_path):
    r = invoke("check", store_path, "--write-baseline", tmp_path / "no" / "such" / "b.json")
    assert_refused(r, "cannot write the baseline", "does not exist")


# ---------------------------------------------------------------------------------------------
# item 4 and 14: read-only commands and damaged stores


def _foreign_sqlite(path):
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE people (name TEXT, age INTEGER)")
    db.execute("INSERT INTO people VALUES ('ada', 36)")
    db.commit()
    db.close()


@pytest.mark.parametrize("kind", ["foreign-sqlite", "empty-file", "text-file"])
@pytest.mark.parametrize("command", [["show"], ["show", "--long"], ["report"], ["check", "--baseline", "b.json"],
                                     ["check", "--write-baseline", "w.json"]])
def test_read_only_commands_leave_other_files_byte_identical(tmp_path, monkeypatch, kind, command):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "data.sqlite"
    if kind == "foreign-sqlite":
        _foreign_sqlite(path)
    elif kind == "text-file":
        path.write_text("name,age\nada,36\n")
    else:
        path.write_bytes(b"")
    before = path.read_bytes()
    listing = sorted(os.listdir(tmp_path))
    r = invoke(command[0], path, *command[1:])
    what = {"foreign-sqlite": "not a sampler-bench results store", "empty-file": "is an empty file",
            "text-file": "is not a SQLite database"}[kind]
    assert_refused(r, what)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == listing  # no journal, no -wal/-shm, no report, no baseline


def test_a_sweep_refuses_to_add_its_tables_to_another_programs_database(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    _foreign_sqlite(out / "results.sqlite")
    before = (out / "results.sqlite").read_bytes()
    f = tmp_path / "s.toml"
    f.write_text(BASE)
    assert_refused(invoke("sweep", f, "--out", out), "not a sampler-bench results store", "people")
    assert (out / "results.sqlite").read_bytes() == before


def _damage(path, sql):
    db = sqlite3.connect(path)
    db.execute(sql)
    db.commit()
    db.close()


@pytest.mark.parametrize("sql,pieces", [
    ("UPDATE meta SET value = 'abc' WHERE key = 'schema_version'", ["corrupted schema_version 'abc'"]),
    ("UPDATE cells SET nfe_budget = 'ten'", ["corrupted cell value", "nfe_budget"]),
    ("UPDATE cells SET status = 'weird'", ["corrupted cell", "weird"]),
    ("UPDATE metrics SET value = 'x1'", ["corrupted metric value"]),
    ("DROP TABLE samples", ["tables samples are missing"]),
    ("DELETE FROM meta", ["has no schema_version"]),
])
def test_damaged_stores_are_refused_by_every_reader(tmp_path, store_path, sql, pieces):
    _damage(store_path, sql)
    for command in (["show"], ["show", "--long"], ["check", "--write-baseline", tmp_path / "w.json"]):
        assert_refused(invoke(command[0], store_path, *command[1:]), *pieces)


def test_show_csv_into_a_missing_directory_is_one_message(tmp_path, store_path):
    r = invoke("show", store_path, "--csv", tmp_path / "missing" / "x.csv")
    assert_refused(r, "cannot write", "does not exist")


def test_the_read_only_store_reads_what_the_writer_wrote(store_path):
    with ResultsStore(store_path, read_only=True) as s:
        assert list(s.cells()["cell_id"]) == ["a"] and s.metrics()["value"].tolist() == [0.1]
    with pytest.raises(StoreError, match="does not exist"):
        ResultsStore(store_path.parent / "none.sqlite", read_only=True)


# ---------------------------------------------------------------------------------------------
# item 15: Ctrl-C


def test_ctrl_c_in_a_command_prints_one_line_and_exits_130(tmp_path, monkeypatch):
    from sampler_bench.bench import spec as spec_module

    def interrupted(ref):
        raise KeyboardInterrupt

    monkeypatch.setattr(spec_module, "load_spec", interrupted)
    r = invoke("sweep", "anything", "--out", tmp_path / "o")
    assert r.exit_code == 130 and "Traceback" not in r.output
    assert "finished before Ctrl-C are kept" in r.output and "rerun the same command to resume" in r.output


def test_ctrl_c_during_start_up_is_deferred_then_one_line_for_the_command_line_only(monkeypatch, capsys):
    import signal

    from sampler_bench import _interrupt

    # whatever an earlier test in this worker left installed, start from Python's own Ctrl-C handler
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        monkeypatch.setattr("sys.orig_argv", ["/venv/bin/sampler-bench", "show", "x"], raising=False)
        assert _interrupt.started_as_command_line()
        monkeypatch.setattr("sys.orig_argv", ["python", "-m", "sampler_bench", "sweep"], raising=False)
        assert _interrupt.started_as_command_line()
        with pytest.raises(SystemExit) as e:
            with _interrupt.deferred():
                os.kill(os.getpid(), signal.SIGINT)  # during the imports: recorded, not raised mid-import
                imported = True
        assert imported and e.value.code == 130
        assert "rerun the same command to resume" in capsys.readouterr().err
        monkeypatch.setattr("sys.orig_argv", ["python", "train.py"], raising=False)
        assert not _interrupt.started_as_command_line()
        with pytest.raises(KeyboardInterrupt):  # a library user keeps Python's own behaviour
            with _interrupt.deferred():
                os.kill(os.getpid(), signal.SIGINT)
                signal.getsignal(signal.SIGINT)  # give the interpreter a bytecode boundary to raise at
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.mark.slow
def test_ctrl_c_at_any_moment_of_a_real_sweep_never_prints_a_traceback(tmp_path):
    """SIGINT to a real `python -m sampler_bench sweep` process at several moments (start-up included)."""
    import signal
    import subprocess
    import sys
    import time

    f = tmp_path / "s.toml"
    f.write_text(BASE.replace("nfe = [4]", "nfe = [4, 8, 16, 32]").replace("n_samples = 8", "n_samples = 3000"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    for delay in (0.3, 1.0, 2.5):
        p = subprocess.Popen([sys.executable, "-m", "sampler_bench", "sweep", str(f), "--out", str(tmp_path / "o"),
                              "--no-report"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        time.sleep(delay)
        p.send_signal(signal.SIGINT)
        out = p.communicate(timeout=120)[0].decode()
        if p.returncode == 0:
            continue  # finished before the signal
        if p.returncode == -signal.SIGINT and "0 failed" in out and "results:" in out:
            # The sweep had finished and reported; the signal came while the interpreter was exiting,
            # when Python has already restored the inherited SIG_DFL: nothing was left to lose.
            continue
        # 130 is the command's own exit; -SIGINT (the inherited SIG_DFL once the interpreter exits) is what a
        # shell also reports as 130: either way one line, no traceback, and the finished cells are kept.
        assert p.returncode in (130, -signal.SIGINT), out
        assert "Traceback" not in out and "rerun the same command to resume" in out, out
    r = invoke("sweep", f, "--out", tmp_path / "o", "--no-report")
    assert r.exit_code == 0 and "4 cells" in r.output  # the rerun completes the sweep
    shutil.rmtree(tmp_path / "o")


# ---------------------------------------------------------------------------------------------
# item 11: NFE budgets


def test_a_budget_of_1e9_is_refused_in_under_a_second(tmp_path):
    import time

    from sampler_bench.solvers import budget as B

    f = tmp_path / "s.toml"
    f.write_text(BASE.replace("nfe = [4]", "nfe = [1000000000]"))
    t0 = time.perf_counter()
    r = invoke("sweep", f, "--out", tmp_path / "out")
    assert_refused(r, "every NFE budget must be <= 100000")
    with pytest.raises(ValueError, match="above the supported maximum of 100000"):
        B.plan("heun", 10**9)
    assert time.perf_counter() - t0 < 1.0
    t0 = time.perf_counter()
    assert B.plan("heun", B.MAX_NFE_BUDGET, ends_at_zero=False).steps == B.MAX_NFE_BUDGET // 2
    assert time.perf_counter() - t0 < 1.0  # the largest allowed budget is planned by bisection, not a walk


def test_the_bisected_step_count_is_the_largest_grid_within_the_budget():
    """Against the definition (walk up one step at a time) for every solver, both grid endings."""
    import sampler_bench as sb
    from sampler_bench.solvers import budget as B

    checked = 0
    for name in sb.solvers.available():
        meta = sb.solvers.info(name)
        if meta.adaptive or meta.steps_for_nfe is not None:
            continue
        opts = meta.validate({})
        for ends in (True, False):
            for budget in range(1, 40):
                need = meta.min_steps(opts)
                if meta.nfe(need, ends, opts) > budget:
                    continue
                walk = need
                while meta.nfe(walk + 1, ends, opts) <= budget:
                    walk += 1
                assert B.steps_for_budget(name, budget, ends)[0] == walk, (name, budget, ends)
                checked += 1
    assert checked > 500
    with pytest.raises(ValueError, match="at least one denoiser evaluation"):
        B.largest_steps_within(lambda n: 0, 1, 10)  # a law that never grows cannot hang the planner


# ---------------------------------------------------------------------------------------------
# item 8: the denoiser's output shape


@pytest.mark.parametrize("bad,shape", [
    (lambda x, s: x[:, :1] * 0, "[4, 1]"),          # [B, 1] broadcasts over the features
    (lambda x, s: x[:1] * 0, "[1, 2]"),             # [1, D] collapses the batch onto one sample
    (lambda x, s: x.sum() * 0, "[]"),               # a scalar
    (lambda x, s: (x * 0).reshape(2, 4), "[2, 4]"),
])
@pytest.mark.parametrize("solver", ["euler", "heun", "dpmpp_2m", "euler_ancestral"])
def test_a_denoiser_output_not_shaped_like_x_is_refused_at_the_first_call(bad, shape, solver):
    import torch

    import sampler_bench as sb

    calls = []

    def denoiser(x, s):
        calls.append(1)
        return bad(x, s)

    x = torch.randn(4, 2, dtype=torch.float64) * 80
    import re

    with pytest.raises(ValueError, match=re.escape(f"returned shape {shape} for x of shape [4, 2]")):
        sb.sample(solver, denoiser, x, sb.schedules.karras(4, 0.002, 80.0), generator=[torch.Generator().manual_seed(i) for i in range(4)])
    assert len(calls) == 1
    good = sb.sample(solver, lambda x, s: x * 0, x, sb.schedules.karras(4, 0.002, 80.0),
                     generator=[torch.Generator().manual_seed(i) for i in range(4)])
    assert good.shape == x.shape


# ---------------------------------------------------------------------------------------------
# items 2, 9 and 14: checkpoint configs

CHECKPOINTS = __import__("pathlib").Path(__file__).resolve().parent.parent / "checkpoints"


@pytest.fixture
def ring_copy(tmp_path):
    for ext in (".json", ".safetensors"):
        shutil.copy(CHECKPOINTS / f"ring-edm{ext}", tmp_path / f"ring{ext}")
    return tmp_path / "ring"


def _edit_config(ring, edit, rehash=False):
    from sampler_bench.models.checkpoint import _hashed

    cfg = json.loads(ring.with_suffix(".json").read_text())
    edit(cfg)
    if rehash:  # an attacker who also recomputes the hashes: the content checks below must still hold
        cfg = _hashed(cfg, cfg["weights_sha256"])
        edit(cfg)  # again: rehashing rewrites the format fields
    ring.with_suffix(".json").write_text(json.dumps(cfg))


CONFIG_EDITS = [
    ("process-to-pfgmpp", lambda c: c["process"].update(name="pfgmpp", D=128), ["process.name", "process.D"]),
    ("process-to-vp", lambda c: c["process"].update(name="vp"), ["process.name (now 'vp')"]),
    ("sigma-max", lambda c: c["process"].update(sigma_max=1e6), ["process.sigma_max (now 1000000.0)"]),
    ("sigma-data", lambda c: c.update(sigma_data=0.5), ["sigma_data (now 0.5)"]),
    ("precond-sigma-data", lambda c: c["precond"].update(sigma_data=0.5), ["precond.sigma_data"]),
    ("kind", lambda c: c.update(kind="pfgmpp"), ["kind (now 'pfgmpp')"]),
    ("network", lambda c: c["network"].update(hidden=64), ["network.hidden (now 64)"]),
    ("dataset", lambda c: c["dataset"].update(n_test=10), ["dataset.n_test"]),
    ("reference-split", lambda c: c.update(reference_split="train"), ["reference_split = 'train' (added)"]),
    ("content-hash", lambda c: c.update(content_sha256="0" * 64), ["content hash does not match"]),
]


@pytest.mark.parametrize("edit,fields", [c[1:] for c in CONFIG_EDITS], ids=[c[0] for c in CONFIG_EDITS])
def test_every_edit_of_what_a_checkpoint_computes_is_refused_naming_the_field(ring_copy, edit, fields):
    import sampler_bench as sb
    from sampler_bench.models.checkpoint import CheckpointError

    sb.load_model(ring_copy)  # the committed checkpoint loads as it is
    _edit_config(ring_copy, edit)
    with pytest.raises(CheckpointError, match="was modified after the checkpoint was saved") as e:
        sb.load_model(ring_copy)
    for f in fields:
        assert f in str(e.value)


def test_an_edited_checkpoint_stops_the_sweep_with_exit_2(tmp_path, ring_copy):
    _edit_config(ring_copy, lambda c: c["process"].update(sigma_max=1e6))
    f = tmp_path / "s.toml"
    f.write_text(BASE.replace('builtin = "gmm2d"', f'checkpoint = "{ring_copy}"'))
    assert_refused(invoke("sweep", f, "--out", tmp_path / "out"), "process.sigma_max")
    assert not (tmp_path / "out" / "results.sqlite").exists()


def test_descriptive_fields_may_be_edited(ring_copy):
    import sampler_bench as sb

    before = sb.load_model(ring_copy).fingerprint()
    _edit_config(ring_copy, lambda c: c.update(description="renamed", name="ring-2"))
    assert sb.load_model(ring_copy).fingerprint() == before  # the content, not the label, is the model


HOSTILE = [
    ("huge-network", lambda c: c["network"].update(hidden=200000, depth=64), ["do not fit", "compared before loading"]),
    ("negative-shape", lambda c: c.update(shape=[-2]), ["shape must be a list of positive integers"]),
    ("format-version-string", lambda c: c.update(format_version="2"), ["format_version must be an integer, got '2'"]),
    ("format-version-future", lambda c: c.update(format_version=3), ["upgrade sampler-bench"]),
    ("dataset-escapes", lambda c: c["dataset"].update(name="folder", path="../../../../usr/share"),
     ["outside the data root", "SAMPLER_BENCH_DATA_ROOT"]),
    ("dataset-absolute", lambda c: c.update(dataset={"name": "cifar10", "root": "/etc"}), ["outside the data root"]),
]


@pytest.mark.parametrize("edit,pieces", [c[1:] for c in HOSTILE], ids=[c[0] for c in HOSTILE])
def test_hostile_configs_with_recomputed_hashes_are_refused_before_anything_is_built(ring_copy, edit, pieces, monkeypatch):
    import time

    import sampler_bench as sb
    from sampler_bench.models import checkpoint as K

    def no_loading(*a, **k):
        raise AssertionError("the tensors were read before the config was checked")

    monkeypatch.setattr("safetensors.torch.load_file", no_loading)
    _edit_config(ring_copy, edit, rehash=True)
    t0 = time.perf_counter()
    with pytest.raises(K.CheckpointError) as e:
        sb.load_model(ring_copy)
    assert time.perf_counter() - t0 < 5.0  # the 200000 x 200000 x 64 network is never allocated
    for p in pieces:
        assert p in str(e.value)


def test_dataset_paths_inside_the_data_root_resolve_there(ring_copy, tmp_path, monkeypatch):
    from sampler_bench.models import checkpoint as K

    monkeypatch.setenv(K.DATA_ROOT_ENV, str(tmp_path / "data"))
    _edit_config(ring_copy, lambda c: c.update(dataset={"name": "cifar10", "root": "cifar"}), rehash=True)
    _, cfg = K.read_checkpoint(ring_copy)
    assert cfg["dataset"]["root"] == str((tmp_path / "data" / "cifar").resolve())


def test_deeply_nested_and_non_finite_configs_are_refused(ring_copy):
    from sampler_bench.models.checkpoint import CheckpointError, read_checkpoint

    text = ring_copy.with_suffix(".json").read_text()
    ring_copy.with_suffix(".json").write_text(text[:-2] + ', "x": ' + "[" * 100000 + "]" * 100000 + "}\n")
    with pytest.raises(CheckpointError, match="nested too deeply"):
        read_checkpoint(ring_copy)
    ring_copy.with_suffix(".json").write_text(text.replace('"sigma_data": 1.4221198150400647\n', '"sigma_data": NaN\n'))
    with pytest.raises(CheckpointError, match="NaN"):
        read_checkpoint(ring_copy)


def test_a_format_1_config_is_refused_with_the_upgrade_command_which_works(ring_copy):
    import subprocess
    import sys

    import sampler_bench as sb
    from sampler_bench.models.checkpoint import CheckpointError

    cfg = json.loads(ring_copy.with_suffix(".json").read_text())
    for k in ("content_sha256", "field_sha256"):
        del cfg[k]
    cfg["format_version"] = 1
    ring_copy.with_suffix(".json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="python -m sampler_bench.models.upgrade"):
        sb.load_model(ring_copy)
    r = subprocess.run([sys.executable, "-m", "sampler_bench.models.upgrade", str(ring_copy)], capture_output=True,
                       text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert r.returncode == 0, r.stderr
    assert sb.load_model(ring_copy).fingerprint() == sb.load_model(CHECKPOINTS / "ring-edm").fingerprint()


# ---------------------------------------------------------------------------------------------
# item 5 and 13: environment failures stop the sweep; nothing is stored for that cell


ENDPOINT_SPEC = BASE.replace("[[sampler]]", '[[metric]]\nname = "endpoint_error"\n[[sampler]]', 1)


@pytest.mark.parametrize("error,words", [
    (PermissionError(13, "Permission denied", "cache/reference/x.safetensors"), "permission denied"),
    (OSError(28, "No space left on device"), "disk full"),
])
def test_an_unwritable_cache_stops_the_sweep_and_stores_no_failed_cell(tmp_path, monkeypatch, error, words):
    from sampler_bench.bench import reference_cache

    def refuse(*a, **k):
        raise error

    f = tmp_path / "s.toml"
    f.write_text(ENDPOINT_SPEC)
    out = tmp_path / "out"
    monkeypatch.setattr(reference_cache.ReferenceCache, "_write", staticmethod(refuse))
    r = invoke("sweep", f, "--out", out, "--no-report")
    assert_refused(r, words, "nothing was stored for this cell", "rerun the same command to resume", code=1)
    with ResultsStore(out / "results.sqlite", read_only=True) as s:
        assert s.cells().empty and s.leases().empty  # no failed cell to be reused later, no stale lease
    monkeypatch.undo()  # the permission is fixed: the rerun computes the cell
    r = invoke("sweep", f, "--out", out, "--no-report")
    assert r.exit_code == 0 and "1 ok" in r.output, r.output


def test_a_cell_stored_failed_by_the_environment_is_never_reused(tmp_path):
    from sampler_bench.bench.runner import run_sweep

    spec = S.parse_spec(ENDPOINT_SPEC)
    out = tmp_path / "out"
    run_sweep(spec, out)
    db = sqlite3.connect(out / "results.sqlite")  # what an older sampler-bench stored for a full disk
    db.execute("UPDATE cells SET status = 'failed', reason = 'euler at NFE 4: OSError: [Errno 28] No space left on device'")
    db.commit()
    db.close()
    summary = run_sweep(spec, out)
    assert summary.computed == 1 and summary.reused == 0 and summary.ok == 1


def test_a_full_disk_while_storing_says_disk_full_and_keeps_the_store(tmp_path, monkeypatch):
    from sampler_bench.bench import store as St

    f = tmp_path / "s.toml"
    f.write_text(BASE.replace("nfe = [4]", "nfe = [4, 8]"))
    out = tmp_path / "out"
    calls = []
    real = St.ResultsStore.put_cell

    def fill_up(self, *a, **k):
        calls.append(1)
        if len(calls) == 2:  # the second cell's transaction fails the way SQLite reports a full disk
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("ROLLBACK")
            with self._transaction():
                raise sqlite3.OperationalError("database or disk is full")
        return real(self, *a, **k)

    monkeypatch.setattr(St.ResultsStore, "put_cell", fill_up)
    assert_refused(invoke("sweep", f, "--out", out, "--no-report"), "disk full", "store is intact", code=1)
    monkeypatch.undo()
    with ResultsStore(out / "results.sqlite", read_only=True) as s:
        assert len(s.cells()) == 1 and s.integrity_ok()
    r = invoke("sweep", f, "--out", out, "--no-report")
    assert r.exit_code == 0 and "1 computed, 1 reused" in r.output, r.output


def test_the_api_checks_the_device_up_front_too(tmp_path):
    import torch

    from sampler_bench.bench.runner import run_sweep

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    spec = S.with_overrides(S.parse_spec(BASE), device="cuda")
    with pytest.raises(S.SpecError, match="CUDA is not available"):
        run_sweep(spec, tmp_path / "out")
    assert not (tmp_path / "out" / "results.sqlite").exists()


# ---------------------------------------------------------------------------------------------
# item 7: show with several cells per sampler and budget


def test_show_lists_every_cell_of_a_sampler_and_budget_with_what_distinguishes_them(tmp_path):
    from sampler_bench.bench.runner import run_sweep

    out = tmp_path / "out"
    text = BASE.replace("[[sampler]]", '[[metric]]\nname = "endpoint_error"\n[[sampler]]', 1)
    for extra in ("", "seed = 5"):
        for n in (8, 12):
            run_sweep(S.parse_spec(text.replace("n_samples = 8", f"n_samples = {n}\n{extra}")), out)
    r = invoke("show", out)
    assert r.exit_code == 0, r.output
    rows = [line for line in r.output.splitlines() if line.startswith("│ euler")]
    assert len(rows) == 4, r.output
    for n, seed in ((8, 0), (12, 0), (8, 5), (12, 5)):
        assert any(f"n_samples={n}, seed={seed}" in line for line in rows), r.output
    assert "told apart by n_samples, seed" in r.output


# ---------------------------------------------------------------------------------------------
# item 16: concurrent sweeps share the work through leases


LEASE_SPEC = BASE.replace("nfe = [4]", "nfe = [4, 8, 16]").replace("n_samples = 8", "n_samples = 200").replace(
    'name = "euler"', 'name = "euler"\n[[sampler]]\nname = "heun"')


@pytest.fixture
def counted_calls(monkeypatch):
    import threading

    from sampler_bench.solvers import driver

    calls = {"n": 0}
    lock = threading.Lock()
    real = driver.CountingDenoiser.__call__

    def counting(self, x, sigma):
        with lock:
            calls["n"] += 1
        return real(self, x, sigma)

    monkeypatch.setattr(driver.CountingDenoiser, "__call__", counting)
    return calls


def test_two_concurrent_sweeps_compute_each_cell_once(tmp_path, counted_calls):
    import threading

    from sampler_bench.bench.runner import Sweep

    spec = S.parse_spec(LEASE_SPEC)
    Sweep(spec, tmp_path / "alone").run()
    alone = counted_calls["n"]
    counted_calls["n"] = 0
    sweeps = [Sweep(spec, tmp_path / "shared") for _ in range(2)]
    summaries = [None, None]
    start = threading.Barrier(2)

    def run(i):
        start.wait()
        summaries[i] = sweeps[i].run()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert counted_calls["n"] == alone  # together, not twice: every cell computed by one of them
    assert sum(s.computed for s in summaries) == 6 and sum(s.reused for s in summaries) == 6
    assert all(s.ok == 6 for s in summaries)
    with ResultsStore(tmp_path / "shared", read_only=True) as s:
        assert len(s.cells()) == 6 and s.leases().empty


def test_a_dead_claimers_cells_are_computed_again(tmp_path, counted_calls):
    import socket
    import subprocess
    import time

    from sampler_bench.bench.runner import Sweep

    spec = S.parse_spec(LEASE_SPEC)
    sweep = Sweep(spec, tmp_path / "out")
    dead = subprocess.Popen(["true"])
    dead.wait()  # its pid is no longer running
    with ResultsStore(tmp_path / "out" / "results.sqlite") as s:
        db = s._db
        now = time.time()
        for i, cell in enumerate(sweep.cells):
            if i < 3:  # killed on this host: noticed from its pid, although its lease has hours to run
                row = (cell.cell_id, "crashed", dead.pid, socket.gethostname(), now, now + 3600)
            elif i < 5:  # another node, lease run out
                row = (cell.cell_id, "lost-node", 1, "node-b", now - 600, now - 1)
            else:  # another node, lease running out in a second: waited for, then taken over
                row = (cell.cell_id, "slow-node", 1, "node-b", now, now + 1.0)
            db.execute("INSERT INTO leases VALUES (?, ?, ?, ?, ?, ?)", row)
    t0 = time.perf_counter()
    summary = sweep.run()
    assert summary.computed == 6 and summary.ok == 6
    assert time.perf_counter() - t0 >= 0.9  # it waited for the live lease
    with ResultsStore(tmp_path / "out", read_only=True) as s:
        assert s.leases().empty


def test_a_live_lease_of_another_sweep_is_respected(tmp_path):
    import time

    spec = S.parse_spec(LEASE_SPEC)
    from sampler_bench.bench.runner import Sweep

    sweep = Sweep(spec, tmp_path / "out")
    cell = sweep.cells[0]
    with ResultsStore(tmp_path / "out" / "results.sqlite") as s:
        assert s.claim(cell.cell_id, "other", timeout=60) == "claimed"
        assert s.claim(cell.cell_id, "mine") == "busy"
        assert s.claim(cell.cell_id, "other") == "claimed"  # its owner renews it
        s.release(cell.cell_id, "other")
        assert s.claim(cell.cell_id, "mine") == "claimed"
        assert not s.leases().empty and s.leases()["owner"].tolist() == ["mine"]
        assert s.leases()["expires_at"].iloc[0] > time.time() + 100


def test_report_out_that_cannot_hold_files_is_one_message(tmp_path, store_path):
    (tmp_path / "afile").write_text("x")
    assert_refused(invoke("report", store_path, "--out", tmp_path / "afile" / "rep"), "is below", "a file, not a directory")
    assert not (tmp_path / "afile" / "rep").exists()
