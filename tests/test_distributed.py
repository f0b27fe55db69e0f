"""torch.distributed with the gloo backend on the CPU, 2 processes.

* the helpers: contiguous disjoint shards, float64 reduction of accumulator states equal to the
  single-process reduction, one rank's exception raised on every rank;
* sweeps: ``torchrun --nproc_per_node=2 -m sampler_bench sweep`` stores the single-process run's
  cells, samples and metrics (float64 round-off); only rank 0 opens the store; a rank that fails
  stops every rank with a message naming it, the store keeps the finished cells, and a rerun resumes;
* training: DDP on 2 gloo processes trains the weights a single process trains with the same global
  batch (float32 round-off), and only rank 0 writes the checkpoint.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
import subprocess
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

import pytest
import torch

from sampler_bench.bench import distributed as D
from sampler_bench.metrics.base import reduce_states

WORLD = 2
TIMEOUT_S = 120
ROOT = Path(__file__).resolve().parents[1]

#: 21 samples: unequal shards (11 + 10) that cut a batch of 4; sums (fd), capped rows (swd), reference
#: endpoints (endpoint_error), a deterministic and a stochastic sampler (per-sample noise).
SWEEP_SPEC = """
name = "dist"
nfe = [4, 8]
n_samples = 21
batch_size = 4
seed = 3
[[model]]
builtin = "gmm2d"
[[sampler]]
name = "heun"
[[sampler]]
name = "euler_ancestral"
[[metric]]
name = "fd"
[[metric]]
name = "swd"
[[metric]]
name = "endpoint_error"
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, world: int, port: int, scenario: str, out: str, kwargs: dict) -> None:
    """One spawned rank: torchrun's environment, then ``scenario``; its result (or error) saved to ``out``."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                      LOCAL_RANK=str(rank), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    try:
        result = {"ok": SCENARIOS[scenario](**kwargs)}
    except BaseException as exc:  # reported to the test, which asserts on it
        result = {"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()}
    finally:
        try:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
        except Exception:
            pass
    torch.save(result, Path(out) / f"rank{rank}.pt")


def run_ranks(target, world: int, out: Path, *args) -> list[dict]:
    """``target(rank, world, port, *args)`` on ``world`` fresh spawned processes (each saves ``out/rank{r}.pt``);
    the saved results in rank order. A rank still running after ``TIMEOUT_S`` is killed and fails the test."""
    ctx = multiprocessing.get_context("spawn")
    port = free_port()
    procs = [ctx.Process(target=target, args=(r, world, port, *args)) for r in range(world)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(TIMEOUT_S)
    hung = [r for r, p in enumerate(procs) if p.is_alive()]
    for r in hung:
        procs[r].kill()  # only the processes this test started
    assert not hung, f"ranks {hung} did not finish within {TIMEOUT_S} s (a rank waiting for a failed one?)"
    return [torch.load(Path(out) / f"rank{r}.pt", weights_only=False) for r in range(world)]


def spawn(scenario: str, tmp_path: Path, world: int = WORLD, **kwargs) -> list[dict]:
    """Run ``scenario`` on ``world`` fresh processes joined by gloo; every rank's result, in rank order."""
    return run_ranks(_rank_main, world, tmp_path, scenario, str(tmp_path), kwargs)


# ---------------------------------------------------------------------------------------------
# Scenarios (module level: spawned processes import them by name)


def _shard_state(rank: int) -> dict[str, torch.Tensor]:
    """A metric-like state: sums, and a "cat:" row set whose row count differs between ranks."""
    g = torch.Generator().manual_seed(rank)
    return {"count": torch.tensor(float(3 + rank), dtype=torch.float64),
            "sum": torch.randn(5, generator=g, dtype=torch.float64) * 1e3,
            "sum_outer": torch.randn(5, 5, generator=g, dtype=torch.float64),
            "cat:rows": torch.randn(3 - 2 * rank, 4, generator=g, dtype=torch.float64)}


