"""Endpoint error: distance of each sample to the high-accuracy ODE solution from the same noise.

For a deterministic sampler, sample i and the reference endpoint i (adaptive DOP853 from the same
initial state, computed and cached by the runner) differ only by discretisation error, so this is
the global error whose slope against NFE is the sampler's empirical order. Reported:

* ``endpoint_rmse = sqrt( (1/n) sum_i |x_i - r_i|^2 / d )``: RMS over samples of the per-sample L2
  error normalised by sqrt(d) (an RMS per coordinate, comparable across dimensions);
* ``endpoint_mean_l2 = (1/n) sum_i |x_i - r_i|``: mean per-sample L2 error (not normalised).

Meaningless for stochastic samplers (``needs_reference_endpoints``): their noise is not the ODE's.
"""

from __future__ import annotations

from .base import Accumulator
from .registry import register_metric


@register_metric(
    "endpoint_error",
    keys=("endpoint_rmse", "endpoint_mean_l2"),
    lower_is_better=True,
    description="error against the reference ODE solution from the same initial noise (deterministic samplers)",
    needs_reference_endpoints=True,
)
class EndpointError(Accumulator):
    def _setup(self) -> None:
        for key in ("sq_sum", "l2_sum"):  # sum_i |e_i|^2 / d and sum_i |e_i|, with replicate sums
            self._state[key] = self._zeros(())
            self._state["rep:" + key] = self._zeros((self.replicates,))

    def _update(self, x, reference) -> None:
        if reference is None:
            raise ValueError("metric 'endpoint_error' needs reference=<ODE reference endpoints of the same seeds> "
                             "in update(); it applies to deterministic samplers only")
        err = (x - reference).flatten(1)
        sq = (err**2).sum(1)
        self._add("sq_sum", sq / err.shape[1])
        self._add("l2_sum", sq.sqrt())

    def _values(self, state) -> dict:
        n = state["count"]
        return {"endpoint_rmse": (state["sq_sum"] / n).sqrt(), "endpoint_mean_l2": state["l2_sum"] / n}
