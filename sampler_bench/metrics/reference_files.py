"""The field's FID reference statistics: EDM-format ``.npz`` files and image folders.

EDM's ``fid.py ref`` (Karras et al., arXiv 2206.00364) and the score_sde / DPM-Solver / diff-sampler
code bases store the Inception pool-feature statistics of a data set as an ``.npz`` holding ``mu``
[2048] and ``sigma`` [2048, 2048] (mean and unbiased covariance, float64). :func:`load_npz_stats` reads
one -- with ``numpy.load(allow_pickle=False)``, so no code in the file can run -- checks it, and
returns :class:`~.refstats.ReferenceStats` whose hash is the sha256 of the file's bytes;
:func:`save_npz_stats` writes the same format (a round trip is exact).

:func:`folder_images` reads every image of a folder (PNG/JPEG/BMP/WebP, sorted by path) as EDM's
``ref --data=DIR`` does: no resizing (an image of another size is an error), uint8 values mapped to
[-1, 1] by (u - 127.5)/127.5, which the Inception extractor's EDM conversion floor(127.5 x + 128) maps
back to exactly u.
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path
from typing import Sequence

import torch

from .refstats import ReferenceStats

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


class ReferenceFileError(ValueError):
    """A reference statistics file or folder that cannot be used; the message says why."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


_LOADED: dict[tuple, ReferenceStats] = {}


def load_npz_stats(path: str | Path, dim: int | None = None) -> ReferenceStats:
    """``mu`` and ``sigma`` of an EDM-format ``.npz`` as moments reference statistics (checked; kept in
    memory per (path, mtime, size), so every cell of a sweep shares one copy and one covariance root)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ReferenceFileError(f"reference statistics {str(p)!r}: no such file")
    st = p.stat()
    key = (str(p.resolve()), st.st_mtime_ns, st.st_size)
    if key not in _LOADED:
        _LOADED[key] = _read_npz(p)
    stats = _LOADED[key]
    n = stats.tensors["mean"].numel()
    if dim is not None and n != dim:
        raise ReferenceFileError(f"reference statistics {p} are {n}-dimensional; the feature extractor gives "
                                 f"{dim} features (FID statistics are 2048-d Inception pool features)")
    return stats


def _read_npz(p: Path) -> ReferenceStats:
    import numpy as np

    try:
        with np.load(p, allow_pickle=False) as f:
            keys = set(f.files)
            if not {"mu", "sigma"} <= keys:
                raise ReferenceFileError(f"reference statistics {p}: expected arrays 'mu' and 'sigma' (EDM's fid.py "
                                         f"format), found {sorted(keys) or 'none'}")
            mu, sigma = f["mu"], f["sigma"]
    except ReferenceFileError:
        raise
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
        raise ReferenceFileError(f"reference statistics {p} is not a readable .npz file ({type(e).__name__}: {e})") from None
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise ReferenceFileError(f"reference statistics {p}: 'mu' has shape {list(mu.shape)} and 'sigma' {list(sigma.shape)}; "
                                 "expected [F] and [F, F]")
    if mu.dtype.kind != "f" or sigma.dtype.kind != "f":
        raise ReferenceFileError(f"reference statistics {p}: 'mu'/'sigma' must be floating arrays, got {mu.dtype}/{sigma.dtype}")
    mean, cov = torch.from_numpy(mu.astype("float64")), torch.from_numpy(sigma.astype("float64"))
    if not (torch.isfinite(mean).all() and torch.isfinite(cov).all()):
        raise ReferenceFileError(f"reference statistics {p} contain NaN or inf")
    if not torch.allclose(cov, cov.T, rtol=1e-6, atol=1e-8 * float(cov.abs().max()) + 1e-12):
        raise ReferenceFileError(f"reference statistics {p}: 'sigma' is not symmetric, so it is not a covariance")
    digest = _sha256(p)
    prov = {"reference": f"EDM-format statistics file {p.name}", "source": "npz", "file": str(p),
            "file_sha256": digest, "reference_hash": digest[:16]}
    return ReferenceStats("moments", {"mean": mean, "cov": cov}, digest[:16], prov)


def save_npz_stats(path: str | Path, mean: torch.Tensor, cov: torch.Tensor) -> Path:
    """Write ``mu`` / ``sigma`` (float64) as EDM's ``fid.py ref`` does."""
    import numpy as np

    p = Path(path).expanduser()
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "wb") as f:
        np.savez(f, mu=mean.detach().to(torch.float64).cpu().numpy(), sigma=cov.detach().to(torch.float64).cpu().numpy())
    return p


def folder_images(path: str | Path, shape: Sequence[int]) -> torch.Tensor:
    """Every image under ``path`` as a float32 tensor [n, C, H, W] in [-1, 1] (sizes must match ``shape``)."""
    from PIL import Image

    root = Path(path).expanduser()
    if not root.is_dir():
        raise ReferenceFileError(f"reference folder {str(root)!r} does not exist or is not a directory")
    c, h, w = (int(s) for s in shape)
    if c not in (1, 3):
        raise ReferenceFileError(f"reference folder: images need 1 or 3 channels; the model's samples have shape {list(shape)}")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if len(files) < 2:
        raise ReferenceFileError(f"reference folder {root} holds {len(files)} images ({', '.join(IMAGE_SUFFIXES)}); need at least 2")
    out = torch.empty((len(files), c, h, w), dtype=torch.float32)
    for i, f in enumerate(files):
        with Image.open(f) as im:
            if im.size != (w, h):
                raise ReferenceFileError(f"reference folder: {f} is {im.size[0]}x{im.size[1]}, the samples are {w}x{h}; "
                                         "FID compares images at one resolution (resize the data set once, as EDM's dataset_tool does)")
            u8 = torch.frombuffer(bytearray(im.convert("L" if c == 1 else "RGB").tobytes()), dtype=torch.uint8)
        out[i] = (u8.reshape(h, w, c).permute(2, 0, 1).to(torch.float32) - 127.5) / 127.5
    return out


__all__ = ["load_npz_stats", "save_npz_stats", "folder_images", "ReferenceFileError"]
