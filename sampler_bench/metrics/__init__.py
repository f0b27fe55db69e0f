"""Metrics: streaming accumulators (batches in, float64 sums out) and their registry.

::

    import sampler_bench.metrics as M
    M.available()                                  # registered metric names
    M.info("fd").keys, .lower_is_better, .needs_reference_endpoints, .applies(model)
    acc = M.make("fd", model, feature_extractor="raw", reference_samples=10_000, seed=0, cache_dir=...)
    for batch in batches: acc.update(batch)        # endpoint_error: acc.update(batch, reference=endpoints)
    acc.compute()                                  # {"fd": ...}
    acc.provenance                                 # extractor + weights hash, reference hash, counts, params
    M.reduce_states([acc_rank0.state(), acc_rank1.state()])   # sums add, "cat:" keys concatenate
    M.features.available(); M.features.get(name); M.features.register_extractor(name, fn_or_module)

Metrics: ``fd`` (Fréchet distance; FID with ``inception-v3-compat``), ``kid``, ``precision_recall``,
``swd``, ``gmm_nll``, ``gmm_tv``, ``endpoint_error``, ``trajectory_geometry``. Importing this package does not import
torch-fidelity; it is loaded when an Inception extractor is built or KID / precision-recall computed.
"""

from . import features, refstats
from .base import Accumulator, FeatureMetric, reduce_states
from .registry import DEFAULT_REFERENCE_SAMPLES, MetricInfo, available, info, make, register_metric

# Metric families: importing a module registers its metrics.
from . import fd  # noqa: E402,F401  fd
from . import kid_pr  # noqa: E402,F401  kid, precision_recall
from . import swd  # noqa: E402,F401  swd
from . import gmm  # noqa: E402,F401  gmm_nll, gmm_tv
from . import endpoint  # noqa: E402,F401  endpoint_error
from . import trajectory_geometry  # noqa: E402,F401  trajectory_geometry

__all__ = [
    "Accumulator", "FeatureMetric", "MetricInfo", "DEFAULT_REFERENCE_SAMPLES", "available", "features", "info",
    "make", "reduce_states", "refstats", "register_metric",
]
