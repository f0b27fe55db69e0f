"""KID and precision/recall, computed by torch-fidelity's own functions on capped feature sets.

* KID (Bińkowski et al. 2018, arXiv:1801.01401): unbiased MMD^2 with the cubic polynomial kernel
  ``(x.y / F + 1)^3``, averaged over ``subsets`` random subsets of ``subset_size`` rows of each set
  (``torch_fidelity.metric_kid.kid_features_to_metric``); ``kid_std`` is the spread over subsets.
* Precision/recall (Kynkäänniemi et al. 2019, arXiv:1904.06991): a sample is "precise" if it lies in
  some reference point's k-NN ball (k = ``neighborhood``), a reference point is "recalled" if it lies
  in some sample's ball (``torch_fidelity.metric_prc.prc_features_to_metric``, batched distances).

Both need the feature *sets*, so their state is a ``"cat:features"`` row set: the one exception to
"memory independent of the sample count". It is capped at ``max_samples`` rows (default 10000), the
first ones in sample order (deterministic, and equal to a single run's after a rank-ordered reduction
of contiguous shards); ``provenance["n_samples_used"]`` says how many were used. torch-fidelity (and
torchvision through :func:`sampler_bench.compat.import_torch_fidelity`) is imported only in ``compute``.
"""

from __future__ import annotations

import torch

from ..compat import import_torch_fidelity
from ..options import Option
from .base import FeatureMetric
from .refstats import derived_seed
from .registry import register_metric

MAX_SAMPLES = Option(10_000, int, "most sample feature rows kept (first N in sample order)", low=2)


class _FeatureSet(FeatureMetric):
    """Keeps the first ``max_samples`` sample feature rows; the reference rows come from refstats."""

    reference_kind = "features"
    # each replicate recomputes the metric on the reweighted rows (a full KID / k-NN pass): fewer
    # replicates than the sum metrics keep, so intervals cost ~16 computes, not 48
    replicates = 16

    def _setup(self) -> None:
        self.max_samples = self.params["max_samples"]
        self.ref_features = self.reference.tensors["features"].to(torch.float64)
        self._state["cat:features"] = self._zeros((0, self.ref_features.shape[1]))
        self._state["cat:index"] = self._zeros((0, 1))  # sample index of each row (bootstrap weights)

    def _update(self, x, reference) -> None:
        self._append_rows("cat:features", self.features(x))

    def _sets(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self._state["cat:features"].cpu(), self.ref_features.cpu()


@register_metric(
    "kid",
    keys=("kid_mean", "kid_std"),
    lower_is_better=True,
    description="kernel (Inception) distance: unbiased polynomial-kernel MMD^2 over random subsets (torch-fidelity)",
    paper="Bińkowski et al. 2018, arXiv:1801.01401",
    params={
        "max_samples": MAX_SAMPLES,
        "subsets": Option(100, int, "number of random subsets averaged", low=1),
        "subset_size": Option(1000, int, "rows per subset (lowered to the smaller set size if needed)", low=2),
    },
)
class KernelDistance(_FeatureSet):
    def _replicate_params(self) -> dict:
        # a replicate averages a tenth of the subsets: 16 replicates cost ~1.6 plain KIDs; the extra
        # subset noise widens the interval (conservative), it does not bias it
        return {"subsets": max(2, self.params["subsets"] // 10)}

    @classmethod
    def min_samples(cls, params: dict) -> int:
        return 2  # the unbiased MMD estimate pairs distinct samples

    def _compute(self) -> dict[str, float]:
        import_torch_fidelity()
        from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric

        f1, f2 = self._sets()
        size = min(self.params["subset_size"], f1.shape[0], f2.shape[0])
        if size < 2:
            raise ValueError(f"metric 'kid' needs at least 2 samples, got {f1.shape[0]}")
        # numpy's RandomState (used by torch-fidelity for the subsets) takes a 32-bit seed
        out = kid_features_to_metric(f1, f2, kid_subsets=self.params["subsets"], kid_subset_size=size,
                                     rng_seed=derived_seed(self.seed, "kid-subsets") % 2**32, verbose=False)
        self._provenance["subset_size_used"] = size
        return {"kid_mean": out[KEY_METRIC_KID_MEAN], "kid_std": out[KEY_METRIC_KID_STD]}


@register_metric(
    "precision_recall",
    keys=("precision", "recall"),
    lower_is_better=False,
    description="improved precision and recall: k-NN manifold coverage of samples vs reference (torch-fidelity)",
    paper="Kynkäänniemi et al. 2019, arXiv:1904.06991",
    params={
        "max_samples": MAX_SAMPLES,
        "neighborhood": Option(3, int, "k of the k-NN balls", low=1),
        "block_size": Option(1024, int, "rows per distance block (memory, not the result)", low=1),
    },
)
class PrecisionRecall(_FeatureSet):
    @classmethod
    def min_samples(cls, params: dict) -> int:
        return int(params["neighborhood"]) + 1  # each sample's k-NN ball needs k other samples

    def _compute(self) -> dict[str, float]:
        import_torch_fidelity()
        from torch_fidelity.metric_prc import KEY_METRIC_PRECISION, KEY_METRIC_RECALL, prc_features_to_metric

        f1, f2 = self._sets()
        k = self.params["neighborhood"]
        if min(f1.shape[0], f2.shape[0]) < k + 1:
            raise ValueError(f"metric 'precision_recall' needs more than neighborhood={k} samples and reference "
                             f"rows, got {f1.shape[0]} and {f2.shape[0]}")
        # torch-fidelity's convention: features_1 generated, features_2 real; save_cpu_ram computes the
        # distances in blocks so memory is O(block_size * n) instead of O(n^2)
        out = prc_features_to_metric(f1, f2, prc_neighborhood=k, prc_batch_size=self.params["block_size"],
                                     save_cpu_ram=True, verbose=False)
        # torch-fidelity averages 0/1 flags in float32: the count is exact (integers < 2^24) and the
        # division is off by < 6e-8 relative, below half the 1/n grid for n < 8e6, so rounding to
        # the grid recovers the exact fractions count/n
        return {"precision": round(out[KEY_METRIC_PRECISION] * f1.shape[0]) / f1.shape[0],
                "recall": round(out[KEY_METRIC_RECALL] * f2.shape[0]) / f2.shape[0]}
