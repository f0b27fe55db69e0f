"""scikit-learn's bundled 8x8 handwritten digits (1797 images, UCI ML digits test set), offline.

Pixel values 0..16 are mapped to [-1, 1] (x/8 - 1). The split is fixed by position: every sixth
image (index % 6 == 5) is held out, which gives 299 test and 1498 training images with every class
present in both, independent of any random generator or library version.
"""

from __future__ import annotations

import torch

from .base import Dataset

TEST_EVERY = 6


def digits(flatten: bool = False) -> Dataset:
    """The digits as [1, 8, 8] images (``flatten=True``: 64-vectors for the MLP)."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:  # pragma: no cover - scikit-learn is a dependency
        raise ValueError("the digits dataset needs scikit-learn: pip install scikit-learn") from None
    d = load_digits()
    x = torch.as_tensor(d.data, dtype=torch.float32)
    labels = torch.as_tensor(d.target, dtype=torch.long)
    x = x if flatten else x.reshape(-1, 1, 8, 8)
    test = torch.arange(x.shape[0]) % TEST_EVERY == TEST_EVERY - 1
    return Dataset("digits", x[~test], x[test], {"name": "digits", "flatten": flatten}, scale=1 / 8, offset=-1.0,
                   train_labels=labels[~test], test_labels=labels[test],
                   description="sklearn 8x8 digits in [-1, 1]; every 6th image held out")
