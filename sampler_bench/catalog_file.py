"""The catalogue shipped with the package (``assets/catalog.json``): reading it, and the fingerprint
of the sources it must have been built from. Pure standard library, so that ``sampler-bench list`` and
the spec checks of names can use it before (or without) importing torch; building and writing it is
:mod:`sampler_bench.catalog`'s job.
"""

from __future__ import annotations

import functools
import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import Any

#: where the shipped catalogue lies inside the package
CATALOG_FILE = "assets/catalog.json"
#: bump when the catalogue's layout changes
FORMAT = 1


def package_root() -> Path:
    return Path(str(resources.files("sampler_bench")))


def source_fingerprint() -> str:
    """SHA-256 over the package's Python sources and built-in specs (paths and contents), the inputs
    the catalogue is a function of; a few milliseconds, no imports."""
    root = package_root()
    h = hashlib.sha256(f"catalog format {FORMAT}".encode())
    for p in sorted([*root.rglob("*.py"), *(root / "specs").glob("*.toml")]):
        if "__pycache__" in p.parts:
            continue
        h.update(p.relative_to(root).as_posix().encode() + b"\0")
        h.update(p.read_bytes() + b"\0")
    return h.hexdigest()


@functools.lru_cache(maxsize=1)
def shipped() -> dict[str, Any] | None:
    """The shipped catalogue, or None when it is missing, unreadable or built from other sources
    (then the live registries are the truth: callers fall back to them)."""
    try:
        data = json.loads((package_root() / CATALOG_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("fingerprint") != source_fingerprint():
        return None
    return data.get("catalog")
