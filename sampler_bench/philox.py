"""Counter-based standard normal noise: one value per (seed, sample index, draw index, element).

A counter-based generator (Salmon et al. 2011, "Parallel random numbers: as easy as 1, 2, 3", SC'11)
computes the n-th random word as a keyed bijection of n: no state is carried from one number to the
next, so the noise of sample ``i`` at draw ``j`` is the same whatever batch, process or order it is
computed in, and a whole batch (and several draws ahead) is one vectorised computation instead of a
Python loop over per-sample ``torch.Generator`` objects.

The bijection is Philox4x32-10 (ibid., section 5): four 32-bit counter words, a 64-bit key, ten
rounds of two 32x32 -> 64-bit multiplications, checked against the paper's known-answer vectors in
the tests. Here the key is the seed and the counter is
``(element block, draw index, sample index low 32 bits, sample index high 32 bits)``; each block of
four words becomes four normals by the Box-Muller transform (two per pair of uniforms), computed in
float32 whatever the state's dtype, so the values do not depend on it.

Integer arithmetic runs on int64 tensors: a 32x32-bit product can exceed 2^63 and then wraps (two's
complement) to a negative value whose low 64 bits are still the product's, so the masks below
recover the high and low words exactly.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

_MASK32 = 0xFFFFFFFF
_PHILOX_M0, _PHILOX_M1 = 0xD2511F53, 0xCD9E8D57  # round multipliers
_PHILOX_W0, _PHILOX_W1 = 0x9E3779B9, 0xBB67AE85  # key schedule (golden ratio, sqrt(3) - 1)
ROUNDS = 10


def _signed64(v: int) -> int:
    """The int64 with the same low 64 bits as ``v`` (torch has no uint64 arithmetic)."""
    v &= (1 << 64) - 1
    return v - (1 << 64) if v >= 1 << 63 else v


def philox4x32(counter: Sequence[torch.Tensor], key: tuple[int, int], rounds: int = ROUNDS) -> list[torch.Tensor]:
    """Philox4x32-``rounds`` of the four counter words (int64 tensors holding 32-bit values, any
    broadcastable shapes) under ``key`` (two 32-bit ints); returns four int64 tensors of 32-bit words."""
    r0, r1, r2, r3 = (torch.as_tensor(c, dtype=torch.int64) for c in counter)
    r0, r1, r2, r3 = torch.broadcast_tensors(r0, r1, r2, r3)
    k0, k1 = int(key[0]) & _MASK32, int(key[1]) & _MASK32
    for _ in range(rounds):
        p0 = r0 * _PHILOX_M0  # may wrap past 2^63: the low 64 bits are still the product's
        p1 = r2 * _PHILOX_M1
        # new words: hi(p1) ^ r1 ^ k0, lo(p1), hi(p0) ^ r3 ^ k1, lo(p0). r1 and r3 only ever enter an XOR,
        # so they may carry garbage above bit 31; the words that get multiplied are masked.
        r0, r1, r2, r3 = (
            ((p1 >> 32) ^ r1 ^ k0) & _MASK32,
            p1,
            ((p0 >> 32) ^ r3 ^ k1) & _MASK32,
            p0,
        )
        k0, k1 = (k0 + _PHILOX_W0) & _MASK32, (k1 + _PHILOX_W1) & _MASK32
    return [r0, r1 & _MASK32, r2, r3 & _MASK32]


# Box-Muller with only +, -, *, / and sqrt (each IEEE-rounded, the same in a vectorised loop and in its
# scalar tail, and on every device): library log/sin/cos may differ by an ulp between those paths, which
# would make a value depend on where it sits in the batch. log by exponent extraction and the atanh series,
# sin/cos by quadrant reduction and Taylor series. Evaluated in float32, the output's precision: the series are
# cut where their remainder is below 1e-9 (a few float32 ulps of error in all, invisible to any statistic).
_LN2 = math.log(2.0)
_ATANH_COEFFS = [2.0 / (2 * k + 1) for k in range(6)]  # log m = sum_k 2 s^(2k+1)/(2k+1), s = (m-1)/(m+1)
_SIN_COEFFS = [(-1) ** k / math.factorial(2 * k + 1) for k in range(7)]
_COS_COEFFS = [(-1) ** k / math.factorial(2 * k) for k in range(8)]
_MANTISSA = (1 << 52) - 1
_ONE_BITS = 1023 << 52


def _horner(coeffs: list[float], t: torch.Tensor) -> torch.Tensor:
    out = torch.full_like(t, coeffs[-1])
    for c in reversed(coeffs[:-1]):
        out = out.mul_(t).add_(c)
    return out


def _log_word(a: torch.Tensor) -> torch.Tensor:
    """log((a + 1) / 2^32) for 32-bit words ``a`` (float32; the argument lies in (0, 1])."""
    v = (a + 1).to(torch.float64)  # an exact integer in [1, 2^32]
    bits = v.view(torch.int64)
    exponent = (bits >> 52) - 1023
    m = (bits & _MANTISSA | _ONE_BITS).view(torch.float64)  # v = m 2^exponent, m in [1, 2)
    high = m > math.sqrt(2.0)
    m = torch.where(high, m * 0.5, m)  # m in [sqrt(1/2), sqrt(2)]: |s| <= 0.172
    exponent = exponent + high.to(torch.int64) - 32
    m = m.to(torch.float32)
    s = (m - 1.0) / (m + 1.0)
    return s * _horner(_ATANH_COEFFS, s * s) + exponent.to(torch.float32) * _LN2


def _sin_cos_word(b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sin, cos) of 2 pi b / 2^32 for 32-bit words ``b``: quadrant from the top two bits."""
    quadrant = b >> 30
    phi = (b & ((1 << 30) - 1)).to(torch.float32) * (0.5 * math.pi / 2.0**30)  # in [0, pi/2]
    p2 = phi * phi
    s = phi * _horner(_SIN_COEFFS, p2)
    c = _horner(_COS_COEFFS, p2)
    odd = (quadrant & 1).bool()
    negative_sin, negative_cos = quadrant >= 2, (quadrant == 1) | (quadrant == 2)
    sin = torch.where(odd, c, s)
    cos = torch.where(odd, s, c)
    return torch.where(negative_sin, -sin, sin), torch.where(negative_cos, -cos, cos)


