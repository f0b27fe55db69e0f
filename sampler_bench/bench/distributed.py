"""torch.distributed for jobs launched by ``torchrun``: world, index shards, float64 reductions, failures.

``torchrun --nproc_per_node=N -m sampler_bench sweep SPEC`` (or ``... train SPEC``) starts N copies
of the command with ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK`` and the rendezvous address in their
environment; :func:`init_from_env` joins them into one process group (NCCL on CUDA, gloo on CPU).
Without those variables it returns a world of one and nothing here talks to anyone, so the
single-process path is the same code. Sweeps (:mod:`.runner`) and training
(:mod:`sampler_bench.train.loop`, DDP) both join through :func:`init_from_env` and share the
:class:`World`: the same backend choice, device per ``LOCAL_RANK``, timeout and failure handling.

* **Shards.** Rank ``r`` of ``W`` computes the contiguous sample indices :func:`shard_range` gives
  it; with per-sample seeds (sample ``i`` depends on ``(seed, i)`` only) the union of the shards is
  the single-process run, sample for sample.
* **Reduction.** Accumulator states follow ``sampler_bench.metrics.base``: a plain key is a float64
  *sum* (``all_reduce``), a ``"cat:"`` key a set of rows (``all_gather``, concatenated in rank order,
  which with contiguous shards is sample order). So every rank ends with the state a single process
  would have had over all samples, up to float64 round-off in the order of the additions.
* **Failures.** A rank that raises would leave the others waiting in the next collective until the
  timeout. Every phase that can raise runs under :meth:`World.run`, which gathers each rank's
  outcome: if any rank failed, *every* rank raises :class:`DistributedError` naming the rank and its
  error. A rank that dies outright is torchrun's job (it tears the whole group down); a collective
  that breaks meanwhile (gloo: "Connection reset by peer") also raises :class:`DistributedError`,
  so a lost rank is never mistaken for a failed cell.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import traceback
from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping, Sequence, TypeVar

import torch

CAT = "cat:"
#: How long a collective waits for a silent rank before the job fails (torch's default is 30 min).
DEFAULT_TIMEOUT_S = 30 * 60

T = TypeVar("T")


class DistributedError(RuntimeError):
    """One or more ranks of a torchrun job failed; raised on every rank, with every failed rank's message."""

    def __init__(self, what: str, failures: Sequence[tuple[int, str]], world: int):
        self.what, self.failures, self.world = what, list(failures), world
        lines = [f"rank {r} of {world} failed {what}: {msg}" for r, msg in self.failures]
        super().__init__("; ".join(lines))


def backend_for(device: str | torch.device) -> str:
    """NCCL for CUDA devices, gloo for the CPU (the two backends torch ships for these)."""
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def env_world() -> tuple[int, int, int]:
    """``(world_size, rank, local_rank)`` from torchrun's environment; ``(1, 0, 0)`` without it."""

    def read(name: str, default: int) -> int:
        raw = os.environ.get(name)
        if raw is None or raw == "":
            return default
        try:
            return int(raw)
        except ValueError:
            raise ValueError(f"environment variable {name}={raw!r} is not an integer (torchrun sets it)") from None

    world, rank, local = read("WORLD_SIZE", 1), read("RANK", 0), read("LOCAL_RANK", 0)
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"inconsistent torchrun environment: RANK={rank} with WORLD_SIZE={world}")
    return world, rank, local


def shard_range(n: int, world: int, rank: int) -> tuple[int, int]:
    """Contiguous ``[start, stop)`` of ``n`` indices for ``rank`` of ``world``; sizes differ by at most one.

    The first ``n % world`` ranks get one more index. Shards are disjoint, in rank order, and cover
    ``[0, n)``; a rank may get an empty range when ``n < world``.
    """
    if n < 0 or world < 1 or not 0 <= rank < world:
        raise ValueError(f"shard_range needs n >= 0 and 0 <= rank < world, got n={n}, rank={rank}, world={world}")
    base, extra = divmod(n, world)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def _error_text(exc: BaseException) -> str:
    where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    at = f" (at {os.path.basename(where.filename)}:{where.lineno})" if where is not None else ""
    return f"{type(exc).__name__}: {exc}{at}"


