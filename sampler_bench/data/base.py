"""The in-memory dataset every training run and reference statistic reads from.

A :class:`Dataset` holds a fixed train/test split as tensors (uint8 for large image sets, float32
otherwise) plus an affine map to the float values models see (images in [-1, 1]). Splits are fixed by
construction (no random split that could change with a library version), so "the held-out digits"
are the same rows on every machine. ``config`` rebuilds the dataset (it is stored in checkpoints).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class Dataset:
    name: str
    train_raw: torch.Tensor
    test_raw: torch.Tensor
    config: dict[str, Any]
    scale: float = 1.0
    offset: float = 0.0
    train_labels: torch.Tensor | None = None
    test_labels: torch.Tensor | None = None
    #: the analytic law of the data when there is one (toy mixtures): exact denoisers for tests
    distribution: Any = None
    description: str = ""
    _sigma_data: float | None = field(default=None, repr=False)

    def __post_init__(self):
        if tuple(self.train_raw.shape[1:]) != tuple(self.test_raw.shape[1:]):
            raise ValueError(f"dataset {self.name!r}: train and test shapes differ")
        if self.train_raw.shape[0] < 1:
            raise ValueError(f"dataset {self.name!r} has no training data")

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.train_raw.shape[1:])

    def __len__(self) -> int:
        return int(self.train_raw.shape[0])

    def _convert(self, raw: torch.Tensor) -> torch.Tensor:
        return raw.to(torch.float32) * self.scale + self.offset

    def train(self, index=None) -> torch.Tensor:
        """Training rows (float32), all of them or ``index`` (a LongTensor or slice)."""
        return self._convert(self.train_raw if index is None else self.train_raw[index])

    def test(self, index=None) -> torch.Tensor:
        """Held-out rows (float32), all of them or ``index``."""
        return self._convert(self.test_raw if index is None else self.test_raw[index])

    @property
    def sigma_data(self) -> float:
        """EDM's sigma_data: the standard deviation of all training values (float64, chunked)."""
        if self._sigma_data is None:
            s = s2 = 0.0
            count = 0
            for start in range(0, len(self), 4096):
                v = self.train(slice(start, start + 4096)).to(torch.float64)
                s += float(v.sum())
                s2 += float((v**2).sum())
                count += v.numel()
            mean = s / count
            self._sigma_data = float(max(s2 / count - mean**2, 0.0) ** 0.5)
        return self._sigma_data

    def sample_rows(self, n: int, generator=None, split: str = "test") -> torch.Tensor:
        """n rows of ``split``: the first n of a generator-permuted order (with replacement past the set)."""
        if split not in ("train", "test"):
            raise ValueError(f"dataset {self.name!r}: split must be 'train' or 'test', got {split!r}")
        raw, get = (self.test_raw, self.test) if split == "test" else (self.train_raw, self.train)
        m = int(raw.shape[0])
        if n <= m:
            idx = torch.arange(m) if generator is None else torch.randperm(m, generator=_cpu(generator))
            return get(idx[:n])
        return get(torch.randint(m, (n,), generator=_cpu(generator)))

    def sample_test(self, n: int, generator=None) -> torch.Tensor:
        """n held-out rows (see :meth:`sample_rows`)."""
        return self.sample_rows(n, generator, "test")


def _cpu(generator):
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    raise ValueError("data draws take one torch.Generator (not a list)")
