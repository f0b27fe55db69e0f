"""The streaming-accumulator contract every metric follows (README.md, "Metrics").

An :class:`Accumulator` takes batches of samples and keeps float64 tensors in ``self._state``:

* a key without a prefix is a **sum**: disjoint shards of the sample set reduce by adding them;
* a key starting with ``"cat:"`` is a **set of rows** (features KID / precision-recall / SWD need):
  shards reduce by concatenation along dim 0, and only the first ``max_samples`` rows are kept.

Uncertainty (:mod:`.uncertainty`): a sum added with :meth:`Accumulator._add` also keeps ``R``
Poisson-bootstrap weighted copies under ``"rep:<key>"`` (sums too, so shards still add); row sets
keep the sample index of each row (``"cat:index"``) and are reweighted at compute time.
:meth:`Accumulator.estimates` turns them into a value, a bias-corrected value and an interval. A
metric of sums writes its formula once, in :meth:`Accumulator._values`, for states with a leading
batch dimension: the plain value and all R replicates then come from the same code, the replicates
in one vectorised call (no Python loop over them); a metric that only writes ``_compute`` (a
plug-in) gets its replicates one ``_compute`` at a time.

So a run split over ranks (contiguous index ranges, concatenated in rank order) reduces with
:func:`reduce_states` to the state of one run over the union, and ``compute()`` turns the state into
``{key: float}``. Sum keys make memory independent of the sample count; ``"cat:"`` keys are the one
documented exception, bounded by ``max_samples``.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import math

import torch

from . import uncertainty as U

CAT = "cat:"
REP = "rep:"


class Accumulator:
    """Base class: batches in, float64 sums (and capped row sets) out.

    Subclasses add their keys to ``self._state`` (float64 tensors: sums, and ``"cat:"`` row sets of
    fixed width) in :meth:`_setup` and implement :meth:`_update` (a checked float64 batch, plus the
    reference endpoints when given) and :meth:`_compute`. The ``"count"`` key (samples seen) is kept
    here. ``self._provenance`` holds what produced the number; :attr:`provenance` adds the counts.
    """

    name: str = ""
    #: the most rows a "cat:" key keeps (first-N, in update order); None when there is none
    max_samples: int | None = None
    #: True for metrics that work in a feature space against reference statistics
    uses_features: bool = False
    #: value keys whose estimator has an O(1/n) bias: their estimate is bootstrap bias-corrected
    bias_corrected_keys: tuple[str, ...] = ()
    #: Poisson-bootstrap replicates kept (a subclass may lower it to bound memory)
    replicates: int = U.REPLICATES

    def __init__(self, model, *, device: str | torch.device = "cpu", seed: int = 0, **params):
        self.model = model
        self.device = torch.device(device)
        self.seed = int(seed)
        self.params = dict(params)
        self.shape = tuple(getattr(model, "shape", ()) or ())
        self._state: dict[str, torch.Tensor] = {"count": self._zeros(()), REP + "count": self._zeros((self.replicates,))}
        self._next_index = 0  # sample index of the next row when update() is not told it
        self._weights: torch.Tensor | None = None  # [R, B] Poisson weights of the current batch
        # feature_extractor / reference_hash are '' for metrics without them (store columns)
        self._provenance: dict[str, Any] = {"metric": self.name, "params": dict(params), "seed": self.seed,
                                            "model": getattr(model, "name", type(model).__name__),
                                            "feature_extractor": "", "reference_hash": ""}
        self._setup()

    @classmethod
    def min_samples(cls, params: dict) -> int:
        """The fewest samples a cell needs for this metric with (validated) ``params``; a sweep with
        fewer is refused before any sampling (overridden where an estimator needs more)."""
        return 1

    def _setup(self) -> None:
        """Add the metric's own state keys (called at the end of ``__init__``)."""

    # -- helpers for subclasses -------------------------------------------------------------
    def _zeros(self, shape) -> torch.Tensor:
        return torch.zeros(shape, dtype=torch.float64, device=self.device)

    def _add(self, key: str, per_sample: torch.Tensor) -> None:
        """Add per-sample values ``[B, ...]`` to sum ``key`` and to its replicate sums ``"rep:<key>"``."""
        per_sample = per_sample.to(torch.float64)
        if key not in self._state:
            self._state[key] = self._zeros(per_sample.shape[1:])
            self._state[REP + key] = self._zeros((self.replicates, *per_sample.shape[1:]))
        self._state[key] += per_sample.sum(0)
        # every replicate at once: weights [R, B] times values [B, k], always a 2-D product (torch's
        # tensordot with a 1-D operand measured milliseconds instead of microseconds under load)
        flat = per_sample.reshape(per_sample.shape[0], -1)
        self._state[REP + key] += (self._weights @ flat).reshape(self._state[REP + key].shape)

    def _add_outer(self, key: str, rows: torch.Tensor) -> None:
        """Add ``sum_i rows_i rows_i^T`` to ``key`` and the weighted sums to ``"rep:<key>"``."""
        self._state[key] += rows.T @ rows
        rep = self._state[REP + key]
        n, d = rows.shape
        if d <= 64:
            # small d: one product, weights [R, b] times the rows' flattened outer products [b, d^2],
            # in row chunks so the temporary stays under ~64 MiB (measured 3x faster than the batched
            # product below at d = 2, equal at d = 64, 2x slower at d = 256)
            chunk = max(1, 2**23 // (d * d))
            for a in range(0, n, chunk):
                r = rows[a:a + chunk]
                rep += (self._weights[:, a:a + chunk] @ (r[:, :, None] * r[:, None, :]).reshape(r.shape[0], -1)).view(rep.shape)
            return
        # large d (e.g. Inception's 2048): one batched product per replicate chunk, so the
        # [r, B, d] temporary stays under ~128 MiB
        chunk = max(1, 2**24 // max(1, rows.numel()))
        for a in range(0, rep.shape[0], chunk):
            weighted = self._weights[a:a + chunk, :, None] * rows  # [r, B, d]
            rep[a:a + chunk] += weighted.transpose(1, 2) @ rows

    def _append_rows(self, key: str, rows: torch.Tensor) -> None:
        """Append rows to a "cat:" key, keeping the first ``max_samples`` (deterministic first-N).

        The rows' sample indices go to ``"cat:index"`` (created on first use) so that the bootstrap
        can reweight them by index at compute time."""
        kept = self._state[key]
        room = (self.max_samples - kept.shape[0]) if self.max_samples is not None else rows.shape[0]
        if room > 0:
            self._state[key] = torch.cat([kept, rows[:room].to(device=self.device, dtype=torch.float64)])
            if CAT + "index" in self._state and key != CAT + "index":
                idx = self._batch_index[:room, None].to(device=self.device, dtype=torch.float64)
                self._state[CAT + "index"] = torch.cat([self._state[CAT + "index"], idx])

    def _check_samples(self, samples: torch.Tensor, what: str = "samples") -> torch.Tensor:
        if not isinstance(samples, torch.Tensor):
            raise ValueError(f"metric {self.name!r}: {what} must be a torch.Tensor, got {type(samples).__name__}")
        if self.shape and tuple(samples.shape[1:]) != self.shape:
            raise ValueError(
                f"metric {self.name!r}: {what} have shape {tuple(samples.shape)}, expected [batch, "
                f"{', '.join(map(str, self.shape))}] (model {getattr(self.model, 'name', '?')!r})"
            )
        if not torch.isfinite(samples).all():
            bad = int((~torch.isfinite(samples)).flatten(1).any(1).sum())
            raise ValueError(
                f"metric {self.name!r}: {bad} of {samples.shape[0]} {what} contain NaN or inf; "
                "a metric of non-finite samples would be a wrong number (check the sampler's output)"
            )
        return samples.to(device=self.device, dtype=torch.float64)

    # -- the public contract ----------------------------------------------------------------
    def update(self, samples: torch.Tensor, reference: torch.Tensor | None = None, *,
               index: int | None = None) -> None:
        """Add a batch ``[B, *model.shape]``; ``reference`` is only for endpoint error.

        ``index``: the sample index of the batch's first row (its seed offset); by default the batch
        follows the previous one. The bootstrap weights are keyed on it, so pass it when a shard
        does not start at sample 0.
        """
        x = self._check_samples(samples)
        if x.shape[0] == 0:
            return
        start = self._next_index if index is None else int(index)
        self._next_index = start + x.shape[0]
        self._batch_index = torch.arange(start, start + x.shape[0])
        weights, weight_sums = U.batch_weights(start, x.shape[0], self.replicates)  # shared: read only
        self._weights = weights.to(self.device)
        self._state[REP + "count"] += weight_sums.to(self.device)
        ref = None
        if reference is not None:
            ref = self._check_samples(reference, "reference endpoints")
            if ref.shape != x.shape:
                raise ValueError(
                    f"metric {self.name!r}: reference endpoints {tuple(reference.shape)} do not match samples "
                    f"{tuple(samples.shape)}; pass the reference solution of the same seeds"
                )
        self._update(x, ref)
        self._state["count"] += x.shape[0]

    def state(self) -> dict[str, torch.Tensor]:
        """A copy of the float64 state (sum keys add across shards, "cat:" keys concatenate)."""
        return {k: v.clone() for k, v in self._state.items()}

    def load_state(self, state: Mapping[str, torch.Tensor]) -> None:
        """Replace the state (e.g. with :func:`reduce_states` of all ranks' states)."""
        if set(state) != set(self._state):
            raise ValueError(
                f"metric {self.name!r}: state keys {sorted(state)} do not match this accumulator's "
                f"{sorted(self._state)}; load a state produced by the same metric"
            )
        new = {}
        for k, mine in self._state.items():
            v = torch.as_tensor(state[k]).to(device=self.device, dtype=torch.float64)
            ok = v.shape[1:] == mine.shape[1:] if k.startswith(CAT) else v.shape == mine.shape
            if not ok:
                raise ValueError(f"metric {self.name!r}: state {k!r} has shape {tuple(v.shape)}, expected {tuple(mine.shape)}")
            if k.startswith(CAT) and self.max_samples is not None:
                v = v[: self.max_samples]
            new[k] = v.clone()
        self._state = new

    def compute(self) -> dict[str, float]:
        """The metric values of everything seen so far."""
        if self.count == 0:
            raise ValueError(f"metric {self.name!r}: no samples were given; call update() with at least one batch")
        return {k: float(v) for k, v in self._compute().items()}

    def estimates(self, confidence: float = U.CONFIDENCE) -> dict[str, U.Estimate]:
        """Every value with its bias-corrected estimate and interval (see :mod:`.uncertainty`).

        Replicate ``r`` recomputes the metric from the ``r``-th weighted sums (and the row sets with
        every row repeated by its weight). A metric of sums that implements :meth:`_values` gets all
        its replicates in one vectorised call; others are recomputed replicate by replicate. A metric
        without replicate state gets NaN intervals.
        """
        confidence = U.check_confidence(confidence)
        values = self.compute()
        reps: dict[str, list[float]] = {k: [] for k in values}
        sum_keys = [k for k in self._state if not k.startswith((CAT, REP))]
        has_reps = self.replicates > 0 and all(REP + k in self._state for k in sum_keys)
        sums_only = not any(k.startswith(CAT) for k in self._state)
        if has_reps and sums_only:
            reps = self._replicate_values({k: self._state[REP + k] for k in sum_keys}, values)
        elif has_reps:
            reps = self._replicate_rows(values)
        return {k: U.estimate(v, reps[k], bias_correct=k in self.bias_corrected_keys, confidence=confidence)
                for k, v in values.items()}

    def _replicate_values(self, stacked: dict[str, torch.Tensor], values: Mapping[str, float]
                          ) -> dict[str, list[float]]:
        """The metric of each replicate of a stack of sum states (leading replicate dimension)."""
        try:
            out = self._values(stacked)
        except (ValueError, RuntimeError, ZeroDivisionError):
            out = None
        if out is not None:
            return {k: [float(v) for v in torch.as_tensor(out[k], dtype=torch.float64).reshape(-1).tolist()]
                    if k in out else [math.nan] * self.replicates for k in values}
        reps: dict[str, list[float]] = {k: [] for k in values}
        plain = self._state
        try:  # a metric without _values: one _compute per replicate
            for r in range(self.replicates):
                self._state = {k: v[r] for k, v in stacked.items()}
                try:
                    got = self._compute()
                except (ValueError, RuntimeError, ZeroDivisionError):
                    got = {}
                for k in values:
                    reps[k].append(float(got.get(k, math.nan)))
        finally:
            self._state = plain
        return reps

    def _replicate_rows(self, values: Mapping[str, float]) -> dict[str, list[float]]:
        """Replicates of a metric of row sets: each row repeated by its weight, one compute each."""
        reps: dict[str, list[float]] = {k: [] for k in values}
        plain = self._state
        sum_keys = [k for k in plain if not k.startswith((CAT, REP))]
        cat_index = plain.get(CAT + "index")
        row_weights = None
        if cat_index is not None:
            row_weights = U.poisson_weights_at(cat_index[:, 0].cpu().numpy(), self.replicates)
        saved_params = dict(self.params)
        self.params.update(self._replicate_params())
        try:
            for r in range(self.replicates):
                state = {k: plain[REP + k][r] for k in sum_keys}
                for k, v in plain.items():
                    if k.startswith(CAT):
                        state[k] = v if row_weights is None else \
                            v.repeat_interleave(row_weights[r].long().to(v.device), dim=0)
                if row_weights is not None:
                    state["count"] = row_weights[r].sum().to(self.device)
                self._state = state
                try:
                    out = self._compute()
                except (ValueError, RuntimeError, ZeroDivisionError):
                    out = {}
                for k in values:
                    reps[k].append(float(out.get(k, math.nan)))
        finally:
            self._state = plain
            self.params = saved_params
        return reps

    def _values(self, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
        """Optional and vectorised: the metric of a sum ``state`` whose tensors (``"count"`` too) may
        carry leading batch dimensions, as ``{key: tensor of that batch shape}``.

        A metric of sums that implements it computes its plain value and all its bootstrap
        replicates with this one formula (the default :meth:`_compute` calls it on the plain state).
        ``None`` (the default): not implemented, :meth:`_compute` is used replicate by replicate.
        """
        return None

    def _replicate_params(self) -> dict:
        """Parameter overrides while computing replicates (e.g. fewer KID subsets); none by default."""
        return {}

    @property
    def count(self) -> int:
        return int(self._state["count"].item())

    @property
    def provenance(self) -> dict[str, Any]:
        """What produced the number: extractor and weights hash, reference hash, counts, params."""
        out = dict(self._provenance)
        out["n_samples"] = self.count
        cats = [k for k in self._state if k.startswith(CAT)]
        if cats:
            out["n_samples_used"] = int(self._state[cats[0]].shape[0])
            out["max_samples"] = self.max_samples
        return out

    # -- to implement -----------------------------------------------------------------------
    def _update(self, x: torch.Tensor, reference: torch.Tensor | None) -> None:
        raise NotImplementedError

    def _compute(self) -> dict[str, float]:
        out = self._values(self._state)
        if out is None:
            raise NotImplementedError(f"metric {self.name!r} implements neither _compute nor _values")
        return out

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} n={self.count}>"


class FeatureMetric(Accumulator):
    """A metric in a feature space, against reference statistics (see :mod:`.refstats`).

    ``reference_kind`` says what the reference is: ``"moments"`` (mean, covariance) or ``"features"``
    (rows). Samples are mapped with :meth:`features` (the extractor, on this device, float64).
    """

    uses_features = True
    reference_kind = "moments"

    def __init__(self, model, *, extractor, reference, device="cpu", seed: int = 0, **params):
        self.extractor = extractor
        self.reference = reference
        super().__init__(model, device=device, seed=seed, **params)
        self._provenance.update(extractor.provenance())
        self._provenance["reference_hash"] = reference.hash
        self._provenance["reference"] = dict(reference.provenance)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.extractor(x).to(device=self.device, dtype=torch.float64)


def reduce_states(states: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Reduce per-shard states: sum keys add, "cat:" keys concatenate in the given (rank) order.

    Gives the state of one accumulator over the union of the shards when the shards are disjoint and,
    for "cat:" keys with a cap, contiguous in sample order (rank r holds indices [a_r, a_{r+1})).
    """
    states = list(states)
    if not states:
        raise ValueError("reduce_states needs at least one state")
    keys = set(states[0])
    for i, s in enumerate(states[1:], 1):
        if set(s) != keys:
            raise ValueError(f"reduce_states: state {i} has keys {sorted(s)}, state 0 has {sorted(keys)}; "
                             "reduce states of the same metric only")
    out = {}
    for k in states[0]:
        first = states[0][k]
        parts = [torch.as_tensor(s[k]).to(device=first.device, dtype=torch.float64) for s in states]
        out[k] = torch.cat(parts, 0) if k.startswith(CAT) else torch.stack(parts).sum(0)
    return out
