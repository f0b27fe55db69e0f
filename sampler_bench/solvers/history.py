"""The one record of a multistep solver's past model values.

Multistep solvers (Adams/DEIS, DPM-Solver++(2M/3M) and their SDE versions, UniPC, ER-SDE, gDDIM)
reuse the denoiser (or eps) values of earlier steps. Each keeps them here, newest first, with the
noise level (or time) they were taken at, in the style of k-diffusion's named ``old_denoised``
variables made into one typed buffer: ``ctx.history.push(sigma, value, keep=k)`` after evaluating,
``ctx.history[j]`` / ``ctx.history.sigma(j)`` for the value and level ``j`` steps back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class History:
    """Newest-first (sigma, value) entries; ``push`` forgets all but the ``keep`` newest."""

    sigmas: list[float] = field(default_factory=list)
    values: list[Any] = field(default_factory=list)

    def push(self, sigma: float, value: Any, keep: int) -> list[Any]:
        """Record ``value`` taken at ``sigma`` as the newest entry; returns the values, newest first."""
        self.sigmas.insert(0, float(sigma))
        self.values.insert(0, value)
        del self.sigmas[keep:], self.values[keep:]
        return self.values

    def sigma(self, j: int) -> float:
        """The level of the entry ``j`` steps back (0: the newest)."""
        return self.sigmas[j]

    def __getitem__(self, j: int) -> Any:
        return self.values[j]

    def __len__(self) -> int:
        return len(self.values)
