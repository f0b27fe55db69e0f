"""The solver registry and the sampling API.

Importing this package registers every solver family; ``available()`` lists them, ``info(name)``
describes one, ``sample(...)`` runs one, ``plan(...)`` turns an NFE budget into a grid.
"""

from . import schedules
from .budget import Plan, plan, steps_for_budget
from .driver import CountingDenoiser, NonFiniteSampleError, run_solver, sample
from .registry import Option, SolverInfo, SolverOptionError, available, info, register

# Solver families: importing a module registers its solvers.
from . import first_order  # noqa: E402,F401
from . import reference  # noqa: E402,F401

__all__ = [
    "available", "info", "sample", "plan", "steps_for_budget", "run_solver", "schedules",
    "CountingDenoiser", "NonFiniteSampleError", "Option", "Plan", "SolverInfo", "SolverOptionError", "register",
]
