"""Two torchrun *nodes* on one machine: ``--nnodes=2 --nproc_per_node=1`` with a c10d rendezvous.

Each "node" is its own ``torchrun`` started concurrently in its own working directory with the same
*relative* ``--out``, so the nodes share no files: a cluster whose nodes have local disks only. On the
second node ``LOCAL_RANK`` is 0 but ``RANK`` is 1, so anything that used the local rank where the global
rank belongs (who writes the store and checkpoints, which samples or batch rows a process computes)
shows here and not in the single-node tests (tests/test_distributed.py).

* sweep: rank 0's node alone holds the store; the other node writes none (only its own caches: it
  cannot read rank 0's) and still computes its share of every cell; the stored values are the
  single-process run's (float64 round-off; kept samples bit for bit: had both nodes computed shard 0,
  they would not be); an exception injected on rank 1 stops both nodes with one message naming the
  rank and the cell, and rank 0's store keeps the finished cells, unfinished, and resumes to the
  single-process store; rank 1 killed outright (no torchrun on rank 0's node to stop it) stops rank 0
  at its next collective, with a message and the same consistent store;
* train: resuming while only one node's disk holds the state is refused on both nodes without touching
  it (``--out`` must be one folder every rank reads); where every rank reads the same state, DDP over
  the two nodes continues to the uninterrupted single-process run (float32 round-off, as for one node
  in tests/test_distributed.py) and only rank 0's node writes.

Which node becomes rank 0 is the rendezvous's choice (c10d orders the nodes by host name, then by the
launcher's pid: on one machine it changes from launch to launch), so the tests find it from what rank 0
alone prints. Every launch has a timeout: a rank left waiting fails the test instead of blocking CI.
The four launches are most of the time; each runs once per session, also under pytest-xdist.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pandas as pd
import pytest
import torch

# Two torchrun agents per launch on a 2-core machine: long proofs, run by .ci/run's serial slow step.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
NODES = 2
TIMEOUT_S = 120

#: 9 samples: unequal shards (5 + 4) that cut a batch of 4; fd (float64 sums), endpoint_error (reference
#: endpoints each node must compute or receive), a deterministic and a stochastic sampler (per-sample noise).
SWEEP_SPEC = """
name = "multinode"
nfe = [4, 8]
n_samples = 9
batch_size = 4
seed = 5
[[model]]
builtin = "gmm2d"
[[sampler]]
name = "heun"
[[sampler]]
name = "euler_ancestral"
[[metric]]
name = "fd"
[[metric]]
name = "endpoint_error"
"""
#: The cell (in the spec's order) in which rank 1 fails in the sweep launches.
FAIL_AT = 4

#: Rank 1's failure in its FAIL_AT-th cell, injected the way tests/test_distributed.py injects it
#: (compute.cell_shard raises), here through sitecustomize because torchrun starts the processes:
#: ``raise`` an exception, or ``kill`` the process outright (SIGKILL, like the kernel's OOM killer).
#: Only the worker with RANK=1 is touched, whichever node the rendezvous made it.
INJECT = """
import os
if os.environ.get("RANK") == "1" and os.environ.get("SB_TEST_FAIL"):
    import signal

    from sampler_bench.bench import compute as _compute

    _how, _at = os.environ["SB_TEST_FAIL"], int(os.environ["SB_TEST_FAIL_AT"])
    _original, _calls = _compute.cell_shard, []

    def _flaky(cell, *args, **kwargs):
        _calls.append(cell.label)
        if len(_calls) == _at:
            if _how == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            raise OSError("injected: this node's local scratch disk is full")
        return _original(cell, *args, **kwargs)

    _compute.cell_shard = _flaky
