"""torchrun without processes: one setup for `sweep` and `train`, and what a broken collective means.

* Both commands join a job through ``sampler_bench.bench.distributed.init_from_env``: a bad torchrun
  environment is refused by both with the same readable message, before any process group is
  started and before anything is written.
* A collective that breaks (another rank died: gloo raises a plain RuntimeError) is a rank failure,
  :class:`DistributedError`, never an error the runner would store as the cell's failure.

(The 2-process gloo runs of both commands are in tests/test_distributed.py.)
"""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
from click.testing import CliRunner

from sampler_bench.bench import distributed as D
from sampler_bench.cli import main

SWEEP = """
name = "tiny"
nfe = [4]
n_samples = 4
[[model]]
builtin = "gmm2d"
[[sampler]]
name = "euler"
"""

TRAIN = """
name = "tiny"
[data]
name = "ring"
n_train = 64
n_test = 16
[process]
name = "edm"
[network]
type = "mlp"
hidden = 8
depth = 1
emb_channels = 8
fourier_channels = 4
[train]
steps = 1
batch = 8
device = "cpu"
"""


@pytest.mark.parametrize("env, message", [
    ({"WORLD_SIZE": "2", "RANK": "5", "LOCAL_RANK": "0"}, "inconsistent torchrun environment: RANK=5 with WORLD_SIZE=2"),
    ({"WORLD_SIZE": "two", "RANK": "0", "LOCAL_RANK": "0"}, "environment variable WORLD_SIZE='two' is not an integer"),
])
def test_sweep_and_train_refuse_a_bad_torchrun_environment_with_the_same_readable_message(tmp_path, env, message):
    (tmp_path / "sweep.toml").write_text(SWEEP)
    (tmp_path / "train.toml").write_text(TRAIN)
    env = {**env, "MASTER_ADDR": None, "MASTER_PORT": None, "COLUMNS": "300"}
    for command in ("sweep", "train"):
        out = tmp_path / f"out_{command}"
        result = CliRunner().invoke(main, [command, str(tmp_path / f"{command}.toml"), "--out", str(out)], env=env)
        # a click error (exit 2 for the sweep's input errors, 1 for train's), not an escaped exception
        assert isinstance(result.exception, SystemExit) and result.exit_code in (1, 2), (command, result.output)
        assert message in " ".join(result.output.split()), (command, result.output)
        assert "Traceback" not in result.output
        assert not out.exists()  # refused before any rank wrote anything


def _connection_reset(*args, **kwargs):
    raise RuntimeError("[gloo/transport/tcp/pair.cc:537] Read error [127.0.0.1]:43922: Connection reset by peer")


@pytest.mark.parametrize("collective, call", [
    ("all_gather_object", lambda w: D.run_sharded(w, 8, lambda a, b: None, what="while computing cell c")),
    ("all_gather_object", lambda w: w.run(lambda: 1, "while storing cell c")),
    ("broadcast_object_list", lambda w: w.broadcast_object("todo")),
    ("all_reduce", lambda w: w.average(torch.ones(()))),
    ("barrier", lambda w: w.barrier()),
])
def test_a_collective_broken_by_a_lost_rank_raises_a_distributed_error_naming_this_rank(monkeypatch, collective, call):
    monkeypatch.setattr(dist, collective, _connection_reset)
    world = D.World(size=2, rank=1, backend="gloo")
    with pytest.raises(D.DistributedError, match=r"rank 1 of 2 failed while exchanging data with the other ranks: "
                                                 r"lost contact with them: another rank stopped or the network broke \(RuntimeError: .*Connection reset by peer"):
        call(world)


def test_a_reduction_broken_by_a_lost_rank_raises_a_distributed_error(monkeypatch):
    monkeypatch.setattr(dist, "all_gather_object", lambda out, obj: out.__setitem__(slice(None), [obj] * len(out)))
    monkeypatch.setattr(dist, "all_reduce", _connection_reset)
    with pytest.raises(D.DistributedError, match="lost contact"):
        D.World(size=2, rank=0, backend="gloo").reduce_state({"sum": torch.ones(3)})
