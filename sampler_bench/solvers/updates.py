"""Tensor updates shared by several solver families (kept here so no family imports another)."""

from __future__ import annotations

from typing import Sequence

import torch


def lincomb(terms: Sequence[tuple[float, torch.Tensor]]) -> torch.Tensor:
    """``sum(c * t)`` over ``(Python float c, tensor t)`` pairs, never modifying an input.

    One kernel per term (the first product out of place, the rest ``add_`` into it); a coefficient
    of exactly 0 is skipped and a leading coefficient of exactly 1 costs no multiplication.
    """
    terms = [(c, t) for c, t in terms if c != 0.0]
    (c0, t0), rest = terms[0], terms[1:]
    if not rest:
        return t0 * c0
    c1, t1 = rest[0]
    out = torch.add(t0 if c0 == 1.0 else t0 * c0, t1, alpha=c1)
    for c, t in rest[1:]:
        out.add_(t, alpha=c)
    return out


def first_order_update(x: torch.Tensor, denoised: torch.Tensor, sigma: float, sigma_next: float) -> torch.Tensor:
    """DPM-Solver-1 = DPM-Solver++(1) = DDIM = Euler in (xh, sigma) (docs/solvers.md, euler).

    ``(s'/s) x + (1 - s'/s) D`` as a single lerp; onto sigma = 0 it is the denoise ``D`` itself.
    """
    if denoised.dtype != x.dtype:  # e.g. a half-precision network under autocast: keep the state's dtype
        denoised = denoised.to(x.dtype)
    if sigma_next == 0.0:
        return denoised
    return torch.lerp(denoised, x, sigma_next / sigma)
