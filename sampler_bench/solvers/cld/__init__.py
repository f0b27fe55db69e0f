"""Samplers for critically-damped Langevin diffusion: gDDIM (deterministic and stochastic), EM, Euler, Heun.

Zhang, Tao, Chen, "gDDIM: Generalized Denoising Diffusion Implicit Models" (arXiv 2206.05564), reference
code qsh-zh/gDDIM ``cld_jax/sampling.py``, ``sde_lib.py``, ``deis.py``; formulas in docs/solvers.md
("CLD samplers"), the process in :mod:`sampler_bench.processes.cld` (docs/processes.md). The
coefficients use gDDIM's R_t of eq. 17, not a Cholesky factor (the paper's Table 1 shows the latter
fails at low NFE).

How CLD fits the registry's contract (these solvers need the capability
:data:`~sampler_bench.processes.kind.CLD_PHASE_SPACE`, which only CLD models offer):

* the state ``x`` passed to ``sample`` is the phase-space state u of shape ``[B, 2, *data_shape]``
  (``u[:, 0]`` = x, ``u[:, 1]`` = v) and the returned tensor has the same layout (data = ``u[:, 0]``);
* ``sigmas`` is the decreasing **time** grid, from T down to t_eps; a trailing 0 means "finish with
  gDDIM's denoising step" (``noise_removal=True``: one Euler step of the reverse-SDE drift from t_eps to 0,
  ``u <- u - t_eps (F u - G G^T score)``), used by every sampler here as in the reference code;
* the denoiser is a CLD model: ``model(u, t[B])`` returns the R_t-parameterised eps and ``model.process_def``
  is its :class:`~sampler_bench.processes.cld.CLD` (``model.process == 'cld'``).

NFE: one model call per step, the final denoising step included (gDDIM's ``nfe`` counts it), so ``nfe =
steps`` for gDDIM and EM and ``2 steps - 1`` for Heun on a grid ending at 0 (``2 steps`` otherwise). With
``sampler_bench.solvers.plan(name, nfe, schedule="karras", sigma_min=model.sigma_min,
sigma_max=model.sigma_max, schedule_params={"rho": 2.0})`` the grid is exactly gDDIM's ``ts_order=2`` grid
(:func:`cld_time_quadratic`); ``rho=1`` gives :func:`cld_time_uniform`.
"""

from .common import cld_time_quadratic, cld_time_uniform

# Importing a module registers its solvers.
from . import gddim  # noqa: E402,F401  gddim, gddim_sde
from . import euler  # noqa: E402,F401  cld_euler, cld_heun, cld_euler_maruyama
from . import reference  # noqa: E402,F401  cld_reference

__all__ = ["cld_time_quadratic", "cld_time_uniform"]
