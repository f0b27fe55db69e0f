"""Content hashes of tensors: the fingerprints that key models, reference statistics and provenance."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch


def tensor_hash(*tensors: torch.Tensor, extra: Any = None) -> str:
    """sha256 over tensor bytes (float64, contiguous) and a JSON-able extra, first 16 hex digits."""
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().to(torch.float64).contiguous().cpu().numpy().tobytes())
    if extra is not None:
        h.update(json.dumps(extra, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]
