"""Geometry of sampling trajectories: deviation from the chord, curvature, turning angles, a 3-D view.

Chen et al., "A Geometric Perspective on Diffusion Models" (arXiv 2305.19947, Sec. 3.1, Fig. 2-3) measure
how far a probability-flow ODE trajectory x_T -> x_0 strays from the straight line (the *chord*) between
its ends: the deviation of a point p is its perpendicular distance to the line through x_T and x_0,

    dev(p) = | (p - x_0) - ((p - x_0) . u) u |,   u = (x_T - x_0) / |x_T - x_0|,

for the sampling trajectory {x_i} and for the denoising trajectory {D(x_i, sigma_i)} alike. Every function
here is pure and batched: a path is a tensor ``[B, K, d]`` (K points of dimension d per sample), float64.

* :func:`chord_deviation` -- the deviation above of every point, ``[B, K]``.
* :func:`turning_angles` -- the angle between successive steps p_{k+1} - p_k and p_{k+2} - p_{k+1}
  (0 on a straight path), computed with Kahan's 2 atan2(|a' - b'|, |a' + b'|) for unit vectors a', b',
  accurate for tiny angles where acos of a dot product is not.
* :func:`menger_curvature` -- the curvature of the circle through three successive points,
  kappa = 2 sin(theta) / |p_{k+2} - p_k| (theta the turning angle): exactly 1/R for points on a circle of
  radius R, 0 on a line.
* :func:`chord_frame` -- coordinates for pictures of a path in high dimension: along the chord, then the top
  two principal directions of the path's component orthogonal to the chord (the projection of Chen et al.'s
  follow-up, arXiv 2405.11326, Sec. 3).
"""

from __future__ import annotations

import torch


def _flat(path: torch.Tensor) -> torch.Tensor:
    return path.reshape(path.shape[0], path.shape[1], -1).to(torch.float64)


def chord_deviation(points: torch.Tensor, start: torch.Tensor, end: torch.Tensor) -> torch.Tensor:
    """Perpendicular distance ``[B, K]`` of each of ``points`` ``[B, K, ...]`` to the line through
    ``start`` and ``end`` ``[B, ...]`` (NaN where the two ends coincide: no chord)."""
    p = _flat(points)
    a = start.reshape(start.shape[0], -1).to(torch.float64)[:, None]
    b = end.reshape(end.shape[0], -1).to(torch.float64)[:, None]
    chord = a - b
    length = chord.norm(dim=-1, keepdim=True)
    u = chord / length
    rel = p - b
    perp = rel - (rel * u).sum(-1, keepdim=True) * u
    return perp.norm(dim=-1)


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm(dim=-1, keepdim=True)


def turning_angles(path: torch.Tensor) -> torch.Tensor:
    """Angle in radians ``[B, K-2]`` between successive steps of ``path`` ``[B, K, ...]`` (NaN at a step of
    length 0, where there is no direction)."""
    p = _flat(path)
    steps = p[:, 1:] - p[:, :-1]
    a, b = _unit(steps[:, :-1]), _unit(steps[:, 1:])
    return 2.0 * torch.atan2((a - b).norm(dim=-1), (a + b).norm(dim=-1))


def menger_curvature(path: torch.Tensor) -> torch.Tensor:
    """Curvature ``[B, K-2]`` of the circle through each three successive points of ``path`` ``[B, K, ...]``."""
    p = _flat(path)
    span = (p[:, 2:] - p[:, :-2]).norm(dim=-1)
    return 2.0 * torch.sin(turning_angles(path)) / span


def step_lengths(path: torch.Tensor) -> torch.Tensor:
    """|p_{k+1} - p_k| ``[B, K-1]``."""
    p = _flat(path)
    return (p[:, 1:] - p[:, :-1]).norm(dim=-1)


def chord_frame(path: torch.Tensor, start: torch.Tensor, end: torch.Tensor, *others: torch.Tensor,
                components: int = 2) -> list[torch.Tensor]:
    """Coordinates ``[B, K, 1 + components]`` of ``path`` (and of each of ``others``, paths of the same
    samples) in the frame of each sample's chord: the first is the distance from ``start`` along the chord
    towards ``end``; the others are along the top principal directions (uncentred, through ``start``) of
    ``path``'s part orthogonal to the chord. A path in two dimensions is returned as it is instead."""
    p = _flat(path)
    rest = [_flat(o) for o in others]
    if p.shape[-1] <= 2:
        return [p, *rest]
    a = start.reshape(start.shape[0], -1).to(torch.float64)[:, None]
    u = _unit(end.reshape(end.shape[0], -1).to(torch.float64)[:, None] - a)

    def along(q):
        return ((q - a) * u).sum(-1, keepdim=True)

    ortho = (p - a) - along(p) * u
    # right singular vectors of the orthogonal parts: the directions the path strays in most
    _, _, vh = torch.linalg.svd(ortho, full_matrices=False)
    basis = vh[:, :components]  # [B, c, d]
    out = []
    for q in (p, *rest):
        rel = q - a
        out.append(torch.cat([along(q), (rel - along(q) * u) @ basis.transpose(1, 2)], -1))
    return out