"""

#: A few AdamW steps of a small MLP on the 2-D ring, global batch 32 (16 per node). A constant learning
#: rate after the warm-up, so that 3 steps resumed to 6 are the uninterrupted 6-step run.
TRAIN_SPEC = """
name = "mn"
[data]
name = "ring"
n_train = 300
n_test = 50
[process]
name = "edm"
[network]
type = "mlp"
hidden = 32
depth = 2
emb_channels = 16
fourier_channels = 8
[train]
steps = 6
batch = 32
checkpoint_every = 3
log_every = 1
warmup_steps = 2
lr = 1e-2
lr_decay = "none"
ema_halflife_samples = 64
threads = 1
device = "cpu"
"""
TRAIN_FILES = ["log.jsonl", "mn.json", "mn.safetensors", "train_state.json", "train_state.safetensors"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclasses.dataclass
class Node:
    cwd: Path
    rc: int
    out: str
    err: str


def launch(args: list[str], cwds: list[Path], extra_env: dict | None = None) -> list[Node]:
    """``torchrun --nnodes=2 --nproc_per_node=1 --rdzv-backend=c10d ... -m sampler_bench ARGS``, once per
    node, concurrently, node ``i`` in ``cwds[i]``; every node's exit status and output."""
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1", "COLUMNS": "250", **(extra_env or {})}
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nnodes={NODES}", "--nproc_per_node=1",
           "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{free_port()}", f"--rdzv-id=mn-{uuid.uuid4().hex[:8]}",
           "-m", "sampler_bench", *args]
    procs, logs = [], []
    for i, cwd in enumerate(cwds):
        cwd.mkdir(parents=True, exist_ok=True)
        out, err = (open(cwd.parent / f"{cwd.name}.{k}.txt", "w+") for k in ("out", "err"))  # files: no pipe to fill
        logs.append((out, err))
        procs.append(subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=err, text=True))
    hung, deadline = [], time.monotonic() + TIMEOUT_S
    try:
        for i, p in enumerate(procs):
            try:
                p.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                hung.append(i)
    finally:
        for p in procs:  # only the launchers this test started; torchrun stops its worker on SIGTERM
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    nodes = []
    for p, cwd, (out, err) in zip(procs, cwds, logs):
        out.seek(0), err.seek(0)
        nodes.append(Node(cwd, p.returncode, out.read(), err.read()))
        out.close(), err.close()
    assert not hung, f"nodes {hung} did not finish within {TIMEOUT_S} s: " + "\n".join(n.err[-3000:] for n in nodes)
    return nodes


def rank0_node(nodes: list[Node], marker: str) -> int:
    """The node whose process was rank 0: the only one that printed ``marker`` (rank 0's report)."""
    printed = [i for i, n in enumerate(nodes) if marker in n.out]
    assert len(printed) == 1, (f"{marker!r} printed by nodes {printed}, not by rank 0 alone:\n"
                               + "\n".join(n.out[-2000:] + n.err[-3000:] for n in nodes))
    return printed[0]


def files_under(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()) if path.exists() else []


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with the SHA-256 of its bytes."""
    return {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in files_under(folder)}


def _encode(obj):
    if isinstance(obj, Node):
        return {**dataclasses.asdict(obj), "cwd": str(obj.cwd)}
    raise TypeError(f"{type(obj).__name__} is not JSON-able")


def _decode(d: dict):
    return Node(Path(d["cwd"]), d["rc"], d["out"], d["err"]) if set(d) == {"cwd", "rc", "out", "err"} else d


def once_per_session(tmp_path_factory, name: str, make):
    """``make(folder)`` (JSON-able, Nodes allowed) computed once per test session, also under pytest-xdist:
    the workers of one session share the parent of their temporary roots, and a file lock makes a second
    worker wait for the first one's launches instead of repeating them (the pytest-xdist recipe)."""
    from filelock import FileLock  # a requirement of torch

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    folder, done = root / f"multinode-{name}", root / f"multinode-{name}.json"
    with FileLock(str(root / f"multinode-{name}.lock")):
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            done.write_text(json.dumps(make(folder), default=_encode))
    return json.loads(done.read_text(), object_hook=_decode)


# ---------------------------------------------------------------------------------------------
# Sweep


