"""Optimised schedules: noise levels chosen for one model, sampler and budget (issue #16).

One visible table, :data:`OPTIMISERS`; the interface and the seed namespace are in :mod:`.base`, each
method in its own module. docs/schedule_optimisers.md says how each works and what it costs.
"""

from __future__ import annotations

from ...options import closest
from . import ays, descent, dmn, gits, ld3
from .base import (  # noqa: F401  (the public names of the package)
    OPTIMISATION_SEED_BASE, Cost, Optimiser, OptimiserError, Problem, optimisation_seeds, run,
)

OPTIMISERS: dict[str, Optimiser] = {
    "dmn": Optimiser(
        "dmn", dmn.optimise, dmn.DEFAULTS, "steps from the noise schedule and solver order only (0 NFE)",
        "Xue et al. 2024, arXiv 2402.17376", needs_model=False, checks=dmn.CHECKS),
    "gits": Optimiser(
        "gits", gits.optimise, gits.DEFAULTS, "dynamic programming over a fine grid on teacher trajectories",
        "Chen et al. 2024, arXiv 2405.11326", checks=gits.CHECKS),
    "ays_opt": Optimiser(
        "ays_opt", ays.optimise, ays.DEFAULTS, "the KL-upper-bound optimisation of Align Your Steps on the model",
        "Sabour et al. 2024, arXiv 2404.14507", checks=ays.CHECKS, uses_solver=False,
        requires=ays.has_data),
    "ld3": Optimiser(
        "ld3", ld3.optimise, ld3.DEFAULTS, "one parameter per step learned against a teacher by gradients "
        "through the sampler (dpmpp_2m, ipndm)", "Tong et al. 2024, arXiv 2405.15506", checks=ld3.CHECKS,
        requires=ld3.differentiable, supports=ld3.supports),
    "endpoint_descent": Optimiser(
        "endpoint_descent", descent.optimise, descent.DEFAULTS,
        "coordinate search on the sampler's own endpoint error against a teacher (this project's design)",
        "docs/schedule_optimisers.md", checks=descent.CHECKS, version=3),
}


def available() -> list[str]:
    return sorted(OPTIMISERS)


def is_optimiser(name: str) -> bool:
    return name in OPTIMISERS


def get(name: str) -> Optimiser:
    if name not in OPTIMISERS:
        raise OptimiserError(f"unknown optimised schedule {name!r}{closest(name, available())}; "
                             f"available: {', '.join(available())}")
    return OPTIMISERS[name]