def _box_muller(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Two independent N(0, 1) from two 32-bit words (float32 arithmetic).

    u1 = (a + 1) / 2^32 lies in (0, 1], so the logarithm is finite; |z| <= sqrt(64 ln 2) ~ 6.66,
    a truncation of probability 3e-11.
    """
    radius = torch.sqrt(-2.0 * _log_word(a))
    sin, cos = _sin_cos_word(b)
    return radius * cos, radius * sin


#: blocks of four values computed per vectorised pass: large enough to amortise the per-operation
#: overhead, small enough that the temporaries stay in the CPU's cache and every operation stays below
#: torch's intra-op parallel grain (32768 elements), whose thread hand-offs cost more than they save here
#: and which collapses on a loaded machine
CHUNK_BLOCKS = 1 << 12


def normal(seed: int, samples: torch.Tensor, draws: range, numel: int, device=None) -> torch.Tensor:
    """N(0, 1) values, float32, of shape ``[len(samples), len(draws), numel]``.

    Entry ``[s, j, e]`` is a function of ``(seed, samples[s], draws[j], e)`` only.
    """
    samples = torch.as_tensor(samples, dtype=torch.int64, device=device)
    device = samples.device
    if samples.ndim != 1 or (samples < 0).any():
        raise ValueError("sample indices must be a 1-D tensor of non-negative integers")
    if draws.step != 1 or draws.start < 0 or len(draws) < 1:
        raise ValueError(f"draws must be a non-empty range of non-negative draw indices, got {draws}")
    blocks = -(-numel // 4)
    s = _signed64(int(seed))
    key = (s & _MASK32, (s >> 32) & _MASK32)
    # counter words of every (sample, draw, block), flattened in that order and computed chunk by chunk
    n_s, n_d = samples.numel(), len(draws)
    total = n_s * n_d * blocks
    out = torch.empty(total, 4, dtype=torch.float32, device=device)
    for start in range(0, total, CHUNK_BLOCKS):
        flat = torch.arange(start, min(start + CHUNK_BLOCKS, total), dtype=torch.int64, device=device)
        row = samples[flat // (n_d * blocks)]
        c0 = flat % blocks
        c1 = (flat // blocks) % n_d + draws.start
        w0, w1, w2, w3 = philox4x32((c0, c1, row & _MASK32, row >> 32), key)
        za, zb = _box_muller(torch.stack((w0, w2), dim=-1), torch.stack((w1, w3), dim=-1))  # [n, 2]
        out[start:start + flat.numel()] = torch.stack((za, zb), dim=-1).reshape(-1, 4)
    return out.reshape(n_s, n_d, blocks * 4)[..., :numel]


class PhiloxNoise:
    """A generator for a batch of samples: draw ``j`` of sample ``indices[b]`` is ``normal(seed, i, j)``.

    Passed where a sampler takes ``generator`` (``sb.sample(..., generator=PhiloxNoise(seed, range(n)))``):
    each noise request is the next draw index, the same in every batch, so sample ``i``'s noise does
    not depend on the batch size, the shard split or the device count. Draws are computed
    ``prefetch`` at a time (one vectorised pass), which changes no value: an entry depends on its
    counter only.
    """

    #: about how many values one prefetch computes (one vectorised chunk)
    PREFETCH_VALUES = 4 * CHUNK_BLOCKS

    def __init__(self, seed: int, indices: Sequence[int] | range | torch.Tensor, device: str | torch.device = "cpu"):
        self.seed = int(seed)
        self.indices = torch.as_tensor(list(indices) if isinstance(indices, range) else indices, dtype=torch.int64)
        if self.indices.ndim != 1 or self.indices.numel() < 1:
            raise ValueError("PhiloxNoise needs a 1-D, non-empty sequence of sample indices")
        self.device = torch.device(device)
        self.indices = self.indices.to(self.device)
        self.draw = 0  # the next draw index
        self._buffer: torch.Tensor | None = None  # [B, k, numel] for draws [_first, _first + k)
        self._first = 0

    def __len__(self) -> int:
        return self.indices.numel()

    def __repr__(self) -> str:
        return f"PhiloxNoise(seed={self.seed}, samples={len(self)}, next draw={self.draw})"

    def randn(self, per_sample_shape: Sequence[int]) -> torch.Tensor:
        """The next draw: float32 ``[B, *per_sample_shape]`` on this generator's device."""
        numel = math.prod(per_sample_shape)
        j = self.draw
        buf = self._buffer
        if buf is None or buf.shape[2] != numel or not self._first <= j < self._first + buf.shape[1]:
            ahead = max(1, min(64, self.PREFETCH_VALUES // max(1, len(self) * numel)))
            buf = self._buffer = normal(self.seed, self.indices, range(j, j + ahead), numel)
            self._first = j
        self.draw += 1
        return buf[:, j - self._first].reshape(len(self), *per_sample_shape)

    def entropies(self) -> list[int]:
        """One 63-bit integer per sample from the next draw (seeds for per-sample Brownian paths)."""
        s = _signed64(self.seed)
        j = self.draw
        self.draw += 1
        w = philox4x32((torch.zeros_like(self.indices), torch.full_like(self.indices, j),
                        self.indices & _MASK32, self.indices >> 32), (s & _MASK32, (s >> 32) & _MASK32))
        return [int(v) for v in ((w[0] << 31) ^ w[1]).tolist()]
