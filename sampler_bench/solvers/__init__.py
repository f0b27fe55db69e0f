"""The solver registry and the sampling API.

Importing this package registers every solver family; ``available()`` lists them, ``info(name)``
describes one, ``sample(...)`` runs one, ``plan(...)`` turns an NFE budget into a grid.
"""

from . import schedules
from .budget import Plan, plan, steps_for_budget
from .driver import CountingDenoiser, NonFiniteSampleError, run_solver, sample
from .trajectory import Trajectory, TrajectoryRecorder, record_trajectory
from .registry import Option, SolverInfo, SolverOptionError, available, check_applies, info, register, samplers_for

# Solver families: importing a module registers its solvers.
from . import first_order  # noqa: E402,F401  euler, heun
from . import dpm_solver  # noqa: E402,F401  dpm_2, dpm_solver_1/2/3 (singlestep, noise prediction)
from . import dpmpp  # noqa: E402,F401  dpmpp_2s, dpmpp_3s, dpmpp_2m, dpmpp_3m
from . import adams  # noqa: E402,F401  lms, deis (tAB), deis_rho, ipndm
from . import unipc  # noqa: E402,F401  unipc
from . import reference  # noqa: E402,F401  adaptive DOP853 yardstick
from . import dpm_adaptive  # noqa: E402,F401  dpm_adaptive (DPM-Solver-12/23, PID step control)
from . import ancestral  # noqa: E402,F401  ddim(eta), euler_ancestral, dpmpp_2s_ancestral, dpm_2_ancestral, ddpm
from . import sde_dpmpp  # noqa: E402,F401  dpmpp_sde, dpmpp_2m_sde, dpmpp_3m_sde
from . import er_sde  # noqa: E402,F401  er_sde_1/2/3
from . import euler_maruyama  # noqa: E402,F401  euler_maruyama
from . import edm_stochastic  # noqa: E402,F401  edm_stochastic
from . import seeds  # noqa: E402,F401  seeds_2, seeds_3
from . import restart  # noqa: E402,F401  restart
from . import sa_solver  # noqa: E402,F401  sa_solver
from . import cld  # noqa: E402,F401  gddim, gddim_sde, cld_euler_maruyama, cld_euler, cld_heun, cld_reference (CLD only)
from . import bdm  # noqa: E402,F401  gddim_bdm, bdm_euler_maruyama, bdm_euler, bdm_heun, bdm_reference (BDM only)
from . import yukawa  # noqa: E402,F401  yukawa_smc (Yukawa only: weighted particles with resampling)

__all__ = [
    "available", "info", "sample", "plan", "steps_for_budget", "run_solver", "schedules",
    "CountingDenoiser", "NonFiniteSampleError", "Trajectory", "TrajectoryRecorder", "record_trajectory", "Option", "Plan", "SolverInfo", "SolverOptionError", "register",
]
