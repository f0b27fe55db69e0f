"""The ``output`` option every solver accepts: return the state, or the denoiser's estimate at the last level.

Chen et al., "A Geometric Perspective on Diffusion Models" (arXiv 2305.19947, Sec. 3.2 and Fig. 3) observe
that the *denoising trajectory* D(x_t, sigma_t) along a sampling trajectory reaches a good sample sooner
than the sampling trajectory x_t itself (their "ODE-Jump"). ``output="denoised"`` measures that claim on
any model and solver at a counted NFE:

* grid ending at 0 (sigma_0 > ... > sigma_{N-1} > 0): the solver's loop stops at sigma_{N-1}, before its own
  final step to 0, and the output is D(x_{N-1}, sigma_{N-1}) -- one evaluation in place of that step. The
  state x_{N-1} is exactly the one the default run reaches (the same steps with the same coefficients).
* grid ending at sigma_N > 0: the solver runs to the end and the output is D(x_N, sigma_N), one extra
  evaluation.

For Euler (and EDM's Heun, whose last step is an Euler step) this is the default output to round-off; for
higher-order solvers the final multistep/multistage correction is replaced by the denoiser's estimate.
The NFE law of a solver with this option is derived from its own law here, so budgets and the counted
NFE agree (``tests/test_trajectory_geometry.py`` checks every step solver). The option applies to the
solvers of the probability-flow ODE in sigma (their model is a denoiser); solvers that integrate the
whole grid in one run (adaptive ones) accept it only on grids that end above 0.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from ..options import Option

#: the option's name and declaration; absent from a solver's validated options unless asked for, so
#: every cell and cache key of a run without it is unchanged
OUTPUT = "output"
OUTPUT_OPTION = Option("state", str, "'state': the solver's final state; 'denoised': D(x, sigma) at the last "
                                     "level above 0 instead of the final step (Chen et al. 2023, ODE-Jump)",
                       choices=("state", "denoised"))
COMMON_OPTIONS: Mapping[str, Option] = {OUTPUT: OUTPUT_OPTION}


def denoised(options: Mapping[str, Any]) -> bool:
    return options.get(OUTPUT, "state") == "denoised"


def with_output_nfe(law: Callable[[int, bool, Mapping[str, Any]], int],
                    final_step_nfe: Callable[[Mapping[str, Any]], int]):
    """The NFE law of a solver given its own: with ``output="denoised"``, on a grid ending at 0 the solver's
    final step (``final_step_nfe`` evaluations: 1 for most, 0 for UniPC, whose last step reuses the
    corrector's value) is replaced by the one denoiser evaluation; on a grid ending above 0 that evaluation
    is added."""

    def nfe(steps: int, ends_at_zero: bool, options: Mapping[str, Any]) -> int:
        if not denoised(options):
            return law(steps, ends_at_zero, options)
        if not ends_at_zero:
            return law(steps, False, options) + 1
        return law(steps, True, options) - final_step_nfe(options) + 1

    return nfe


def with_output_min_steps(min_steps: Callable[[Mapping[str, Any]], int]):
    """With ``output="denoised"`` on a grid ending at 0 one step is not taken, so one more is needed; the
    registry cannot know the grid here, so the stricter count is used for every grid (one step more)."""

    def least(options: Mapping[str, Any]) -> int:
        return min_steps(options) + (1 if denoised(options) else 0)

    return least
