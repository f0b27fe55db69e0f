"""Checks and finishing shared by every schedule builder (:mod:`.schedules`, :mod:`.field_schedules`):
argument validation, the ramp of positions, and the trailing zero with the strictly-decreasing check."""

from __future__ import annotations

import math

import torch


def _check(n: int, sigma_min: float, sigma_max: float) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"the number of steps n must be an integer >= 1, got {n!r}")
    for name, v in (("sigma_min", sigma_min), ("sigma_max", sigma_max)):
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v <= 0:
            raise ValueError(f"{name} must be a positive finite number, got {v!r}")
    if sigma_min >= sigma_max:
        raise ValueError(f"sigma_min ({sigma_min}) must be smaller than sigma_max ({sigma_max})")


def _finish(levels: torch.Tensor, append_zero: bool) -> torch.Tensor:
    levels = levels.to(torch.float64)
    if append_zero:
        levels = torch.cat([levels, levels.new_zeros(1)])
    if not (levels[1:] < levels[:-1]).all():
        raise ValueError(
            "the schedule is not strictly decreasing at float64 precision "
            "(too many steps for this sigma range); use fewer steps or a wider range"
        )
    return levels


def _ramp(n: int, append_zero: bool) -> torch.Tensor:
    """Positions in [0, 1] of the positive levels: n of them with a trailing 0, else n + 1."""
    count = n if append_zero else n + 1
    if count == 1:
        return torch.zeros(1, dtype=torch.float64)
    return torch.linspace(0, 1, count, dtype=torch.float64)
