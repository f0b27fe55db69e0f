"""Uncertainty of streamed metric values: Poisson-bootstrap replicates keyed on the sample index.

Why a Poisson bootstrap (Hanley & MacGibbon 2006, "Creating non-parametric bootstrap samples using
Poisson frequencies", Comput. Methods Programs Biomed. 83; Chamandy et al. 2012, "Estimating
uncertainty for massive data streams", Google tech. report): instead of resampling n rows (which
needs all of them), every sample ``i`` gets an independent Poisson(1) weight ``w[r, i]`` in each of
``R`` replicates, and every accumulator keeps ``R`` *weighted* copies of its float64 sums. Memory is
``R`` times the accumulator's state, independent of the sample count, and the weights are a hash of
``(replicate, sample index)`` only (:func:`poisson_weights`), so

* the replicates do not depend on the batch size or on how the indices are split over ranks
  (weighted sums of disjoint shards add, like the plain sums);
* replicate ``r`` of two cells that share seeds and sample indices reweights the *same* samples:
  the replicate values of two such cells are **paired**, and the spread of their differences is the
  standard error of the difference of the two metric values (:func:`paired_test`).

From the plain estimate ``t`` and the replicate values ``t*_r``:

* standard error ``se = sd(t*_r)`` (ddof 1);
* for estimators with an O(1/n) bias (Fréchet distances) the bootstrap bias correction
  ``t_bc = 2 t - mean(t*_r)`` (Efron & Tibshirani 1993, "An Introduction to the Bootstrap", eq. 10.10):
  the replicates see the estimator's bias a second time, so their excess over ``t`` estimates the bias
  and removes the 1/n term, like the extrapolation to infinite n of Chong & Forsyth (CVPR 2020);
* the interval ``t_bc ± q se`` with ``q`` the Student-t quantile on ``R - 1`` degrees of freedom
  (the standard error is itself estimated from ``R`` replicates).

Near a population value of 0 the interval is conservative, by design. Write the metric as ``f`` of
the sample's sums and expand to second order: its sampling variance is ``var_L + var_Q`` (linear
term at the population value, quadratic term), while the bootstrap's linear part is taken at the
*sample*, where the gradient also holds the quadratic term's, so ``var(t*)`` is ``var_L + 3 var_Q`` on
average. Where ``var_L`` vanishes (a Fréchet distance of 0: a perfect sampler) the interval is ~1.6x
too wide and covers 0 nearly always; away from it the two agree. Splitting each replicate into its
linear and quadratic parts with antithetic weights ``2 - w`` removes the excess on average, but the
narrower interval then tracks the realised distance and covered the population value in only 85% of
400 ranges just above the floor (FD 0.02 on gmm2d, n = 400) instead of 93%; measured in
benchmarks/RESULTS.md (``benchmarks/interval_calibration.py``). A too wide interval near the floor
errs towards ties, the safe side, so the plain bootstrap standard error stays.

The interval is for the *population* value: what the same cell would give with unlimited samples.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

#: replicate accumulators per metric (the default; a metric may use fewer to bound memory)
REPLICATES = 48
#: default confidence level of every stored interval
CONFIDENCE = 0.95
#: a fixed key: the weights must be the same in every cell, sweep and run for replicates to pair
_WEIGHT_KEY = np.uint64(0x5EED_B007_57A7_0001)
#: Poisson(1) cumulative probabilities P(K <= k), k = 0..19 (the tail beyond is < 1e-18)
_POISSON1_CDF = np.cumsum([math.exp(-1.0) / math.factorial(k) for k in range(20)])


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser (Steele et al. 2014), uint64 -> uint64, wrapping arithmetic."""
    x = (x + np.uint64(0x9E3779B97F4A7C15)).astype(np.uint64)
    x = ((x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)).astype(np.uint64)
    x = ((x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)).astype(np.uint64)
    return x ^ (x >> np.uint64(31))


def poisson_weights(start: int, count: int, replicates: int = REPLICATES) -> torch.Tensor:
    """Poisson(1) weights ``[replicates, count]`` (float64) of sample indices ``start .. start+count-1``.

    A pure function of (replicate, index): any batch or shard of the indices gets the same weights.
    """
    return batch_weights(start, count, replicates)[0].clone()


def batch_weights(start: int, count: int, replicates: int = REPLICATES) -> tuple[torch.Tensor, torch.Tensor]:
    """The weights of :func:`poisson_weights` and their sums per replicate, **shared: do not modify**.

    Every metric of every cell of a sweep asks for the same few index ranges (its batches), so small
    ones are hashed once per process and kept in a small cache (accumulators only read them).
    """
    if count * replicates > 2**20:  # a large batch: not worth 8+ MiB of cache per range
        w = poisson_weights_at(np.arange(start, start + count), replicates)
        return w, w.sum(1)
    return _cached_weights(int(start), int(count), int(replicates))


@functools.lru_cache(maxsize=8)
def _cached_weights(start: int, count: int, replicates: int) -> tuple[torch.Tensor, torch.Tensor]:
    w = poisson_weights_at(np.arange(start, start + count), replicates)
    return w, w.sum(1)


