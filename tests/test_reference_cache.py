"""Reference endpoints cache: bounded memory, corrupt files recomputed, each chunk integrated by one rank.

* memory: with a directory at most ``max_chunks`` chunks stay in memory, and a chunk read back from
  disk is the one that was integrated (bit for bit, no second integration); without a directory every
  chunk stays;
* a truncated chunk file is integrated again;
* ownership: every chunk has exactly one owner rank and every rank's shard is covered by its own
  chunks plus the rows it receives, for assorted n, world and chunk sizes (empty ranks included);
* two gloo processes, with a cache directory per rank (no shared filesystem): a sweep whose chunk
  straddles the rank boundary stores the single-process metric values, and the two ranks together
  integrate each chunk once; an owner that fails to integrate its straddling chunk stops both ranks.
"""

from __future__ import annotations

import os
import traceback
from pathlib import Path

import pytest
import torch

from sampler_bench.bench import distributed as D
from sampler_bench.bench.reference_cache import ReferenceCache, ReferenceTarget, owned_chunks, split_chunks
from sampler_bench.models.base import AnalyticModel
from sampler_bench.processes.analytic import GaussianMixture
from test_distributed import run_ranks

#: Loose tolerances: these tests are about which chunk is integrated where, not about accuracy.
FAST = {"rtol": 1e-6, "atol": 1e-6}


def small_model() -> AnalyticModel:
    means = torch.tensor([[-1.0, 0.0], [1.0, 0.5]], dtype=torch.float64)
    return AnalyticModel("two", GaussianMixture.isotropic(torch.ones(2), means, 0.3))


def initial(a: int, b: int) -> torch.Tensor:
    """Starting states that depend only on the sample index, like the runner's per-sample seeds."""
    return torch.stack([80.0 * torch.randn(2, generator=torch.Generator().manual_seed(i), dtype=torch.float64)
                        for i in range(a, b)])


def fetch(cache: ReferenceCache, a: int, b: int, n: int) -> torch.Tensor:
    return cache.endpoints(ReferenceTarget(small_model(), "k", n, initial, 0.002, 80.0, True, options=FAST), a, b)


N, CHUNK, BOUND = 30, 4, 3  # 8 chunks, the last one [28, 30)


@pytest.fixture(scope="module")
def filled(tmp_path_factory) -> tuple[Path, torch.Tensor]:
    """A cache directory holding all 8 chunks, and the endpoints of [0, N) integrated in memory only."""
    directory = tmp_path_factory.mktemp("reference")
    memory_only = ReferenceCache(None, chunk=CHUNK, max_chunks=BOUND)
    whole = fetch(memory_only, 0, N, N)
    assert memory_only.computed == 8 and memory_only.held_chunks == 8  # no directory: memory keeps every chunk
    on_disk = ReferenceCache(directory, chunk=CHUNK, max_chunks=BOUND)
    for a in range(0, N, 5):  # batches of 5 that cross chunk boundaries
        assert torch.equal(fetch(on_disk, a, min(a + 5, N), N), whole[a: a + 5])
    assert on_disk.computed == 8 and len(list(directory.glob("*.safetensors"))) == 8
    return directory, whole


def test_with_a_directory_memory_holds_at_most_max_chunks_and_evicted_chunks_come_back_from_disk(filled):
    directory, whole = filled
    cache = ReferenceCache(directory, chunk=CHUNK, max_chunks=BOUND)
    got = torch.cat([fetch(cache, a, min(a + 3, N), N) for a in range(0, N, 3)])  # touches all 8 chunks
    assert cache.held_chunks == BOUND and cache.held_bytes == (4 + 4 + 2) * 2 * 8  # [20, 24) [24, 28) [28, 30)
    assert cache.computed == 0 and torch.equal(got, whole)  # read, not integrated
    # chunk [0, 4) was evicted long ago: it comes back from disk identical, still without integrating
    assert f"k-0-{CHUNK}" not in cache._memory
    assert torch.equal(fetch(cache, 0, 2, N), whole[:2]) and cache.computed == 0
    assert cache.held_chunks == BOUND
    # the same cache object over a second pass: still bounded, still nothing integrated
    assert torch.equal(fetch(cache, 0, N, N), whole) and cache.held_chunks == BOUND and cache.computed == 0