@dataclass
class FakeShard:
    """The fields of the runner's ShardResult that :func:`run_sharded` combines."""

    start: int
    stop: int
    states: dict
    nfe_counted: list
    sampling_s: float
    denoiser_s: float
    metric_s: float
    kept: torch.Tensor | None


class CellProblem(Exception):
    """Stands for an error that belongs to the cell (like NaN samples)."""


def _raise(exc):
    raise exc


def _outcome(world, compute) -> str:
    try:
        D.run_sharded(world, 7, compute, cell_errors=(CellProblem,), what="in the test cell")
    except D.DistributedError as exc:
        return f"DistributedError: {exc}"
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return "ok"


def scenario_collectives() -> dict:
    world = D.init_from_env("cpu")
    reduced = world.reduce_state(_shard_state(world.rank))
    failure = None
    try:
        world.run(lambda: (_ for _ in ()).throw(ValueError("boom")) if world.rank == 1 else "fine", "in the test phase")
    except D.DistributedError as exc:
        failure = str(exc)
    r = world.rank
    shard = lambda a, b: FakeShard(a, b, {"m": _shard_state(r)}, [5], 1.0 + r, 0.5, 0.1 + r,  # noqa: E731
                                   torch.full((b - a, 2), float(r)))
    return {"world": (world.size, world.rank, world.backend), "shard": world.shard(7), "reduced": reduced,
            "gathered": world.gather_objects(10 * world.rank), "broadcast": world.broadcast_object(f"from {world.rank}"),
            "failure": failure, "combined": D.run_sharded(world, 7, shard),
            "same_error_everywhere": _outcome(world, lambda a, b: _raise(ValueError(f"bug on {r}"))),
            "cell_error_on_one_rank": _outcome(world, lambda a, b: _raise(CellProblem("nan")) if r == 1 else shard(a, b)),
            "other_error_on_one_rank": _outcome(world, lambda a, b: _raise(OSError("disk")) if r == 1 else shard(a, b))}


def scenario_sweep_fail_then_resume(out_root: str, fail_rank: int, fail_at: int) -> dict:
    """A sweep in which ``fail_rank`` raises in its ``fail_at``-th cell, then the same sweep again."""
    from sampler_bench.bench import compute as C
    from sampler_bench.bench import runner as R
    from sampler_bench.bench.spec import parse_spec
    from sampler_bench.bench.store import ResultsStore

    world = D.init_from_env("cpu")
    out = Path(out_root) / f"rank{world.rank}"  # a directory per rank: whatever rank 1 wrote would show
    opened = []
    original_init, original_shard = ResultsStore.__init__, C.cell_shard

    def counting_init(self, *args, **kwargs):
        opened.append(str(args[0] if args else kwargs.get("path")))
        original_init(self, *args, **kwargs)

    calls = []

    def flaky(cell, *args, **kwargs):
        calls.append(cell.label)
        if world.rank == fail_rank and len(calls) == fail_at:
            raise RuntimeError(f"injected: rank {world.rank} lost its device")
        return original_shard(cell, *args, **kwargs)

    ResultsStore.__init__, C.cell_shard = counting_init, flaky
    spec = parse_spec(SWEEP_SPEC)
    failure = None
    try:
        R.Sweep(spec, out, world=world).run()
    except D.DistributedError as exc:
        failure = str(exc)
    opened_by_sweep = list(opened)
    after_failure = None
    if world.is_main:
        with ResultsStore(out / "results.sqlite", create=False) as store:
            after_failure = {"cells": store.cells()[["cell_id", "status"]].values.tolist(),
                             "finished": store.sweeps()["finished_at"].notna().tolist()}
    C.cell_shard = original_shard
    opened.clear()
    summary = R.Sweep(spec, out, world=world).run()
    return {"failure": failure, "after_failure": after_failure, "opened": opened_by_sweep + opened,
            "resumed": (summary.reused, summary.computed, summary.ok, summary.failed),
            "files": sorted(p.name for p in out.iterdir()) if out.exists() else []}