def store_table(path) -> pd.DataFrame:
    """What a sweep must store whatever the number of processes and nodes (no timings, no sweep ids)."""
    from sampler_bench.bench.store import ResultsStore

    with ResultsStore(path, create=False) as s:
        j = s.cells().merge(s.metrics(), on="cell_id", how="left")
    cols = ["cell_id", "solver", "options", "nfe_budget", "nfe_counted", "steps", "n_samples", "status", "reason",
            "metric", "key", "value", "reference_hash"]
    return j[cols].sort_values(["cell_id", "metric", "key"]).reset_index(drop=True)


def assert_same_cells(path, reference_path, n_cells: int) -> None:
    """The cells of ``path`` are ``n_cells`` of the reference store's, with its values and kept samples."""
    from sampler_bench.bench.store import ResultsStore

    ours, ref = store_table(path), store_table(reference_path)
    assert ours["cell_id"].nunique() == n_cells and (ours["status"] == "ok").all()
    ref = ref[ref["cell_id"].isin(ours["cell_id"])].reset_index(drop=True)
    assert "endpoint_error" in set(ours["metric"]) and "fd" in set(ours["metric"])
    pd.testing.assert_frame_equal(ours.drop(columns="value"), ref.drop(columns="value"))
    # the same samples, reduced over two nodes in another order: float64 round-off only
    pd.testing.assert_series_equal(ours["value"], ref["value"], rtol=1e-12, atol=0)
    with ResultsStore(path, create=False) as a, ResultsStore(reference_path, create=False) as b:
        for cid in ours["cell_id"].unique():
            assert torch.equal(a.samples(cid), b.samples(cid)), cid  # the kept samples, bit for bit


@pytest.fixture(scope="module")
def single_sweep(tmp_path_factory) -> Path:
    """The spec's store from one process (the reference every node count must reproduce)."""
    from sampler_bench.bench.runner import run_sweep
    from sampler_bench.bench.spec import parse_spec

    summary = run_sweep(parse_spec(SWEEP_SPEC), tmp_path_factory.mktemp("single_sweep"))
    assert summary.ok == 4
    return summary.store_path


