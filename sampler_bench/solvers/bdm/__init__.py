"""Samplers for blurring diffusion: gDDIM per frequency, Euler-Maruyama, Euler, Heun, and the yardstick.

Zhang, Tao, Chen, "gDDIM: Generalized Denoising Diffusion Implicit Models" (arXiv 2206.05564), reference
code qsh-zh/gDDIM ``blur_jax/sampling.py``; the process in :mod:`sampler_bench.processes.bdm`
(Hoogeboom & Salimans, arXiv 2209.05557; docs/processes.md); formulas in docs/solvers.md ("BDM samplers").

How BDM fits the registry's contract (these solvers need the capability
:data:`~sampler_bench.processes.kind.BDM_FREQUENCY_SPACE`, which only BDM models offer):

* the state ``x`` passed to ``sample`` is the pixel-space image state z ``[B, C, H, W]``; every solver
  works on its DCT coefficients, where the process is diagonal, and returns pixel space;
* ``sigmas`` is the decreasing **time** grid from (at most) T down to t_eps; a trailing 0 means "finish
  with the denoising step" x_0 = V diag(1/a_t) V^T (z - sigma_t eps) at the last positive time (one NFE);
* the denoiser is a BDM model: ``model(z, t[B])`` returns eps and ``model.process_def`` is its
  :class:`~sampler_bench.processes.bdm.BDM`.

NFE: one model call per step, the final denoising step included, so ``nfe = steps`` for gDDIM, Euler and
Euler-Maruyama, and ``2 steps - 1`` for Heun on a grid ending at 0.
"""

# Importing a module registers its solvers.
from . import gddim  # noqa: F401  gddim_bdm
from . import euler  # noqa: F401  bdm_euler, bdm_heun, bdm_euler_maruyama
from . import reference  # noqa: F401  bdm_reference