#: A few AdamW steps of a small MLP on the 2-D ring, global batch 32 (16 per rank), two checkpoints.
TRAIN = {
    "name": "ddp", "data": {"name": "ring", "n_train": 300, "n_test": 50}, "process": {"name": "edm"},
    "network": {"type": "mlp", "hidden": 32, "depth": 2, "emb_channels": 16, "fourier_channels": 8},
    "train": {"steps": 6, "batch": 32, "checkpoint_every": 3, "log_every": 1, "warmup_steps": 2, "lr": 1e-2,
              "ema_halflife_samples": 64, "threads": 1, "device": "cpu"},
}


def scenario_train(out_root: str) -> dict:
    from sampler_bench.train.loop import train
    from sampler_bench.train.spec import parse_spec

    world = D.init_from_env("cpu")
    out = Path(out_root) / f"train_rank{world.rank}"  # rank 1 must leave its directory empty
    train(parse_spec(TRAIN), out, progress=False)
    return {"files": sorted(p.name for p in out.iterdir()) if out.exists() else []}


def scenario_helpers_then_sweep(out_root: str) -> dict:
    """The scenarios in the same two processes, one after the other (start-up is most of the cost)."""
    return {"collectives": scenario_collectives(),
            "sweep": scenario_sweep_fail_then_resume(out_root, fail_rank=1, fail_at=2),
            "train": scenario_train(out_root)}


SCENARIOS = {"collectives": scenario_collectives, "sweep_fail_then_resume": scenario_sweep_fail_then_resume,
             "train": scenario_train, "helpers_then_sweep": scenario_helpers_then_sweep}


def store_table(path) -> pd.DataFrame:
    """What a sweep must store whatever the number of processes (no timings, no sweep ids)."""
    from sampler_bench.bench.store import ResultsStore

    with ResultsStore(path, create=False) as s:
        j = s.cells().merge(s.metrics(), on="cell_id", how="left")
    cols = ["cell_id", "solver", "options", "nfe_budget", "nfe_counted", "steps", "n_samples", "status", "reason",
            "metric", "key", "value", "reference_hash"]
    return j[cols].sort_values(["cell_id", "metric", "key"]).reset_index(drop=True)


def assert_same_store(path, reference_path) -> None:
    from sampler_bench.bench.store import ResultsStore

    ours, ref = store_table(path), store_table(reference_path)
    assert (ours["status"] == "ok").all() and len(ours) == len(ref) == 12
    pd.testing.assert_frame_equal(ours.drop(columns="value"), ref.drop(columns="value"))
    # the same samples reduced in another order: float64 round-off only
    pd.testing.assert_series_equal(ours["value"], ref["value"], rtol=1e-12, atol=0)
    with ResultsStore(path, create=False) as a, ResultsStore(reference_path, create=False) as b:
        for cid in ref["cell_id"].unique():
            assert torch.equal(a.samples(cid), b.samples(cid)), cid  # the kept samples, bit for bit


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> tuple[Path, list[dict]]:
    """Every rank's results of :func:`scenario_helpers_then_sweep` (and where its files went)."""
    tmp = tmp_path_factory.mktemp("two_ranks")
    results = spawn("helpers_then_sweep", tmp, out_root=str(tmp))
    errors = [r.get("trace") for r in results if "error" in r]
    assert not errors, errors
    return tmp, [r["ok"] for r in results]


@pytest.fixture(scope="module")
def single_process_store(tmp_path_factory) -> Path:
    from sampler_bench.bench.runner import run_sweep
    from sampler_bench.bench.spec import parse_spec

    summary = run_sweep(parse_spec(SWEEP_SPEC), tmp_path_factory.mktemp("single"))
    assert summary.ok == 4
    return summary.store_path


# ---------------------------------------------------------------------------------------------
# Helpers (no processes)


@pytest.mark.parametrize("n, world", [(0, 3), (5, 1), (7, 2), (10, 3), (2, 4), (50_000, 8)])
def test_shards_are_contiguous_disjoint_balanced_and_cover_every_index(n, world):
    shards = [D.shard_range(n, world, r) for r in range(world)]
    assert shards[0][0] == 0 and shards[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(shards, shards[1:]))  # contiguous, in rank order
    sizes = [b - a for a, b in shards]
    assert min(sizes) >= 0 and max(sizes) - min(sizes) <= 1


