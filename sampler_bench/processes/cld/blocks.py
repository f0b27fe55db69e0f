"""Linear algebra of CLD's 2x2 blocks: every matrix of the process acts on the (x, v) pair of each data
coordinate (Kronecker product with I_d), so coefficients are 2x2 (float64 numpy) and are applied to
states u of shape [B, 2, *data_shape] (x = u[:, 0], v = u[:, 1]).
"""

from __future__ import annotations

import numpy as np
import torch

# ---------------------------------------------------------------------------------------------
# 2x2 matrix helpers (float64 numpy for coefficients, torch for applying them to states)
# ---------------------------------------------------------------------------------------------


def inv2(m: np.ndarray) -> np.ndarray:
    """Inverse of (a stack of) 2x2 matrices in closed form."""
    a, b, c, d = m[..., 0, 0], m[..., 0, 1], m[..., 1, 0], m[..., 1, 1]
    det = a * d - b * c
    out = np.empty_like(m)
    out[..., 0, 0], out[..., 0, 1], out[..., 1, 0], out[..., 1, 1] = d / det, -b / det, -c / det, a / det
    return out


def chol2(s: np.ndarray) -> np.ndarray:
    """Lower Cholesky factor of (a stack of) symmetric positive-definite 2x2 matrices."""
    l11 = np.sqrt(s[..., 0, 0])
    l21 = s[..., 1, 0] / l11
    out = np.zeros_like(s)
    out[..., 0, 0], out[..., 1, 0], out[..., 1, 1] = l11, l21, np.sqrt(s[..., 1, 1] - l21**2)
    return out


def psd_sqrt2(p: np.ndarray) -> np.ndarray:
    """Symmetric square root of a PSD 2x2 matrix; robust when it is (nearly) singular, unlike Cholesky."""
    lam, vec = np.linalg.eigh(0.5 * (p + np.swapaxes(p, -1, -2)))
    return (vec * np.sqrt(np.clip(lam, 0.0, None))[..., None, :]) @ np.swapaxes(vec, -1, -2)


def apply2(mat, u: torch.Tensor) -> torch.Tensor:
    """Apply a 2x2 matrix (or one per sample, [B, 2, 2]) to every (x, v) pair of ``u`` [B, 2, ...]."""
    m = torch.as_tensor(mat, dtype=u.dtype, device=u.device)
    if m.ndim == 2:
        return torch.einsum("ij,bj...->bi...", m, u)
    return torch.einsum("bij,bj...->bi...", m, u)


def stack_state(x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """u = (x, v) in the layout [B, 2, *data_shape]."""
    return torch.stack([x, v], dim=1)


def split_state(u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, v) = (u[:, 0], u[:, 1])."""
    if u.ndim < 2 or u.shape[1] != 2:
        raise ValueError(f"a CLD state must have shape [B, 2, *data_shape] (x = u[:, 0], v = u[:, 1]); got {tuple(u.shape)}")
    return u[:, 0], u[:, 1]
