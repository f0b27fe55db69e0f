"""Reference statistics: what a distribution metric compares the samples with, computed once and cached.

Two kinds:

* **moments** (FD): feature mean and covariance. For an analytic model whose law has closed-form
  moments (a :class:`GaussianMixture` or :class:`IsotropicGaussian`) in ``"raw"`` feature space these are
  the **exact** moments -- no sampling noise. Otherwise they are streamed (float64 sums of features and
  of feature outer products, shifted by the first chunk's mean against cancellation) over
  ``n`` reference draws.
* **features** (KID, precision/recall, SWD): ``n`` reference feature rows.

Reference draws are ``model.sample_data(chunk, generator)`` in chunks of :data:`CHUNK` from one
``torch.Generator`` seeded with :func:`derived_seed` ``(seed, "reference")`` -- derived so that the
reference data is not drawn from the same random stream as sample 0 of a sweep with the same seed --
or rows of a given data tensor (a dataset). The result is keyed by a hash of (kind, model fingerprint
or data hash, extractor fingerprint, n, seed, chunk), kept in memory for the process and, with a
``cache_dir``, on disk as ``refstats-<hash>.safetensors`` (written atomically; a content hash in the
file's metadata is checked on load). The key hash is the ``reference_hash`` recorded in provenance.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..hashing import tensor_hash
from ..processes.analytic import GaussianMixture, IsotropicGaussian

#: reference draws are requested from the model in chunks of this many samples (part of the key)
CHUNK = 8192
#: bump when the way statistics are computed changes, so old cache files are not reused
VERSION = 1

_MEMORY: dict[str, "ReferenceStats"] = {}


@dataclass
class ReferenceStats:
    kind: str  # "moments" or "features"
    tensors: dict[str, torch.Tensor]  # moments: mean [F], cov [F, F]; features: features [n, F]
    hash: str  # key hash: what the statistics are of (model/data, extractor, n, seed)
    provenance: dict[str, Any] = field(default_factory=dict)
    #: quantities derived from the tensors once per process (e.g. the covariance square root FD needs)
    derived: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)


def derived_seed(seed: int, purpose: str) -> int:
    """A 63-bit seed for ``purpose`` derived from the user's seed (sha256 of "sampler-bench/<purpose>/<seed>")."""
    digest = hashlib.sha256(f"sampler-bench/{purpose}/{int(seed)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def clear_memory_cache() -> None:
    """Forget the statistics held in this process (the disk cache is untouched)."""
    _MEMORY.clear()


def exact_moments(model) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(mean, covariance) of the model's data law in raw space when known in closed form, else None."""
    dist = getattr(model, "distribution", None)
    if isinstance(dist, GaussianMixture):
        return dist.mean.clone(), dist.covariance.clone()
    if isinstance(dist, IsotropicGaussian):
        return dist.mean.clone(), dist.std**2 * torch.eye(dist.dim, dtype=torch.float64)
    return None


def _key(**parts) -> str:
    return hashlib.sha256(json.dumps({"version": VERSION, **parts}, sort_keys=True).encode()).hexdigest()[:16]


def _model_name(model) -> str:
    return str(getattr(model, "name", type(model).__name__))


def _draws(model, data, n: int, seed: int):
    """Yield the reference draws in chunks (model.sample_data or rows of ``data``)."""
    if data is not None:
        for start in range(0, n, CHUNK):
            yield data[start: start + CHUNK]
        return
    sample_data = getattr(model, "sample_data", None)
    gen = torch.Generator().manual_seed(derived_seed(seed, "reference"))
    done = 0
    while done < n:
        m = min(CHUNK, n - done)
        batch = sample_data(m, generator=gen) if sample_data is not None else None
        if batch is None:
            raise ValueError(f"model {_model_name(model)!r} has no data attached (sample_data returned None); "
                             "pass reference_samples=<tensor of reference data> to compute reference statistics")
        if batch.shape[0] != m:
            raise ValueError(f"model {_model_name(model)!r}: sample_data({m}) returned {batch.shape[0]} samples")
        done += m
        yield batch


def _source(model, data, n: int, seed: int) -> dict[str, Any]:
    if data is not None:
        return {"source": "data tensor", "data_hash": tensor_hash(data), "n": n}
    return {"source": "model.sample_data", "model": _model_name(model), "model_fingerprint": model.fingerprint(),
            "n": n, "seed": int(seed), "chunk": CHUNK}


def _content_hash(tensors: dict[str, torch.Tensor]) -> str:
    return tensor_hash(*[tensors[k] for k in sorted(tensors)], extra=sorted(tensors))


def _load(path: Path) -> ReferenceStats | None:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception:  # unreadable or partial file: recompute and overwrite
        return None
    if meta.get("content_hash") != _content_hash(tensors):
        return None
    return ReferenceStats(meta["kind"], tensors, meta["hash"], json.loads(meta["provenance"]))


def _save(stats: ReferenceStats, path: Path) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"kind": stats.kind, "hash": stats.hash, "provenance": json.dumps(stats.provenance, sort_keys=True),
            "content_hash": _content_hash(stats.tensors)}
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file({k: v.contiguous().cpu() for k, v in stats.tensors.items()}, tmp, metadata=meta)
        os.replace(tmp, path)  # atomic: concurrent sweeps never read a half-written file
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _cached(key: str, cache_dir, compute) -> ReferenceStats:
    if key in _MEMORY:
        return _MEMORY[key]
    path = Path(cache_dir) / f"refstats-{key}.safetensors" if cache_dir is not None else None
    stats = _load(path) if path is not None and path.exists() else None
    if stats is None:
        stats = compute()
        if path is not None:
            _save(stats, path)
    _MEMORY[key] = stats
    return stats


