"""Metrics that use the exact law of an analytic Gaussian-mixture model (docs/processes.md, "Exact denoisers").

* ``gmm_nll``: mean negative log-likelihood of the samples under the true mixture density,
  ``-(1/n) sum_i log p(x_i)`` (``GaussianMixture.log_prob``). For exact samples it estimates the
  mixture's entropy H(p); a sampler's excess over it is a cross-entropy gap. Lower is better, but a
  sampler that collapses onto the modes can go *below* H(p): read it next to ``gmm_tv`` and FD.
* ``gmm_tv``: total-variation distance ``(1/2) sum_k |pi_k - c_k / n|`` between the component
  weights and the fraction of samples assigned to each component -- mode coverage and balance.
  ``assignment="hard"`` (default) counts the argmax of the responsibilities p(k | x) at sigma = 0;
  for exact samples of overlapping components it has a floor (misassigned samples).
  ``assignment="soft"`` sums the responsibilities instead: since E_p[p(k | x)] = pi_k exactly, it
  tends to 0 for exact samples whatever the overlap.

Both are sums over samples (sum of log-likelihoods; per-component counts), so shards add.
"""

from __future__ import annotations

from ..options import Option
from .base import Accumulator
from .registry import register_metric


@register_metric(
    "gmm_nll",
    keys=("gmm_nll",),
    lower_is_better=True,
    description="mean negative log-likelihood of the samples under the true mixture density",
    requires="gmm",
)
class MixtureNLL(Accumulator):
    def _setup(self) -> None:
        self.dist = self.model.distribution
        self._state["nll_sum"] = self._zeros(())
        self._state["rep:nll_sum"] = self._zeros((self.replicates,))
        self._provenance["model_fingerprint"] = self.model.fingerprint()

    def _update(self, x, reference) -> None:
        self._add("nll_sum", -self.dist.log_prob(x, 0.0))

    def _values(self, state) -> dict:
        return {"gmm_nll": state["nll_sum"] / state["count"]}


@register_metric(
    "gmm_tv",
    keys=("gmm_tv",),
    lower_is_better=True,
    description="total variation between mixture weights and the fraction of samples per component",
    requires="gmm",
    params={"assignment": Option("hard", str, "argmax responsibility ('hard') or responsibilities ('soft')",
                                 choices=("hard", "soft"))},
)
class MixtureTV(Accumulator):
    def _setup(self) -> None:
        self.dist = self.model.distribution
        self._state["assigned"] = self._zeros((self.dist.n_components,))
        self._state["rep:assigned"] = self._zeros((self.replicates, self.dist.n_components))
        self._provenance["model_fingerprint"] = self.model.fingerprint()

    def _update(self, x, reference) -> None:
        r = self.dist.responsibilities(x, 0.0).to(self.device)
        if self.params["assignment"] == "hard":
            r = self._zeros(r.shape).scatter_(1, r.argmax(1, keepdim=True), 1.0)
        self._add("assigned", r)

    def _values(self, state) -> dict:
        frac = state["assigned"] / state["count"][..., None]
        return {"gmm_tv": 0.5 * (frac - self.dist.weights.to(frac)).abs().sum(-1)}