def poisson_weights_at(indices, replicates: int = REPLICATES) -> torch.Tensor:
    """Poisson(1) weights ``[replicates, len(indices)]`` of the given sample indices (see above)."""
    with np.errstate(over="ignore"):
        idx = np.asarray(indices, dtype=np.int64).astype(np.uint64)[None, :]
        rep = np.arange(replicates, dtype=np.uint64)[:, None]
        h = _splitmix64(_splitmix64(idx ^ _WEIGHT_KEY) + rep * np.uint64(0xD1B54A32D192ED03))
    u = (h >> np.uint64(11)).astype(np.float64) * 2.0**-53
    return torch.from_numpy(np.searchsorted(_POISSON1_CDF, u, side="right").astype(np.float64))


@functools.lru_cache(maxsize=256)
def t_quantile(confidence: float, dof: int) -> float:
    from scipy import stats

    return float(stats.t.ppf(0.5 + confidence / 2.0, dof))


def check_confidence(confidence) -> float:
    """A confidence level strictly inside (0, 1), or one ValueError saying so."""
    try:
        c = float(confidence)
    except (TypeError, ValueError):
        raise ValueError(f"confidence level must be a number in (0, 1), e.g. 0.95; got {confidence!r}") from None
    if not (0.0 < c < 1.0) or math.isnan(c):
        raise ValueError(f"confidence level must lie strictly between 0 and 1 (e.g. 0.95), got {confidence!r}")
    return c


@dataclass(frozen=True)
class Estimate:
    """A metric value with its interval for the population value.

    ``value``: the plain estimate (as stored before intervals existed); ``corrected``: the
    bias-corrected estimate (equal to ``value`` for estimators without an O(1/n) bias); the interval
    ``[ci_low, ci_high]`` is centred on ``corrected``; ``replicates``: the R replicate values.
    """

    value: float
    corrected: float
    ci_low: float
    ci_high: float
    se: float
    replicates: tuple[float, ...]
    bias_corrected: bool
    confidence: float = CONFIDENCE

    @property
    def half_width(self) -> float:
        return 0.5 * (self.ci_high - self.ci_low)

    def method(self) -> str:
        bc = "; bias-corrected 2t - mean(t*)" if self.bias_corrected else ""
        return (f"Poisson bootstrap, {len(self.replicates)} replicates keyed on the sample index; "
                f"{self.confidence:.0%} Student-t interval on the replicate standard error{bc}")


def estimate(value: float, replicates: Sequence[float], *, bias_correct: bool = False,
             confidence: float = CONFIDENCE) -> Estimate:
    """The :class:`Estimate` of a plain value and its bootstrap replicate values."""
    confidence = check_confidence(confidence)
    reps = np.asarray([float(r) for r in replicates], dtype=np.float64)
    finite = reps[np.isfinite(reps)]
    if finite.size < 2 or not math.isfinite(value):
        return Estimate(float(value), float(value), math.nan, math.nan, math.nan, tuple(reps.tolist()),
                        bias_correct, confidence)
    se = float(finite.std(ddof=1))
    corrected = 2.0 * value - float(finite.mean()) if bias_correct else float(value)
    q = t_quantile(confidence, finite.size - 1)
    return Estimate(float(value), corrected, corrected - q * se, corrected + q * se, se, tuple(reps.tolist()),
                    bias_correct, confidence)


@dataclass(frozen=True)
class PairedResult:
    difference: float  # a - b (corrected values)
    se: float
    p_value: float
    paired: bool


def paired_test(a_value: float, a_reps: Sequence[float], b_value: float, b_reps: Sequence[float], *,
                paired: bool = True) -> PairedResult:
    """Two-sided test of "a and b have the same population value".

    ``paired``: the cells share seeds and sample indices, so replicate r of both reweights the same
    samples and ``sd(a*_r - b*_r)`` is the standard error of the difference (the noise common to
    both cells cancels). Otherwise the two cells are independent and ``se = sqrt(se_a^2 + se_b^2)``.
    The values given are the (bias-corrected) estimates; the statistic is referred to a Student t
    on R - 1 degrees of freedom.
    """
    from scipy import stats

    a = np.asarray(a_reps, dtype=np.float64)
    b = np.asarray(b_reps, dtype=np.float64)
    diff = float(a_value) - float(b_value)
    if paired and a.shape == b.shape and a.size >= 2:
        d = a - b
        ok = np.isfinite(d)
        se, dof = float(d[ok].std(ddof=1)) if ok.sum() >= 2 else math.nan, int(ok.sum()) - 1
    else:
        paired = False
        sa = float(np.nanstd(a, ddof=1)) if a.size >= 2 else math.nan
        sb = float(np.nanstd(b, ddof=1)) if b.size >= 2 else math.nan
        se, dof = math.hypot(sa, sb), max(min(a.size, b.size) - 1, 1)
    if not math.isfinite(se) or not math.isfinite(diff):
        return PairedResult(diff, se, math.nan, paired)
    if se == 0.0:
        return PairedResult(diff, 0.0, 1.0 if diff == 0.0 else 0.0, paired)
    p = float(2.0 * stats.t.sf(abs(diff) / se, dof))
    return PairedResult(diff, se, p, paired)


def holm(p_values: Sequence[float], alpha: float = 1 - CONFIDENCE) -> list[bool]:
    """Holm's step-down procedure (Holm 1979, Scand. J. Statist. 6): which hypotheses are rejected.

    Controls the family-wise error rate at ``alpha`` over all the comparisons; NaN p-values are
    never rejected.
    """
    p = [(math.inf if not math.isfinite(x) else float(x), i) for i, x in enumerate(p_values)]
    m = len(p)
    rejected = [False] * m
    for rank, (pv, i) in enumerate(sorted(p)):
        if pv <= alpha / (m - rank):
            rejected[i] = True
        else:
            break
    return rejected