def _sweep_launch(tmp: Path, how: str) -> dict:
    spec = tmp / "multinode.toml"
    spec.write_text(SWEEP_SPEC)
    inject = tmp / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(INJECT)
    env = {"SB_TEST_FAIL": how, "SB_TEST_FAIL_AT": str(FAIL_AT),
           "PYTHONPATH": os.pathsep.join([str(inject), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    nodes = launch(["sweep", str(spec), "--out", "out", "--no-report"], [tmp / "node1", tmp / "node2"], env)
    return {"nodes": nodes, "main": rank0_node(nodes, "torchrun: 2 processes (gloo)")}


@pytest.fixture(scope="module")
def sweep_launch(tmp_path_factory):
    """``torchrun --nnodes=2 ... -m sampler_bench sweep SPEC --out out`` in two node directories; rank 1
    raises in cell FAIL_AT. The nodes and the index of rank 0's node."""
    result = once_per_session(tmp_path_factory, "sweep", lambda tmp: _sweep_launch(tmp, "raise"))
    return result["nodes"], result["main"]


@pytest.fixture(scope="module")
def killed_sweep_launch(tmp_path_factory):
    """The same launch, but rank 1's process is killed (SIGKILL) in cell FAIL_AT."""
    result = once_per_session(tmp_path_factory, "killed", lambda tmp: _sweep_launch(tmp, "kill"))
    return result["nodes"], result["main"]


def test_a_rank_1_failure_stops_both_nodes_with_one_message_naming_the_rank_and_the_cell(sweep_launch):
    nodes, main = sweep_launch
    for n in nodes:
        assert n.rc != 0, n.out + n.err
        # click's one-line error on each node (besides torchrun's own summary of the failed worker)
        lines = [line for line in n.err.splitlines() if line.startswith("Error: ")]
        assert len(lines) == 1, n.err[-4000:]
        assert lines[0].startswith("Error: rank 1 of 2 failed while computing cell gmm2d · euler_ancestral · "), lines
        assert "NFE 8: OSError: injected: this node's local scratch disk is full" in lines[0]
        assert lines[0].endswith("Every rank stopped; the cells finished before are stored in out/results.sqlite: "
                                 "rerun the same command to resume")
        assert "Traceback" not in n.out
    assert nodes[1 - main].out.strip() == ""  # the other rank computes silently


def test_only_rank_0s_node_holds_a_store_although_every_node_computed_its_share(sweep_launch):
    nodes, main = sweep_launch
    other = nodes[1 - main]
    assert (nodes[main].cwd / "out" / "results.sqlite").exists()
    # the other node wrote its own caches (it cannot see rank 0's) and nothing else: no store, no report
    assert all(f.startswith("cache/") for f in files_under(other.cwd / "out")), files_under(other.cwd / "out")
    assert any(f.startswith("cache/") for f in files_under(other.cwd / "out"))  # what it needed, computed there


def test_the_cells_two_nodes_stored_are_the_single_process_cells_and_the_store_resumes_to_the_single_process_store(
        sweep_launch, single_sweep):
    from sampler_bench.bench.runner import run_sweep
    from sampler_bench.bench.spec import parse_spec
    from sampler_bench.bench.store import ResultsStore

    nodes, main = sweep_launch
    store = nodes[main].cwd / "out" / "results.sqlite"
    with ResultsStore(store, create=False) as s:  # consistent: the cells before the failure, the sweep unfinished
        assert s.integrity_ok()
        cells = s.cells()
        assert len(cells) == FAIL_AT - 1 and (cells["status"] == "ok").all()
        assert s.sweeps()["finished_at"].isna().tolist() == [True]
    assert_same_cells(store, single_sweep, FAIL_AT - 1)
    # what the rerun finds there: the finished cells are reused, the failed one is computed
    summary = run_sweep(parse_spec(SWEEP_SPEC), store.parent)
    assert (summary.reused, summary.computed, summary.ok, summary.failed) == (FAIL_AT - 1, 4 - FAIL_AT + 1, 4, 0)
    assert_same_cells(store, single_sweep, 4)


def test_a_rank_killed_on_one_node_stops_rank_0_on_the_other_with_a_message_and_a_consistent_store(
        killed_sweep_launch, single_sweep):
    """Across nodes no torchrun tears the job down: rank 0's next collective fails (connection reset)."""
    from sampler_bench.bench.store import ResultsStore

    nodes, main = killed_sweep_launch
    assert [n.rc != 0 for n in nodes] == [True, True]
    assert "exitcode  : -9" in nodes[1 - main].err and "(SIGKILL)" in nodes[1 - main].err  # torchrun's summary
    lines = [line for line in nodes[main].err.splitlines() if line.startswith("Error: ")]
    assert len(lines) == 1, nodes[main].err[-4000:]
    assert lines[0].startswith("Error: rank 0 of 2 failed while exchanging data with the other ranks: lost contact with them: another rank stopped or the network broke (")
    assert lines[0].endswith("Every rank stopped; the cells finished before are stored in out/results.sqlite: "
                             "rerun the same command to resume")
    store = nodes[main].cwd / "out" / "results.sqlite"
    with ResultsStore(store, create=False) as s:
        assert s.integrity_ok() and s.sweeps()["finished_at"].isna().tolist() == [True]
    assert_same_cells(store, single_sweep, FAIL_AT - 1)
    assert all(f.startswith("cache/") for f in files_under(nodes[1 - main].cwd / "out"))


# ---------------------------------------------------------------------------------------------
# Training


def train_args(steps: int) -> list[str]:
    return ["train", "../train.toml", "--out", "run", "--steps", str(steps), "--no-progress"]


def _train_launches(tmp: Path) -> dict:
    state = single_train(tmp / "single3", 3)  # the state both launches resume (steps 4..6 on two nodes)
    (tmp / "train.toml").write_text(TRAIN_SPEC)
    cwds = [tmp / "node1", tmp / "node2"]
    shutil.copytree(state, cwds[0] / "run")
    before = snapshot(cwds[0] / "run")
    disagree = launch(train_args(6), cwds)
    after = {"holder": snapshot(cwds[0] / "run"), "other": files_under(cwds[1])}
    shutil.copytree(state, cwds[1] / "run", dirs_exist_ok=True)  # rank 0 may have made an empty run/ there
    copies = [snapshot(c / "run") for c in cwds]
    agree = launch(train_args(6), cwds)
    return {"before": before, "disagree": disagree, "after_refusal": after, "copies": copies, "agree": agree}


@pytest.fixture(scope="module")
def train_launches(tmp_path_factory):
    """Two launches of ``train --out run --steps 6`` (relative ``--out``) on the same two node directories,
    resuming a 3-step single-process state:

    1. only node 1 holds the state; node 2's disk has none;
    2. node 2 got a copy of the state (every rank reads the same state, as on a shared filesystem).
    """
    return once_per_session(tmp_path_factory, "train", _train_launches)


def single_train(folder: Path, steps: int) -> Path:
    """``TRAIN_SPEC`` for ``steps`` steps in this process (a world of one) into ``folder``."""
    import tomllib

    from sampler_bench.train.loop import train
    from sampler_bench.train.spec import parse_spec

    spec = parse_spec(tomllib.loads(TRAIN_SPEC), source=TRAIN_SPEC)
    spec.train["steps"] = steps
    train(spec, folder, progress=False)
    return folder


def assert_same_training(ours: Path, ref: Path) -> None:
    from safetensors.torch import load_file

    for name in ("train_state.safetensors", "mn.safetensors"):  # raw weights + optimizer, and the EMA checkpoint
        a, b = load_file(str(ours / name)), load_file(str(ref / name))
        assert a.keys() == b.keys()
        for k in b:  # the same examples, noise and mean-loss gradient; float32 summation order only
            torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)
    losses = [json.loads(line)["loss"] for line in (ours / "log.jsonl").read_text().splitlines()]
    ref_losses = [json.loads(line)["loss"] for line in (ref / "log.jsonl").read_text().splitlines()]
    assert losses == pytest.approx(ref_losses, rel=1e-5)  # the logged loss is the global batch's


def test_resuming_when_only_one_node_holds_the_state_is_refused_on_both_nodes_and_changes_nothing(train_launches):
    for n in train_launches["disagree"]:
        assert n.rc != 0
        error = [line for line in n.err.splitlines() if line.startswith("Error: ")]
        assert len(error) == 1 and "the ranks found different training states in run" in error[0], n.err[-3000:]
        # which node is rank 0 is the rendezvous's choice; node 1 holds step 3, node 2 nothing
        assert "(step by rank: [3, 0])" in error[0] or "(step by rank: [0, 3])" in error[0]
        assert "shared filesystem" in error[0] and "Traceback" not in n.out
    assert train_launches["after_refusal"]["holder"] == train_launches["before"]  # the state on disk is untouched
    assert train_launches["after_refusal"]["other"] == []  # nor did the refused run write on node 2


def test_ddp_over_two_nodes_resumes_to_the_uninterrupted_single_process_run_and_only_rank_0s_node_writes(
        train_launches, tmp_path):
    nodes = train_launches["agree"]
    assert [n.rc for n in nodes] == [0, 0], "\n".join(n.err[-3000:] for n in nodes)
    main = rank0_node(nodes, "mn: step 6, loss")
    folder = nodes[main].cwd / "run"
    assert files_under(folder) == TRAIN_FILES
    state = json.loads((folder / "train_state.json").read_text())
    config = json.loads((folder / "mn.json").read_text())
    assert state["step"] == 6 and config["training"]["steps"] == 6 and config["training"]["world_size"] == 2
    # steps 4..6 on two nodes, after 3 on one process: the weights, EMA, optimizer and losses of 6 steps on one
    assert_same_training(folder, single_train(tmp_path / "single", 6))
    # the other node read its copy of the state and wrote nothing: no checkpoint, no state, no log line
    assert snapshot(nodes[1 - main].cwd / "run") == train_launches["copies"][1 - main]
    assert nodes[1 - main].out.strip() == ""