def test_a_truncated_or_foreign_chunk_file_is_integrated_again(filled, tmp_path):
    directory, whole = filled
    for p in directory.glob("*.safetensors"):
        (tmp_path / p.name).write_bytes(p.read_bytes())
    truncated = tmp_path / "reference-k-4-8.safetensors"
    truncated.write_bytes(truncated.read_bytes()[:40])  # what a killed run can leave (without the rename)
    wrong = tmp_path / "reference-k-8-12.safetensors"
    wrong.write_bytes((tmp_path / "reference-k-28-30.safetensors").read_bytes())  # 2 rows, not 4
    cache = ReferenceCache(tmp_path, chunk=CHUNK, max_chunks=BOUND)
    assert torch.equal(fetch(cache, 0, N, N), whole)
    assert cache.computed == 2
    again = ReferenceCache(tmp_path, chunk=CHUNK)  # and the rewritten files now load
    assert torch.equal(fetch(again, 4, 12, N), whole[4:12]) and again.computed == 0


def test_bad_cache_sizes_are_rejected():
    with pytest.raises(ValueError, match="max_chunks >= 1"):
        ReferenceCache(None, max_chunks=0)
    with pytest.raises(ValueError, match="chunk >= 1"):
        ReferenceCache(None, chunk=0)


@pytest.mark.parametrize("n", [0, 1, 5, 7, 21, 64, 100, 1023, 1025, 10_000])
@pytest.mark.parametrize("world", [1, 2, 3, 8])
@pytest.mark.parametrize("chunk", [1, 4, 8, 1024])
def test_every_chunk_has_one_owner_and_every_shard_is_covered_once(n, world, chunk):
    chunks = -(-n // chunk)
    owners = [r for r in range(world) for _ in owned_chunks(n, world, r, chunk)]
    assert sorted(k for r in range(world) for k in owned_chunks(n, world, r, chunk)) == list(range(chunks))
    counts = [len(owned_chunks(n, world, r, chunk)) for r in range(world)]
    assert len(owners) == chunks and max(counts) - min(counts) <= 1  # reference work differs by <= 1 chunk
    splits = split_chunks(n, world, chunk)
    for r in range(world):
        start, stop = D.shard_range(n, world, r)
        covered = [0] * n
        for k in owned_chunks(n, world, r, chunk):  # integrated here; rows of later ranks are sent
            for i in range(k * chunk, min((k + 1) * chunk, n, stop)):
                covered[i] += 1
        for s in splits:  # received: rows [cut, stop) of a chunk another rank owns
            assert s.start % chunk == 0 and s.start < s.cut < s.stop and D.shard_range(n, world, s.owner)[1] == s.cut
            assert s.start // chunk in owned_chunks(n, world, s.owner, chunk)
            if s.owner != r:
                for i in range(max(start, s.cut), min(stop, s.stop)):
                    covered[i] += 1
        assert covered == [1 if start <= i < stop else 0 for i in range(n)], (r, start, stop)
    # a chunk is split exactly when its rows belong to more than one rank
    rank_of = [r for r in range(world) for _ in range(*D.shard_range(n, world, r))]
    assert [s.start for s in splits] == [a for a in range(0, n, chunk) if len(set(rank_of[a: a + chunk])) > 1]


# ---------------------------------------------------------------------------------------------
# Two gloo processes, a cache directory each

#: 21 samples in chunks of 8: [0, 8) [8, 16) [16, 21); rank 0 has [0, 11), rank 1 [11, 21), so the
#: chunk [8, 16) straddles the boundary (before: integrated by both ranks, 4 solves for 3 chunks).
DIST_N, DIST_CHUNK = 21, 8
SPEC = f"""
name = "refcache"
nfe = [4, 8]
n_samples = {DIST_N}
batch_size = 4
seed = 3
[[model]]
builtin = "gmm2d"
[[sampler]]
name = "heun"
[[metric]]
name = "endpoint_error"
[reference]
rtol = 1e-8
atol = 1e-8
"""


def _rank_main(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                      LOCAL_RANK=str(rank), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    try:
        result = {"ok": scenario_two_sweeps(out)}
    except BaseException as exc:  # reported to the test, which asserts on it
        result = {"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()}
    finally:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
    torch.save(result, Path(out) / f"rank{rank}.pt")


def scenario_two_sweeps(out_root: str) -> dict:
    """A sweep into a directory per rank; then one in which rank 0 cannot integrate its straddling chunk."""
    from sampler_bench.bench import reference_cache as RC
    from sampler_bench.bench.runner import Sweep
    from sampler_bench.bench.spec import parse_spec

    world = D.init_from_env("cpu")
    out = Path(out_root) / f"rank{world.rank}"
    events = []
    sweep = Sweep(parse_spec(SPEC), out, world=world, reference_chunk=DIST_CHUNK,
                  on_event=lambda kind, data: events.append((data["start"], data["stop"])) if kind == "reference" else None)
    summary = sweep.run()
    files = sorted(p.name.split("-", 2)[2] for p in (out / "cache" / "reference").glob("*.safetensors"))
    result = {"ok": summary.ok, "computed": sweep.references.computed, "events": events, "files": files,
              "held": sweep.references.held_chunks}

    original = RC.ReferenceCache._chunk

    def broken(self, target, a, b, *args, **kwargs):
        if world.rank == 0 and (a, b) == (8, 16):
            raise OSError("node-local disk full")
        return original(self, target, a, b, *args, **kwargs)

    RC.ReferenceCache._chunk = broken
    try:
        Sweep(parse_spec(SPEC), Path(out_root) / f"broken{world.rank}", world=world, reference_chunk=DIST_CHUNK).run()
        result["failure"] = None
    except D.DistributedError as exc:
        result["failure"] = str(exc)
    finally:
        RC.ReferenceCache._chunk = original
    return result


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> tuple[Path, list[dict]]:
    tmp = tmp_path_factory.mktemp("refcache_two_ranks")
    results = run_ranks(_rank_main, 2, tmp, str(tmp))
    errors = [r.get("trace") for r in results if "error" in r]
    assert not errors, errors
    return tmp, [r["ok"] for r in results]


def metric_values(store_path) -> dict:
    from sampler_bench.bench.store import ResultsStore

    with ResultsStore(store_path, create=False) as s:
        j = s.cells().merge(s.metrics(), on="cell_id")
    return {(row.cell_id, row.key): row.value for row in j.itertuples()}


@pytest.mark.slow
def test_two_ranks_integrate_each_chunk_once_and_store_the_single_process_values(two_ranks, tmp_path):
    from sampler_bench.bench.runner import Sweep
    from sampler_bench.bench.spec import parse_spec

    root, (r0, r1) = two_ranks
    assert r0["ok"] == r1["ok"] == 2
    # rank 0 owns [0, 8) and the straddling [8, 16) (it holds sample 8); rank 1 owns [16, 21) and is sent
    # rows [11, 16): three solves for three chunks, each file on the disk of the rank that integrated it
    assert sorted(r0["events"] + r1["events"]) == [(0, 8), (8, 16), (16, 21)]
    assert (r0["computed"], r1["computed"]) == (2, 1)
    assert (r0["files"], r1["files"]) == (["0-8.safetensors", "8-16.safetensors"], ["16-21.safetensors"])
    assert r0["held"] <= 4 and r1["held"] <= 4
    single = Sweep(parse_spec(SPEC), tmp_path, reference_chunk=DIST_CHUNK)
    single.run()
    assert single.references.computed == 3
    ours, ref = metric_values(root / "rank0" / "results.sqlite"), metric_values(tmp_path / "results.sqlite")
    assert ours.keys() == ref.keys() and len(ref) == 4  # 2 cells x (endpoint_rmse, endpoint_mean_l2)
    for k, v in ref.items():  # the same endpoints and samples, summed over two ranks: float64 round-off
        assert ours[k] == pytest.approx(v, rel=1e-12, abs=0), k


@pytest.mark.slow
def test_an_owner_that_cannot_integrate_its_straddling_chunk_stops_both_ranks(two_ranks):
    _, results = two_ranks
    for r in results:  # the same message on both ranks, naming rank 0 and its error; neither waits forever
        assert r["failure"].startswith("rank 0 of 2 failed while computing the reference endpoints of cell gmm2d")
        assert "OSError: node-local disk full" in r["failure"]
