"""The orthonormal 2-D DCT-II over the last two axes of an image batch, the frequency basis in which
blurring diffusion is diagonal (Hoogeboom & Salimans, arXiv 2209.05557, §3: u = V^T x with V^T the DCT).

The transform is a pair of small dense matrices (built once per image side with ``scipy.fft.dct`` on the
identity) applied by ``einsum``: for the 8x8 to 32x32 images sampler-bench trains this is as fast as an
FFT and runs on any torch device and dtype.
"""

from __future__ import annotations

import functools

import numpy as np
import scipy.fft
import torch


@functools.lru_cache(maxsize=16)
def dct_matrix(n: int) -> np.ndarray:
    """The n x n orthonormal DCT-II matrix D (float64): ``D @ x`` is ``scipy.fft.dct(x, norm='ortho')``."""
    if n < 1:
        raise ValueError(f"a DCT needs a positive length, got {n}")
    return scipy.fft.dct(np.eye(n), norm="ortho", axis=0)


def _matrices(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if x.ndim < 2:
        raise ValueError(f"the 2-D DCT acts on the last two axes (H, W); got a tensor of shape {tuple(x.shape)}")
    h, w = x.shape[-2], x.shape[-1]
    kw = dict(dtype=x.dtype, device=x.device)
    return torch.as_tensor(dct_matrix(h), **kw), torch.as_tensor(dct_matrix(w), **kw)


def dct2(x: torch.Tensor) -> torch.Tensor:
    """Orthonormal 2-D DCT-II of the last two axes (pixel space -> frequency space)."""
    dh, dw = _matrices(x)
    return torch.einsum("ih,...hw,jw->...ij", dh, x, dw)


def idct2(u: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`dct2` (its transpose: the matrices are orthogonal)."""
    dh, dw = _matrices(u)
    return torch.einsum("ih,...ij,jw->...hw", dh, u, dw)


def frequencies(h: int, w: int) -> np.ndarray:
    """lambda_ij = (pi i / H)^2 + (pi j / W)^2, the Laplacian eigenvalue of DCT basis function (i, j)
    (Hoogeboom & Salimans eq. 9; heat dissipation for time tau multiplies coefficient (i, j) by
    exp(-lambda_ij tau)). Shape [H, W], float64."""
    fi = (np.pi * np.arange(h) / h) ** 2
    fj = (np.pi * np.arange(w) / w) ** 2
    return fi[:, None] + fj[None, :]