def test_without_torchrun_the_world_is_one_process_and_collectives_are_identities(monkeypatch):
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    world = D.init_from_env("cpu")
    assert (world.size, world.rank, world.distributed, world.is_main) == (1, 0, False, True)
    state = _shard_state(0)
    reduced = world.reduce_state(state)
    assert all(torch.equal(reduced[k], state[k]) for k in state)
    with pytest.raises(ValueError, match="original"):  # a single process sees its own exception unchanged
        world.run(lambda: (_ for _ in ()).throw(ValueError("original")), "anything")


def test_backend_is_nccl_on_cuda_and_gloo_on_cpu():
    assert D.backend_for("cpu") == "gloo"
    assert D.backend_for("cuda:1") == "nccl"


@pytest.mark.parametrize("env, match", [({"WORLD_SIZE": "2", "RANK": "2"}, "RANK=2 with WORLD_SIZE=2"),
                                        ({"WORLD_SIZE": "two"}, "WORLD_SIZE='two' is not an integer")])
def test_a_malformed_torchrun_environment_is_a_readable_error(monkeypatch, env, match):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ValueError, match=match):
        D.env_world()


# ---------------------------------------------------------------------------------------------
# Two gloo processes


@pytest.mark.slow
def test_gloo_reduction_equals_the_single_process_reduction_and_failures_reach_every_rank(two_ranks):
    expected = reduce_states([_shard_state(0), _shard_state(1)])
    for rank, res in enumerate(r["collectives"] for r in two_ranks[1]):
        assert res["world"] == (2, rank, "gloo")
        assert res["shard"] == ((0, 4), (4, 7))[rank]
        assert res["gathered"] == [0, 10] and res["broadcast"] == "from 0"
        assert set(res["reduced"]) == set(expected)
        for k, v in expected.items():  # two addends: a + b == b + a exactly, so equality is exact
            assert res["reduced"][k].dtype == torch.float64
            assert torch.equal(res["reduced"][k], v), k
        assert res["reduced"]["cat:rows"].shape == (4, 4)  # 3 rows from rank 0, then 1 from rank 1
        assert res["failure"].startswith("rank 1 of 2 failed in the test phase: ValueError: boom (at test_distributed.py:")


@pytest.mark.slow
def test_torchrun_sweep_on_two_gloo_processes_stores_the_single_process_results(tmp_path, single_process_store):
    spec = tmp_path / "dist.toml"
    spec.write_text(SWEEP_SPEC)
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={WORLD}", "--master_addr=127.0.0.1",
           f"--master_port={free_port()}", "-m", "sampler_bench", "sweep", str(spec), "--out", str(tmp_path / "out"),
           "--no-report"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "torchrun: 2 processes (gloo)" in proc.stdout and proc.stdout.count("4 cells in") == 1  # rank 0 reports
    assert_same_store(tmp_path / "out" / "results.sqlite", single_process_store)
    # the launch is provenance: wall time and samples/s depend on it
    from sampler_bench.bench.store import ResultsStore

    with ResultsStore(tmp_path / "out" / "results.sqlite", create=False) as s, \
            ResultsStore(single_process_store, create=False) as one:
        assert s.sweeps()["command"].iloc[0].startswith("torchrun --nnodes=1 --nproc_per_node=2 -m sampler_bench sweep ")
        host = socket.gethostname()
        assert all(json.loads(p)["execution"]["ranks"] == 2 and json.loads(p)["execution"]["hosts"] == [host]
                   for p in s.metrics()["provenance"])
        assert all(json.loads(p)["execution"]["ranks"] == 1 for p in one.metrics()["provenance"])


