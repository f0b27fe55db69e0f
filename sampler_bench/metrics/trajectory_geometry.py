"""The ``trajectory_geometry`` metric: how straight a deterministic sampler's trajectories are.

Chen et al., "A Geometric Perspective on Diffusion Models" (arXiv 2305.19947, Sec. 3.1-3.2) find that
probability-flow ODE trajectories are quasi-linear: they stay close to the chord from x_T to x_0, and the
denoising trajectory D(x_t, sigma_t) lies near it and converges sooner. Per sample, from the recorded
trajectory (:mod:`sampler_bench.solvers.trajectory`; definitions in :mod:`.geometry`), with L = |x_T - x_0|
the chord length and x_0 the sampler's output:

* ``sampling_deviation``: max over the sampling trajectory of the perpendicular distance to the chord, / L;
* ``denoising_deviation``: the same for the denoising trajectory {D(x_i, sigma_i)} against the same chord;
* ``curvature``: the arc-length-weighted mean Menger curvature of the sampling trajectory, times L (so L/R
  on an arc of a circle of radius R; 0 on a straight path);
* ``step_angle``: the mean angle between successive steps of the sampling trajectory, in degrees.

Each value is a mean over samples of a per-sample statistic, so its interval comes from the Poisson
bootstrap of :mod:`.uncertainty` like every other metric. The provenance also holds the mean deviation of
both trajectories at every grid level (with intervals: ``profile``) and a few trajectories in the chord
frame (``paths``) for the report's pictures. Deterministic solvers of the probability-flow ODE in sigma only:
a stochastic trajectory is not the ODE's, and an adaptive run has no grid to record.
"""

from __future__ import annotations

import math

import torch

from . import uncertainty as U
from .base import CAT, REP, Accumulator
from .geometry import chord_deviation, chord_frame, menger_curvature, step_lengths, turning_angles
from .registry import register_metric

KEYS = ("sampling_deviation", "denoising_deviation", "curvature", "step_angle")
#: trajectories kept for pictures, and the most points of each kept
PATHS_KEPT = 4
POINTS_KEPT = 48


