"""A model loaded from files: a trained denoiser with its process, noise range, data shape and data.

:class:`TrainedModel` satisfies the :class:`~sampler_bench.models.base.Model` contract; checkpoints
(:mod:`sampler_bench.models.checkpoint`) and adapters for outside formats
(:mod:`sampler_bench.models.adapters`) both build one.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .. import data as _data  # a trained model names its dataset; importing it also registers "digits-classifier"
from ..processes.base import Process
from .base import network_grad_mode, tensor_hash


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded; the message says why and what to do."""


class TrainedModel:
    """A trained denoiser with its process, noise range, data shape and held-out data (Model contract)."""

    def __init__(self, denoiser: nn.Module, process: Process, shape, config: dict[str, Any], name: str = "model",
                 fingerprint: str | None = None):
        self.denoiser = denoiser.eval()
        self.process_def = process
        self.process = process.kind
        #: the CLD process of a CLD model (what the CLD samplers read), None otherwise
        self.cld = process if process.kind == "cld" else None
        self.shape = tuple(int(s) for s in shape)
        self.sigma_min = process.sigma_min
        self.sigma_max = process.sigma_max
        self.config = config
        self.name = name
        self._fingerprint = fingerprint
        self._dataset = None
        self.description = config.get("description", "")

    @property
    def device(self) -> torch.device:
        p = next(self.denoiser.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    def to(self, device) -> "TrainedModel":
        self.denoiser.to(device)
        return self

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        with network_grad_mode(x, sigma):  # gradients only when the caller asks for them (models/base.py)
            dev = self.device
            out = self.denoiser(x.to(dev), torch.as_tensor(sigma).to(dev))
        return out.to(device=x.device, dtype=x.dtype)

    @property
    def denoise_with_rate(self):
        """(D, kappa) from one evaluation, for models whose network has a birth/death-rate head (Yukawa);
        AttributeError for the others, so ``getattr(model, 'denoise_with_rate', None)`` tells them apart."""
        if not hasattr(self.denoiser, "forward_with_rate"):
            raise AttributeError(f"model {self.name!r} ({self.process}) has no birth/death-rate head")
        return self._denoise_with_rate

    def _denoise_with_rate(self, x: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with network_grad_mode(x, sigma):
            dev = self.device
            D, rate = self.denoiser.forward_with_rate(x.to(dev), torch.as_tensor(sigma).to(dev))
        return D.to(device=x.device, dtype=x.dtype), rate.to(device=x.device, dtype=x.dtype)

    def prior(self, n: int, generator=None, dtype: torch.dtype = torch.float64, device=None) -> torch.Tensor:
        """n starting states at sigma_max drawn from the process's prior (per-sample generators allowed)."""
        return self.process_def.prior(n, self.shape, generator, dtype=dtype, device=device)

    def data_from_state(self, states: torch.Tensor) -> torch.Tensor:
        """The generated data in a sampler's output (the process's layout: u[:, 0] for CLD, else the output)."""
        return self.process_def.traits.data_from_state(states)

    @property
    def dataset(self):
        if self._dataset is None and self.config.get("dataset"):
            self._dataset = _data.load_dataset(dict(self.config["dataset"]))
        return self._dataset

    @property
    def distribution(self):
        """The analytic data law when the training set has one (toy mixtures), else None."""
        ds = self.dataset if self.config.get("dataset", {}).get("name") in ("ring", "gmm") else None
        return getattr(ds, "distribution", None)

    def sample_data(self, n: int, generator=None) -> torch.Tensor | None:
        """n rows of the dataset's reference split (None when the model has no dataset attached).

        The split is the held-out one unless the config says ``"reference_split": "train"`` (the
        convention of CIFAR-10 FID, whose reference statistics are those of the 50k training images).
        """
        ds = self.dataset
        if ds is None:
            return None
        split = self.config.get("reference_split", "test")
        return ds.sample_rows(n, generator, split).to(torch.float64).reshape(n, *self.shape)

    def floor_data(self, n: int, generator=None) -> torch.Tensor | None:
        """n rows for the noise floor: rows of the split that :meth:`sample_data` does *not* read.

        The noise floor scores ``n`` real rows against the reference statistics; rows the reference
        was computed on would pull it towards 0 (the digits reference is all 299 held-out rows, so a
        floor from the held-out split would score the reference against itself). The training and
        held-out splits of a dataset are disjoint by construction (fixed index rules,
        :mod:`sampler_bench.data`), so the floor reads the training split when the reference is the
        held-out one and the held-out split when it is the training one (CIFAR-10's convention).
        """
        ds = self.dataset
        if ds is None:
            return None
        split = "train" if self.config.get("reference_split", "test") == "test" else "test"
        return ds.sample_rows(n, generator, split).to(torch.float64).reshape(n, *self.shape)

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = tensor_hash(extra={"weights_sha256": self.config.get("weights_sha256"),
                                                   "process": self.process_def.config()})
        return self._fingerprint

    def __repr__(self) -> str:
        return f"<TrainedModel {self.name!r} {self.process_def} shape={list(self.shape)}>"