@pytest.mark.slow
def test_a_failing_rank_stops_every_rank_the_store_stays_consistent_and_a_rerun_resumes(two_ranks, single_process_store):
    tmp_path, results = two_ranks
    r0, r1 = (r["sweep"] for r in results)
    for r in (r0, r1):  # the same clear message on every rank, naming the rank, the cell and the error
        assert r["failure"].startswith("rank 1 of 2 failed while computing cell gmm2d · ")
        assert "RuntimeError: injected: rank 1 lost its device" in r["failure"]
    # the first cell was stored before the failure, the failing one was not, the sweep is marked unfinished
    assert [status for _, status in r0["after_failure"]["cells"]] == ["ok"]
    assert r0["after_failure"]["finished"] == [False]
    assert r0["resumed"] == r1["resumed"] == (1, 3, 4, 0)  # the rerun reused the stored cell, computed the rest
    # rank 0 alone opened the store; rank 1 wrote no store and no report
    assert r0["opened"] and all(p.endswith("results.sqlite") for p in r0["opened"]) and r1["opened"] == []
    assert not {"results.sqlite", "report.md", "report.html"} & set(r1["files"])
    assert_same_store(tmp_path / "rank0" / "results.sqlite", single_process_store)


@pytest.mark.slow
def test_ddp_on_two_gloo_processes_trains_the_single_process_weights_and_only_rank_0_writes(two_ranks, tmp_path):
    import json

    from safetensors.torch import load_file

    from sampler_bench.train.loop import train
    from sampler_bench.train.spec import parse_spec

    root, results = two_ranks
    assert results[1]["train"]["files"] == []  # rank 1 wrote no checkpoint, no state, no log
    single = tmp_path / "single"
    train(parse_spec(TRAIN), single, progress=False)
    ddp = root / "train_rank0"
    assert sorted(p.name for p in single.iterdir()) == results[0]["train"]["files"]
    for name in ("train_state.safetensors", "ddp.safetensors"):  # raw weights + optimizer, and the EMA checkpoint
        ours, ref = load_file(str(ddp / name)), load_file(str(single / name))
        assert ours.keys() == ref.keys()
        for k in ref:
            # the same examples, noise and mean-loss gradient; only the float32 summation order differs
            torch.testing.assert_close(ours[k], ref[k], rtol=1e-4, atol=1e-5, msg=k)  # per-rank noise: ~6e-2
    config = json.loads((ddp / "ddp.json").read_text())
    assert config["training"]["world_size"] == 2 and config["training"]["steps"] == 6
    losses = [json.loads(line)["loss"] for line in (ddp / "log.jsonl").read_text().splitlines()]
    ref_losses = [json.loads(line)["loss"] for line in (single / "log.jsonl").read_text().splitlines()]
    assert losses == pytest.approx(ref_losses, rel=1e-5)  # the logged loss is the global batch's


@pytest.mark.slow
def test_sharded_cells_combine_in_rank_order_and_failures_are_classified_alike_on_every_rank(two_ranks):
    expected = reduce_states([_shard_state(0), _shard_state(1)])
    for rank, res in enumerate(r["collectives"] for r in two_ranks[1]):
        c = res["combined"]
        assert (c.start, c.stop, c.nfe_counted) == (0, 7, [5, 5])
        assert all(torch.equal(c.states["m"][k], v) for k, v in expected.items())
        assert c.sampling_s == 2.0 and c.metric_s == 1.1  # the slowest rank's
        assert c.denoiser_s == pytest.approx(2.0 * (0.5 + 0.5) / (1.0 + 2.0))  # the fraction over all ranks
        assert torch.equal(c.kept, torch.tensor([[0.0, 0.0]] * 4 + [[1.0, 1.0]] * 3))  # sample order
        # the same error on every rank belongs to the cell: each rank raises its own (stored as a failed cell)
        assert res["same_error_everywhere"] == f"ValueError: bug on {rank}"
        # a cell error on one rank fails the cell everywhere; the other rank says where it happened
        if rank == 0:
            assert res["cell_error_on_one_rank"].startswith("RemoteCellError: rank 1 of 2: CellProblem: nan (at test_distributed.py:")
        else:
            assert res["cell_error_on_one_rank"] == "CellProblem: nan"
        # any other error on some ranks only is a rank failure: every rank stops, naming the rank
        assert res["other_error_on_one_rank"].startswith(
            "DistributedError: rank 1 of 2 failed in the test cell: OSError: disk (at test_distributed.py:")
