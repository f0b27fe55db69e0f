"""The noise floor: what each metric reads for *exact* samples of the same size.

A metric computed from n samples is not 0 for a perfect sampler: a Fréchet distance of n exact draws
is ~tr(C)/n, a sliced Wasserstein distance has its own O(n^-1/2) floor. A sampler whose value lies
inside the floor cannot be told apart from exact sampling at this sample count, so the report draws
the floor as a band and marks such values. For each model, sample count and seed the floor is the
metric (with its bootstrap interval, :mod:`sampler_bench.metrics.uncertainty`) of ``n`` draws that
share nothing with the reference statistics: ``model.floor_data`` where the model has it (trained
models: rows of the dataset split the reference does not read, disjoint by construction), else
``model.sample_data`` (analytic models: fresh exact draws of the law, whose reference moments are
exact or drawn from another generator). Models without data have no floor. Draws come in fixed chunks of
:data:`CHUNK` rows from generators keyed on (seed, chunk), so the floor depends on (seed, n) only,
not on the batch size; the rows carry the sample indices 0..n-1 like a cell's samples.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Callable

import torch

#: rows drawn per generator (the floor is a function of (seed, n) for any batch size)
CHUNK = 1000


def floor_id(model_hash: str, metric_definition: dict, n_samples: int, seed: int) -> str:
    text = json.dumps({"model_hash": model_hash, "metric": metric_definition, "n": n_samples, "seed": seed,
                       # v2: trained models' floor rows come from the split the reference does not read
                       "kind": "exact-samples-floor", "version": 2}, sort_keys=True, default=list)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def exact_samples(model, n: int, seed: int, start: int, stop: int) -> torch.Tensor | None:
    """Rows ``[start, stop)`` of the floor's exact sample set (None when the model has no data law)."""
    sample = getattr(model, "floor_data", None) or getattr(model, "sample_data", None)
    if sample is None:
        return None
    out = []
    for a in range(start - start % CHUNK, stop, CHUNK):
        g = torch.Generator().manual_seed(int.from_bytes(hashlib.sha256(f"floor:{seed}:{a}".encode()).digest()[:8], "little") >> 1)
        rows = sample(min(CHUNK, n - a), generator=g)
        if rows is None:
            return None
        lo, hi = max(start, a) - a, min(stop, a + CHUNK) - a
        out.append(rows[lo:hi])
    return torch.cat(out) if out else None


def noise_floor(model, make: Callable[[], Any], n: int, seed: int, batch_size: int, confidence: float = 0.95):
    """The estimates ({key: Estimate}) and provenance of one metric on ``n`` exact samples, or None."""
    acc = make()
    for a in range(0, n, batch_size):
        b = min(a + batch_size, n)
        x = exact_samples(model, n, seed, a, b)
        if x is None:
            return None
        acc.update(x.to(torch.float64), index=a)
    prov = dict(acc.provenance)
    source = "floor_data" if getattr(model, "floor_data", None) is not None else "sample_data"
    prov["floor"] = (f"model.{source}: exact samples of the model's law (analytic models) or rows of the dataset "
                     "split its reference statistics do not read (trained models), drawn in chunks of "
                     f"{CHUNK} keyed on (seed, chunk)")
    return acc.estimates(confidence), prov
