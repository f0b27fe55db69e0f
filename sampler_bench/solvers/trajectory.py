"""Recording a sampling trajectory and its denoising trajectory while a step solver runs.

Chen et al., "A Geometric Perspective on Diffusion Models" (arXiv 2305.19947, Sec. 3) study two paths of
the probability-flow ODE: the *sampling trajectory* {x_i} at the grid levels sigma_i, and the *denoising
trajectory* {D(x_i, sigma_i)}. :class:`TrajectoryRecorder` collects both from the one loop of
:func:`~.driver.integrate`, which visits every grid level; the default path pays one ``is None`` test per
step. Most solvers evaluate D(x_i, sigma_i) as their first evaluation of step i; the recorder takes that
value as the denoiser returns it (the counted denoiser reports every call to a ``watch``), and evaluates
D itself, uncounted, only at levels where the solver did not (``extra_evaluations`` says how many).

At a level sigma_i = 0 the denoising trajectory is the state itself (D(x, 0) = x). Memory: the recorder
keeps ``2 (steps + 1)`` states per sample on the state's device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class Trajectory:
    """A recorded run: ``states[:, i]`` is x at ``sigmas[i]``, ``denoised[:, i]`` is D(x_i, sigma_i);
    ``output`` is what the solver returned (``states[:, -1]``, or D at the last level with
    ``output="denoised"``). Shapes ``[B, K+1, ...]`` for the K steps taken."""

    sigmas: list[float]
    states: torch.Tensor
    denoised: torch.Tensor
    output: torch.Tensor
    extra_evaluations: int

    @property
    def jumped(self) -> bool:
        """True when the output is not the last state (``output="denoised"``)."""
        return not torch.equal(self.output, self.states[:, -1])


class TrajectoryRecorder:
    """Give to :func:`~.driver.run_solver` as ``trajectory=``; read :attr:`result` afterwards."""

    def __init__(self):
        self._reset()
        self.result: Trajectory | None = None

    def _reset(self) -> None:
        self._sigmas: list[float] = []
        self._states: list[torch.Tensor] = []
        self._denoised: list[torch.Tensor | None] = []
        self._current: torch.Tensor | None = None
        self._model = None
        self.extra_evaluations = 0

    # -- called by the driver ------------------------------------------------------------
    def attach(self, model) -> None:
        """Start a run: ``model`` is the counting denoiser whose calls are watched."""
        self._reset()
        self.result = None
        self._model = model
        model.watch = self._watch

    def visit(self, sigma: float, x: torch.Tensor) -> None:
        """The loop reached level ``sigma`` with state ``x`` (before the step that leaves it)."""
        self._close_level()
        self._sigmas.append(float(sigma))
        state = x.detach().clone()
        self._states.append(state)
        self._denoised.append(state if sigma == 0 else None)  # D(x, 0) = x
        self._current = x

    def finish(self, output: torch.Tensor) -> None:
        """The run ended with ``output``; the last level visited is the state the output came from."""
        self._close_level()
        self._model.watch = None
        self.result = Trajectory(self._sigmas, torch.stack(self._states, 1), torch.stack(self._denoised, 1),
                                 output.detach().clone(), self.extra_evaluations)

    # -- internals ---------------------------------------------------------------------------
    def _watch(self, x: torch.Tensor, sigma: torch.Tensor, out: torch.Tensor) -> None:
        if self._current is None or x is not self._current or self._denoised[-1] is not None:
            return
        level = self._sigmas[-1]
        # the solver's own D(x_i, sigma_i): same state object, same level (sigma may have been cast to float32)
        if math.isclose(float(sigma[0]), level, rel_tol=1e-6):
            self._denoised[-1] = out.detach().clone()

    def _close_level(self) -> None:
        """Evaluate D at the level being left when the solver did not (uncounted: not the solver's cost)."""
        if self._denoised and self._denoised[-1] is None:
            x = self._states[-1]
            s = torch.full((x.shape[0],), self._sigmas[-1], device=x.device, dtype=x.dtype)
            self._denoised[-1] = self._model.denoiser(x, s).detach().clone()
            self.extra_evaluations += 1
        self._current = None


def record_trajectory(name: str, denoiser, x: torch.Tensor, sigmas, *, generator=None, **options) -> Trajectory:
    """Run sampler ``name`` like :func:`sampler_bench.sample` and return its recorded :class:`Trajectory`
    (``.output`` is what ``sample`` returns)."""
    from .driver import CountingDenoiser, run_solver

    recorder = TrajectoryRecorder()
    run_solver(name, CountingDenoiser(denoiser), x, sigmas, generator=generator, options=options, trajectory=recorder)
    return recorder.result