def reference_moments(model, extractor, *, n: int, seed: int, cache_dir=None, data: torch.Tensor | None = None,
                      device="cpu") -> ReferenceStats:
    """Mean and covariance of reference features (exact for analytic laws in raw space)."""
    exact = exact_moments(model) if data is None and extractor.name == "raw" else None
    if exact is not None:
        mean, cov = exact
        key = _key(kind="moments-exact", model_fingerprint=model.fingerprint(), extractor=extractor.fingerprint)
        prov = {"reference": "exact mean and covariance of the model's analytic law (no sampling noise)",
                "source": "exact", "model": _model_name(model), "model_fingerprint": model.fingerprint(),
                "law": type(model.distribution).__name__, "reference_hash": key}
        return _cached(key, cache_dir, lambda: ReferenceStats("moments", {"mean": mean, "cov": cov}, key, prov))

    src = _source(model, data, n, seed)
    key = _key(kind="moments", extractor=extractor.fingerprint, **src)

    def compute() -> ReferenceStats:
        shift = s1 = s2 = None
        count = 0
        for batch in _draws(model, data, n, seed):
            f = extractor(batch.to(device))
            if shift is None:
                shift = f.mean(0)
                s1 = torch.zeros_like(shift)
                s2 = torch.zeros(shift.numel(), shift.numel(), dtype=torch.float64, device=f.device)
            c = f - shift
            s1 += c.sum(0)
            s2 += c.T @ c
            count += f.shape[0]
        mean_c = s1 / count
        cov = (s2 - count * torch.outer(mean_c, mean_c)) / (count - 1)
        tensors = {"mean": (mean_c + shift).cpu(), "cov": (0.5 * (cov + cov.T)).cpu()}
        prov = {"reference": f"moments of {count} reference draws", **src, "reference_hash": key}
        return ReferenceStats("moments", tensors, key, prov)

    return _cached(key, cache_dir, compute)


def reference_features(model, extractor, *, n: int, seed: int, cache_dir=None, data: torch.Tensor | None = None,
                       device="cpu") -> ReferenceStats:
    """``n`` rows of reference features (drawn from the model's data law, or the given data)."""
    src = _source(model, data, n, seed)
    key = _key(kind="features", extractor=extractor.fingerprint, **src)

    def compute() -> ReferenceStats:
        feats = torch.cat([extractor(batch.to(device)).cpu() for batch in _draws(model, data, n, seed)])
        prov = {"reference": f"features of {feats.shape[0]} reference draws", **src, "reference_hash": key}
        return ReferenceStats("features", {"features": feats}, key, prov)

    return _cached(key, cache_dir, compute)