@dataclass(frozen=True)
class World:
    """This process's place in the job. ``World()`` is a single process: every collective is a no-op."""

    size: int = 1
    rank: int = 0
    local_rank: int = 0
    backend: str | None = None
    device: str = "cpu"

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the only rank that writes the store, the report and checkpoints."""
        return self.rank == 0

    def shard(self, n: int) -> tuple[int, int]:
        """This rank's contiguous sample indices of ``n`` (see :func:`shard_range`)."""
        return shard_range(n, self.size, self.rank)

    def describe(self) -> str:
        return f"rank {self.rank} of {self.size} ({self.backend})" if self.distributed else "single process"

    # -- collectives (each a no-op in a world of one) -------------------------------------------
    @contextlib.contextmanager
    def _talking(self):
        """A collective that fails (another rank died, the network broke) raises :class:`DistributedError`.

        torch raises a plain RuntimeError there; left alone, a caller that tolerates errors of its own
        work (the runner storing a failed cell) would record the lost rank as the cell's failure.
        """
        try:
            yield
        except DistributedError:
            raise
        except Exception as exc:
            raise DistributedError("while exchanging data with the other ranks",
                                   [(self.rank, f"lost contact with them: another rank stopped or the network broke "
                                                f"({_error_text(exc)})")], self.size) from exc

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            with self._talking():
                dist.barrier()

    def gather_objects(self, obj: Any) -> list[Any]:
        """Every rank's ``obj`` (picklable, small), in rank order, on every rank."""
        if not self.distributed:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.size
        with self._talking():
            dist.all_gather_object(out, obj)
        return out

    def broadcast_object(self, obj: Any, src: int = 0) -> Any:
        """Rank ``src``'s ``obj`` on every rank (what the others pass is ignored)."""
        if not self.distributed:
            return obj
        import torch.distributed as dist

        box = [obj if self.rank == src else None]
        with self._talking():
            dist.broadcast_object_list(box, src=src)
        return box[0]

    def average(self, tensor: torch.Tensor) -> torch.Tensor:
        """The mean over ranks of a tensor of the same shape on every rank (a detached copy; itself in a world of one).

        Training logs (and checks) the global batch's loss with it: the mean of the ranks' mean losses.
        The tensor must be on this rank's device (a CUDA tensor under NCCL).
        """
        if not self.distributed:
            return tensor.detach()
        import torch.distributed as dist

        out = tensor.detach().clone()
        with self._talking():
            dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out / self.size

    def check(self, error: str | None, what: str) -> None:
        """Agree on failure: every rank passes its error (or None); if any rank has one, all raise."""
        if not self.distributed:
            if error is not None:
                raise DistributedError(what, [(0, error)], 1)
            return
        failures = [(r, e) for r, e in enumerate(self.gather_objects(error)) if e is not None]
        if failures:
            raise DistributedError(what, failures, self.size)

    def run(self, fn: Callable[[], T], what: str) -> T:
        """``fn()`` on this rank, then :meth:`check`: one rank's exception stops every rank together.

        In a world of one the exception propagates unchanged (no wrapping of ordinary errors).
        """
        if not self.distributed:
            return fn()
        try:
            result, error = fn(), None
        except Exception as exc:  # reported to every rank below; the original is chained on this one
            result, error, original = None, _error_text(exc), exc
        try:
            self.check(error, what)
        except DistributedError as failure:
            if error is not None:
                raise failure from original
            raise
        return result

    def main_first(self, fn: Callable[[], T], what: str) -> T:
        """``fn()`` on rank 0, then on the other ranks (rank 0 fills shared caches the others read).

        Each phase runs under :meth:`run`, so an exception on any rank stops every rank.
        """
        first = self.run(lambda: fn() if self.is_main else None, what)
        later = self.run(lambda: None if self.is_main else fn(), what)
        return first if self.is_main else later

    def reduce_state(self, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The float64 accumulator state over every rank's samples, on every rank.

        Sum keys are ``all_reduce``-d; ``"cat:"`` keys are ``all_gather``-ed and concatenated in rank
        order (rows may differ in number between ranks). Keys are processed in sorted order so every
        rank issues the same collectives.
        """
        out = {k: torch.as_tensor(v).to(torch.float64) for k, v in state.items()}
        if not self.distributed:
            return out
        keys = sorted(out)
        names = self.gather_objects(keys)
        if any(n != keys for n in names):
            raise ValueError(f"ranks hold different accumulator states: {names}; every rank must run the same metrics")
        comm = torch.device("cuda", torch.cuda.current_device()) if self.backend == "nccl" else torch.device("cpu")
        with self._talking():
            self._reduce_keys(out, keys, comm)
        return out

    def _reduce_keys(self, out: dict[str, torch.Tensor], keys: list[str], comm: torch.device) -> None:
        """:meth:`reduce_state`'s collectives, in ``keys`` order, in place in ``out``."""
        import torch.distributed as dist

        for k in keys:
            home = out[k].device
            t = out[k].to(comm).contiguous()
            if not k.startswith(CAT):
                dist.all_reduce(t, op=dist.ReduceOp.SUM)
                out[k] = t.to(home)
                continue
            rows = torch.tensor([t.shape[0]], dtype=torch.int64, device=comm)
            all_rows = [torch.zeros_like(rows) for _ in range(self.size)]
            dist.all_gather(all_rows, rows)
            counts = [int(c.item()) for c in all_rows]
            padded = torch.zeros((max(counts), *t.shape[1:]), dtype=torch.float64, device=comm)
            padded[: t.shape[0]] = t
            parts = [torch.empty_like(padded) for _ in range(self.size)]
            dist.all_gather(parts, padded)
            out[k] = torch.cat([p[:c] for p, c in zip(parts, counts)]).to(home)


class RemoteCellError(RuntimeError):
    """Another rank's share of a cell failed in a way that belongs to the cell (see :func:`run_sharded`)."""


def agree_on_failure(world: World, error: BaseException | None, *, cell_errors: tuple = (), what: str = "",
                     idle: bool = False) -> None:
    """Every rank passes its exception (or None); if any rank failed, every rank raises (a collective).

    The failure is the cell's -- one of ``cell_errors`` on any rank, or the same exception type on
    every rank that worked (``idle`` ranks had nothing to do) -- or a rank failure, as
    :func:`run_sharded` explains. In a world of one the exception propagates unchanged.
    """
    if not world.distributed:
        if error is not None:
            raise error
        return
    mine = None if error is None else {"type": type(error).__name__, "text": _error_text(error),
                                       "cell": isinstance(error, cell_errors)}
    outcomes = world.gather_objects("idle" if (idle and error is None) else mine)
    failed = [(r, o) for r, o in enumerate(outcomes) if isinstance(o, dict)]
    if not failed:
        return
    working = [o for o in outcomes if o != "idle"]
    same_everywhere = len(failed) == len(working) and len({o["type"] for _, o in failed}) == 1
    if any(o["cell"] for _, o in failed) or same_everywhere:
        if error is not None:
            raise error
        r, o = failed[0]
        raise RemoteCellError(f"rank {r} of {world.size}: {o['text']}")
    raise DistributedError(what, [(r, o["text"]) for r, o in failed], world.size) from error


def run_sharded(world: World, n: int, compute: Callable[[int, int], Any], *, cell_errors: tuple = (),
                what: str = "") -> Any:
    """Compute one cell over ``n`` samples split across the ranks; every rank gets the combined result.

    ``compute(start, stop)`` returns a shard result with the fields of :class:`~.compute.ShardResult`
    (``states``: metric name -> accumulator state, ``nfe_counted``, ``sampling_s``, ``denoiser_s``,
    ``metric_s``, ``kept``). The combined result covers ``[0, n)``: states reduced in float64
    (:meth:`World.reduce_state`), NFE lists and kept samples concatenated in rank (= sample) order,
    the cell's wall time the slowest rank's, and the denoiser time scaled so that
    ``denoiser_s / sampling_s`` is the fraction over all ranks.

    Failures are told apart so that results do not depend on the number of ranks:

    * an exception that belongs to the *cell* -- one of ``cell_errors`` (e.g. NaN samples) on any
      rank, or the same exception type on every rank that had samples (a solver or metric bug) --
      is raised on every rank: this rank's own exception where it had one, else a
      :class:`RemoteCellError` naming the rank; the runner stores the cell as failed, as a single
      process would;
    * an exception on some ranks only (memory, a device, a node's files) is a *rank failure*:
      :class:`DistributedError` on every rank, nothing is stored for the cell, a rerun resumes.
    """
    start, stop = world.shard(n)
    try:
        local, error = compute(start, stop), None
    except Exception as exc:
        local, error = None, exc
    agree_on_failure(world, error, cell_errors=cell_errors, what=what or "while computing a cell", idle=start == stop)
    if not world.distributed:
        return local

    states = {name: world.reduce_state(local.states[name]) for name in sorted(local.states)}
    parts = world.gather_objects({"nfe": list(local.nfe_counted), "sampling_s": local.sampling_s,
                                  "denoiser_s": local.denoiser_s, "metric_s": local.metric_s,
                                  "decode_s": getattr(local, "decode_s", 0.0),
                                  "solver_notes": list(getattr(local, "solver_notes", [])),
                                  "kept": None if local.kept is None else local.kept.cpu()})
    sampling = [p["sampling_s"] for p in parts]
    wall = max(sampling)
    fraction = sum(p["denoiser_s"] for p in parts) / sum(sampling) if sum(sampling) > 0 else 0.0
    kept = [p["kept"] for p in parts if p["kept"] is not None]
    return replace(local, start=0, stop=n, states=states, nfe_counted=[k for p in parts for k in p["nfe"]],
                   sampling_s=wall, denoiser_s=fraction * wall, metric_s=max(p["metric_s"] for p in parts),
                   **({"decode_s": max(p["decode_s"] for p in parts)} if hasattr(local, "decode_s") else {}),
                   **({"solver_notes": [n for p in parts for n in p["solver_notes"]]} if hasattr(local, "solver_notes") else {}),
                   kept=torch.cat(kept) if kept else None)


def init_from_env(device: str | torch.device = "cpu", timeout_s: float = DEFAULT_TIMEOUT_S) -> World:
    """Join the torchrun job described by the environment (or return a world of one).

    ``device`` picks the backend: on CUDA each rank uses ``cuda:LOCAL_RANK`` (one GPU per process,
    torchrun's convention) and NCCL; on the CPU, gloo. Calling it twice reuses the group.
    """
    size, rank, local = env_world()
    dev = torch.device(device)
    if size == 1:
        return World(device=str(dev))
    import torch.distributed as dist

    backend = backend_for(dev)
    if dev.type == "cuda":
        if not torch.cuda.is_available() or local >= torch.cuda.device_count():
            raise ValueError(f"rank {rank}: LOCAL_RANK={local} needs cuda:{local}, but this node has "
                             f"{torch.cuda.device_count()} CUDA device(s); start at most that many processes per node")
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
    elif dist.get_world_size() != size or dist.get_rank() != rank:
        raise ValueError(f"a process group of size {dist.get_world_size()} is already initialised, "
                         f"but the environment says rank {rank} of {size}")
    return World(size=size, rank=rank, local_rank=local, backend=dist.get_backend(), device=str(dev))


def shutdown(world: World) -> None:
    """Leave the process group (torchrun expects it before exit; a no-op for a world of one)."""
    if world.distributed:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
