"""CIFAR-10 (Krizhevsky 2009) from its standard python batches, values in [-1, 1].

``root`` is a folder holding ``cifar-10-batches-py/`` (``data_batch_1`` .. ``data_batch_5``,
``test_batch``) as distributed on the dataset's site. With ``download=True`` and a network, the
archive is fetched and checked by torchvision's usual ``CIFAR10(root, download=True)`` mechanism.

The batches are pickled dicts of numpy arrays; they are read with an unpickler that can build only
numpy arrays and plain containers, so a tampered file cannot run code.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import torch

from .base import Dataset

FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"

# The only globals a CIFAR batch needs: numpy's array reconstruction (numpy 1.x and 2.x names).
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),  # how Python 3 writes byte strings at pickle protocol 2
}


class _ArraysOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR-10 batch (only numpy arrays are allowed)")


def read_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [N, 3, 32, 32], labels int64 [N]) of one CIFAR-10 python batch file."""
    raw = Path(path).read_bytes()
    try:
        d = _ArraysOnlyUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError) as e:
        raise ValueError(f"{path} is not a CIFAR-10 python batch: {e}") from None
    if not isinstance(d, dict) or b"data" not in d or b"labels" not in d:
        raise ValueError(f"{path} is not a CIFAR-10 python batch (no b'data'/b'labels' entries)")
    data = np.asarray(d[b"data"], dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(f"{path}: expected data of shape [N, 3072], got {list(data.shape)}")
    return data.reshape(-1, 3, 32, 32), np.asarray(d[b"labels"], dtype=np.int64)


def cifar10(root: str = "~/.cache/sampler-bench/cifar10", download: bool = False) -> Dataset:
    base = Path(root).expanduser()
    folder = base / FOLDER
    if download and not (folder / TEST_BATCH).exists():
        from ..compat import import_torchvision

        import_torchvision().datasets.CIFAR10(str(base), train=True, download=True)
    missing = [n for n in (*TRAIN_BATCHES, TEST_BATCH) if not (folder / n).exists()]
    if missing:
        raise ValueError(f"CIFAR-10 batches not found in {str(folder)!r} (missing {', '.join(missing)}); "
                         "pass download=true with a network, or unpack cifar-10-python.tar.gz there")
    xs, ys = zip(*(read_batch(folder / n) for n in TRAIN_BATCHES))
    xt, yt = read_batch(folder / TEST_BATCH)
    return Dataset("cifar10", torch.from_numpy(np.concatenate(xs)), torch.from_numpy(xt),
                   {"name": "cifar10", "root": str(base)}, scale=2 / 255, offset=-1.0,
                   train_labels=torch.from_numpy(np.concatenate(ys)), test_labels=torch.from_numpy(yt),
                   description="CIFAR-10 32x32 RGB, 50000 train / 10000 test")