def _nan_mean(values: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    ok = torch.isfinite(values)
    w = ok.to(values.dtype) if weights is None else torch.where(ok, weights, torch.zeros_like(weights))
    return torch.where(ok, values, torch.zeros_like(values)).mul(w).sum(-1) / w.sum(-1)


def _thin(n: int, most: int) -> torch.Tensor:
    """At most ``most`` indices of ``range(n)``, evenly spread, first and last kept."""
    if n <= most:
        return torch.arange(n)
    return torch.unique(torch.linspace(0, n - 1, most).round().long())


@register_metric(
    "trajectory_geometry",
    keys=KEYS,
    lower_is_better=True,
    description="deviation of the sampling and denoising trajectories from the chord x_T -> x_0, curvature and "
                "angle between steps (deterministic samplers; Chen et al. 2023)",
    paper="Chen et al., A Geometric Perspective on Diffusion Models, arXiv 2305.19947",
    needs_trajectory=True,
)
class TrajectoryGeometry(Accumulator):
    max_samples = PATHS_KEPT

    def _setup(self) -> None:
        for key in KEYS:
            self._state[key] = self._zeros(())
            self._state[REP + key] = self._zeros((self.replicates,))
        self._trajectory = None

    def update(self, samples, reference=None, *, index=None, trajectory=None) -> None:
        """As :meth:`Accumulator.update`, with ``trajectory``: the batch's recorded
        :class:`~sampler_bench.solvers.trajectory.Trajectory`."""
        if trajectory is None:
            raise ValueError("metric 'trajectory_geometry' needs trajectory=<the batch's recorded trajectory> in "
                             "update() (sampler_bench.solvers.record_trajectory); it applies to deterministic "
                             "step solvers of the probability-flow ODE only")
        if trajectory.states.shape[0] != samples.shape[0]:
            raise ValueError(f"metric 'trajectory_geometry': the trajectory has {trajectory.states.shape[0]} samples, "
                             f"the batch {samples.shape[0]}")
        self._trajectory = trajectory
        try:
            super().update(samples, reference, index=index)
        finally:
            self._trajectory = None

    def _update(self, x, reference) -> None:
        tr = self._trajectory
        dev = self.device
        states = tr.states.to(dev, torch.float64)
        den = tr.denoised.to(dev, torch.float64)
        end = tr.output.to(dev, torch.float64)
        start = states[:, 0]
        path = torch.cat([states, end[:, None]], 1) if tr.jumped else states
        length = (start - end).flatten(1).norm(dim=1)
        dev_s = chord_deviation(states, start, end) / length[:, None]   # [B, K+1], at the grid levels
        dev_d = chord_deviation(den, start, end) / length[:, None]
        self._add("sampling_deviation", dev_s.amax(1))
        self._add("denoising_deviation", dev_d.amax(1))
        ell = step_lengths(path)
        kappa = menger_curvature(path) * length[:, None]
        self._add("curvature", _nan_mean(kappa, 0.5 * (ell[:, :-1] + ell[:, 1:])))
        self._add("step_angle", torch.rad2deg(_nan_mean(turning_angles(path))))
        # deviation against sigma: per-level sums (with replicate sums, hence intervals per level)
        self._add("profile_sampling", dev_s)
        self._add("profile_denoising", dev_d)
        self._add("levels", torch.tensor(tr.sigmas, dtype=torch.float64, device=dev).expand(len(states), -1))
        self._add("extra_evaluations", torch.full((len(states),), float(tr.extra_evaluations), dtype=torch.float64,
                                                  device=dev))
        kept = self._state.get(CAT + "paths")
        if kept is None or kept.shape[0] < self.max_samples:
            self._keep_paths(path[:PATHS_KEPT], den[:PATHS_KEPT], start[:PATHS_KEPT], end[:PATHS_KEPT])

    def _keep_paths(self, path, den, start, end) -> None:
        """A few trajectories in the chord frame (2-D data as it is), thinned, for the report's pictures."""
        p, q = chord_frame(path, start, end, den)
        p, q = p[:, _thin(p.shape[1], POINTS_KEPT)], q[:, _thin(q.shape[1], POINTS_KEPT)]
        rows = torch.cat([torch.tensor([[p.shape[1], q.shape[1], p.shape[2]]], dtype=torch.float64, device=p.device).expand(len(p), -1),
                          p.flatten(1), q.flatten(1)], 1)
        key = CAT + "paths"
        if key not in self._state:
            self._state[key] = self._zeros((0, rows.shape[1]))
        self._append_rows(key, rows)

    def load_state(self, state) -> None:
        # the per-level keys and the kept paths take the grid's size, known only once a batch is seen
        for k, v in state.items():
            if k not in self._state:
                v = torch.as_tensor(v)
                self._state[k] = self._zeros((0, v.shape[1]) if k.startswith(CAT) else tuple(v.shape))
        super().load_state(state)

    def _compute(self) -> dict[str, float]:
        n = self._state["count"]
        return {k: float(self._state[k] / n) for k in KEYS}

    # -- the per-level profile and the kept paths, for reports -----------------------------
    def profile(self, confidence: float = U.CONFIDENCE) -> dict:
        """Mean relative deviation of both trajectories at each grid level, with bootstrap intervals."""
        n, rep_n = self._state["count"], self._state[REP + "count"][:, None]
        out = {"sigma": (self._state["levels"] / n).tolist()}
        for name, key in (("sampling", "profile_sampling"), ("denoising", "profile_denoising")):
            value = self._state[key] / n
            reps = self._state[REP + key] / rep_n
            se = reps.std(0, unbiased=True)
            q = U.t_quantile(confidence, reps.shape[0] - 1)
            out[name] = [round(float(v), 6) for v in value]
            out[name + "_ci"] = [[round(float(v - q * s), 6), round(float(v + q * s), 6)] for v, s in zip(value, se)]
        return out

    def paths(self) -> list[dict]:
        rows = self._state.get(CAT + "paths")
        out = []
        for row in ([] if rows is None else rows):
            n_p, n_q, c = (int(v) for v in row[:3])
            p = row[3:3 + n_p * c].reshape(n_p, c)
            q = row[3 + n_p * c:3 + (n_p + n_q) * c].reshape(n_q, c)
            out.append({"sampling": [[round(float(v), 5) for v in pt] for pt in p],
                        "denoising": [[round(float(v), 5) for v in pt] for pt in q]})
        return out

    @property
    def provenance(self) -> dict:
        out = super().provenance
        out.pop("n_samples_used", None)
        out.pop("max_samples", None)
        if self.count and "levels" in self._state:
            shape = tuple(getattr(self.model, "shape", ()) or ())
            out["trajectory"] = {
                "levels": len(self._state["levels"]),
                "extra_denoiser_evaluations": float(self._state["extra_evaluations"] / self._state["count"]),
                "frame": "the state's own 2 coordinates" if math.prod(shape) <= 2 else
                         "distance along the chord x_T -> x_0, then the top 2 principal directions of the path's "
                         "part orthogonal to it",
                "deviation": "perpendicular distance to the chord x_T -> x_0 divided by |x_T - x_0|",
            }
            out["profile"] = self.profile()
            out["paths"] = self.paths()
        return out
