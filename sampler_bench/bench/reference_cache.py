"""Reference endpoints of the probability-flow ODE, computed once per sweep setting and cached on disk.

The endpoint error of a deterministic sampler compares each of its samples with the exact ODE
solution from the *same* initial noise (docs/solvers.md, "Reference integrators"). That solution comes from the
adaptive float64 DOP853 solver registered as ``'reference'``; it is the slowest part of a sweep on
analytic models, so it is computed once per (model fingerprint, seed, sample-index range, sigma
range, ending, reference tolerances) and kept next to the results store as safetensors files,
which every cell of this sweep (and of later sweeps into the same directory) reuses.

Samples are cached in fixed chunks of sample indices ``[kC, min((k+1)C, n))``: a chunk's content
depends only on the seeds it covers (DOP853's error control runs over the whole chunk, so the chunk
grid is fixed and never depends on the batch size or the number of ranks).

Memory: with a cache directory, at most ``max_chunks`` chunks stay in memory (least recently used
first out); the others are read back from disk when a cell needs them again. Without a directory the
in-memory store is the only one and keeps every chunk.

Ranks (``torchrun``): every chunk is integrated by exactly one rank, its *owner* -- the rank whose
sample shard holds the chunk's first index. A chunk that straddles a shard boundary is computed by its
owner before the cell, and its rows that belong to later ranks are broadcast to them
(:meth:`ReferenceCache.for_rank`); no rank reads another rank's files, so node-local cache
directories work. Why not align the shards to whole chunks instead: that moves the imbalance into
*every* deterministic cell (the slowest rank samples up to one chunk more -- 2048 instead of 1250
samples for n = 10k on 8 ranks with 1024-sample chunks, +64%; 7168 instead of 6250 for n = 50k,
+15%), while the reference is integrated once per setting. Here the sample shards stay balanced to
one sample; the reference work per rank differs by at most one chunk (the owned chunks of two ranks
differ by at most one); the price is one broadcast per straddling chunk (at most ``world - 1``, each
at most ``C - 1`` rows) per cell.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import os
import tempfile
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from ..models.guidance import Conditioned
from ..processes.catalog import KINDS
from ..solvers.driver import CountingDenoiser, run_solver
from ..solvers.registry import info as solver_info
from .distributed import World, agree_on_failure, shard_range

#: Samples per cached chunk (one adaptive DOP853 solve per chunk; its error control is per chunk).
DEFAULT_CHUNK = 1024
#: Chunks kept in memory when there is a cache directory: a cell reads its chunks in index order, so
#: two suffice for batches that cross a chunk boundary; a few more spare re-reads for nearby ranges.
#: ~25 MB per 1024-sample chunk of CIFAR-10-size float64 endpoints.
DEFAULT_MAX_CHUNKS = 4


def reference_solver(process: str) -> str:
    """The adaptive yardstick a process declares (``ProcessKind.reference_solver``): ``'reference'`` (the
    sigma ODE of Gaussian and PFGM++ kernels), ``'cld_reference'`` (CLD's ODE in t on the state u = (x, v))."""
    kind = KINDS.get(str(process))
    if kind is None:
        raise ValueError(f"no adaptive reference integrator is registered for {process!r} processes, "
                         "so endpoint errors cannot be measured on this model")
    return kind.reference_solver


# ---------------------------------------------------------------------------------------------
# Which rank integrates which chunk (pure functions of n, world size and chunk size).


@dataclass(frozen=True)
class SplitChunk:
    """A chunk ``[start, stop)`` whose rows belong to more than one rank's shard: rank ``owner`` (whose
    shard holds ``start``) integrates it and sends rows ``[cut, stop)`` (``cut`` = the end of its shard)."""

    start: int
    stop: int
    owner: int
    cut: int


def owned_chunks(n: int, world: int, rank: int, chunk: int) -> range:
    """Indices ``k`` of the chunks ``rank`` integrates: those whose first sample ``k * chunk`` is in its shard."""
    start, stop = shard_range(n, world, rank)
    return range(-(-start // chunk), -(-stop // chunk)) if start < stop else range(0)


def split_chunks(n: int, world: int, chunk: int) -> list[SplitChunk]:
    """The chunks of ``[0, n)`` that straddle a shard boundary, in index order (the same list on every rank)."""
    if chunk < 1:
        raise ValueError(f"chunk must be a positive number of samples, got {chunk}")
    stops = [shard_range(n, world, r)[1] for r in range(world)]
    out = []
    for a in range(0, n, chunk):
        b = min(a + chunk, n)
        owner = bisect.bisect_right(stops, a)  # the first rank whose shard ends after a (empty shards skipped)
        if stops[owner] < b:
            out.append(SplitChunk(a, b, owner, stops[owner]))
    return out


# ---------------------------------------------------------------------------------------------
# The cache.


@dataclass(frozen=True, eq=False)
class ReferenceTarget:
    """What one setting's reference endpoints are: ``solver`` (with ``options``) integrates ``model``
    from ``initial(a, b)`` (the float64 starting states of samples ``[a, b)`` at ``sigma_max``, drawn
    exactly as the cells draw them) down to ``sigma_min`` (and on to 0 when ``ends_at_zero``), for
    samples ``[0, n_samples)``. ``key`` is :meth:`ReferenceCache.key` of that setting: the cache
    files' name."""

    model: Callable
    key: str
    n_samples: int
    initial: Callable[[int, int], torch.Tensor]
    sigma_min: float
    sigma_max: float
    ends_at_zero: bool
    solver: str = "reference"
    options: Mapping[str, Any] = field(default_factory=dict)
    #: ``labels(a, b)``: the class labels of samples ``[a, b)`` of a class-conditional model, the same
    #: labels its cells draw (None: an unconditional model)
    labels: Callable[[int, int], torch.Tensor] | None = None


class ReferenceCache:
    """Reference endpoints on disk under ``directory``, at most ``max_chunks`` of them in memory.

    With ``directory=None`` the in-memory store is the only one: it keeps *every* chunk for the life
    of the object (``max_chunks`` does not apply), as tests and one-off uses want.
    ``computed`` counts the chunks this object had to integrate (tests use it to prove reuse).
    """

    def __init__(self, directory: str | os.PathLike | None, chunk: int = DEFAULT_CHUNK,
                 max_chunks: int = DEFAULT_MAX_CHUNKS):
        if int(chunk) < 1 or int(max_chunks) < 1:
            raise ValueError(f"ReferenceCache needs chunk >= 1 and max_chunks >= 1, got chunk={chunk}, "
                             f"max_chunks={max_chunks}")
        self.directory = Path(directory) if directory is not None else None
        self.chunk = int(chunk)
        self.max_chunks = int(max_chunks)
        self.computed = 0
        self._memory: OrderedDict[str, torch.Tensor] = OrderedDict()  # least recently used first

    @property
    def held_chunks(self) -> int:
        """Chunks in memory now (at most ``max_chunks`` with a directory)."""
        return len(self._memory)

    @property
    def held_bytes(self) -> int:
        """Bytes of endpoints in memory now."""
        return sum(t.numel() * t.element_size() for t in self._memory.values())

    @staticmethod
    def key(model_hash: str, seed: int, sigma_min: float, sigma_max: float, ends_at_zero: bool,
            device_type: str = "cpu", options: Mapping[str, Any] | None = None, solver: str = "reference") -> str:
        """Hash of everything the reference endpoints depend on (besides the index range); the device
        type matters because per-sample generators on CUDA and on the CPU draw different noise.
        ``options``: the reference solver's options (tolerances), validated with defaults filled in;
        ``solver``: which yardstick (:func:`reference_solver` of the model's process)."""
        ref_options = solver_info(solver).validate(dict(options or {}))
        payload = {
            "model_hash": model_hash, "seed": int(seed), "sigma_min": float(sigma_min), "sigma_max": float(sigma_max),
            "ends_at_zero": bool(ends_at_zero), "reference_options": ref_options, "device_type": device_type,
            "format": 1,
        }
        if solver != "reference":  # named only when not the default, so existing cache keys stay valid
            payload["solver"] = solver
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    def endpoints(self, target: ReferenceTarget, start: int, stop: int,
                  on_compute: Callable[[int, int], Any] | None = None) -> torch.Tensor:
        """Float64 endpoints of ``target``'s samples ``[start, stop)`` (all below ``target.n_samples``).

        ``on_compute(a, b)`` is called before a chunk is integrated.
        """
        if not 0 <= start < stop <= target.n_samples:
            raise ValueError(f"bad sample range [{start}, {stop}) for {target.n_samples} samples")
        parts = []
        first, last = start // self.chunk, (stop - 1) // self.chunk
        for k in range(first, last + 1):
            a, b = k * self.chunk, min((k + 1) * self.chunk, target.n_samples)
            block = self._chunk(target, a, b, on_compute)
            lo, hi = max(start, a) - a, min(stop, b) - a
            parts.append(block[lo:hi])
        return torch.cat(parts)

    def for_rank(
        self,
        world: World,
        target: ReferenceTarget,
        on_compute: Callable[[int, int], Any] | None = None,
        cell_errors: tuple = (),
        what: str = "while computing reference endpoints",
    ) -> Callable[[int, int], torch.Tensor]:
        """``get(a, b)``: the endpoints of samples ``[a, b)`` inside this rank's shard of
        ``target.n_samples`` (:meth:`World.shard`), as :meth:`endpoints` returns them.

        In a world of one this is :meth:`endpoints`, lazily. Under torchrun every rank must call it for
        the same cell at the same point (it holds collectives): each rank first integrates the straddling
        chunk it owns (:func:`split_chunks`), then each such chunk's rows past its owner's shard are
        broadcast and the ranks that need them keep them (at most ``chunk - 1`` rows, for this cell).
        Chunks wholly inside the shard are integrated lazily by ``get``, as in a single process. A rank
        waits in the broadcast while an owner integrates (within the process group's timeout,
        :data:`~.distributed.DEFAULT_TIMEOUT_S`), as it waits for a slower rank at the end of a cell.

        A failure while integrating is agreed on by :func:`~.distributed.agree_on_failure`, as a cell's
        samples are: one of ``cell_errors`` (e.g. NaN endpoints) fails the cell on every rank; a failure
        on some ranks only is a rank failure, :class:`~.distributed.DistributedError` on every rank.
        """
        limit = target.n_samples

        def fetch(a: int, b: int) -> torch.Tensor:
            return self.endpoints(target, a, b, on_compute)

        if not world.distributed:
            return fetch
        start, stop = world.shard(limit)
        splits = split_chunks(limit, world.size, self.chunk)
        sent, error = {}, None
        try:  # before any collective, so that the owners integrate their chunks in parallel
            for s in splits:
                if s.owner == world.rank:
                    block = self._chunk(target, s.start, s.stop, on_compute)
                    sent[s.start] = block[s.cut - s.start:].clone()  # a view would pickle the whole chunk
        except Exception as exc:
            error = exc
        # no rank counts as idle: an error on the owners only (e.g. one disk) is a rank failure
        agree_on_failure(world, error, cell_errors=cell_errors, what=what)
        foreign = None
        for s in splits:
            mine = s.owner == world.rank
            rows = world.broadcast_object(sent[s.start] if mine else None, src=s.owner)
            lo, hi = max(start, s.cut), min(stop, s.stop)
            if not mine and lo < hi:  # this rank's shard starts inside this chunk
                foreign = rows[lo - s.cut: hi - s.cut].clone()
        if foreign is None:
            return fetch
        own_from = start + foreign.shape[0]  # a chunk boundary (or the end of the shard)

        def get(a: int, b: int) -> torch.Tensor:
            lo, hi = max(a, start), min(b, own_from)
            if lo >= hi:
                return fetch(a, b)
            parts = [fetch(a, lo)] if a < lo else []
            parts.append(foreign[lo - start: hi - start])
            if hi < b:
                parts.append(fetch(hi, b))
            return torch.cat(parts) if len(parts) > 1 else parts[0]

        return get

    def _path(self, key: str, a: int, b: int) -> Path | None:
        return self.directory / f"reference-{key}-{a}-{b}.safetensors" if self.directory is not None else None

    def _remember(self, name: str, block: torch.Tensor) -> torch.Tensor:
        self._memory[name] = block
        self._memory.move_to_end(name)
        if self.directory is not None:  # with a disk copy, memory holds only the most recent chunks
            while len(self._memory) > self.max_chunks:
                self._memory.popitem(last=False)
        return block

    def _chunk(self, target: ReferenceTarget, a: int, b: int, on_compute=None) -> torch.Tensor:
        key = target.key
        name = f"{key}-{a}-{b}"
        if name in self._memory:
            self._memory.move_to_end(name)
            return self._memory[name]
        path = self._path(key, a, b)
        if path is not None and path.exists():
            from safetensors.torch import load_file

            try:
                block = load_file(str(path))["endpoints"]
            except Exception:  # a truncated file from a killed run: recompute it below
                block = None
            if block is not None and block.shape[0] == b - a and block.dtype == torch.float64:
                return self._remember(name, block)
        if on_compute is not None:
            on_compute(a, b)
        x = target.initial(a, b).to(torch.float64)
        levels = [target.sigma_max, target.sigma_min] + ([0.0] if target.ends_at_zero else [])
        sigmas = torch.tensor(levels, dtype=torch.float64)
        model = target.model
        if target.labels is not None:  # a class-conditional model: each sample's ODE under its own label
            model = Conditioned(model, target.labels(a, b).to(x.device))
        block = run_solver(target.solver, CountingDenoiser(model), x, sigmas, options=dict(target.options))
        block = block.detach().to("cpu", torch.float64)
        self.computed += 1
        if path is not None:
            self._write(path, block, key)
        return self._remember(name, block)

    @staticmethod
    def _write(path: Path, block: torch.Tensor, key: str) -> None:
        from safetensors.torch import save_file

        path.parent.mkdir(parents=True, exist_ok=True)
        # Write then rename: a reader (another sweep on the same directory) never sees half a file.
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        os.close(fd)
        try:
            save_file({"endpoints": block.contiguous()}, tmp, metadata={"key": key})
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
