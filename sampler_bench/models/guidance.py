"""Conditioning and classifier-free guidance (Ho & Salimans, arXiv 2207.12598, eq. 6).

Class labels per sample follow EDM's ``generate.py`` convention: sample ``i`` has its own generator
seeded with ``seed + i``; the prior's float32 normal draws come first, then one
``randint(num_classes)`` from the same generator. A label is therefore a function of ``(seed, i)``
only -- the same for any batch size or number of ranks -- and equal to the label EDM's code gives
the image of seed ``seed + i``.

Guidance wraps a conditional denoiser ``D(x, sigma, class_labels=c)`` into
``D_w = D(x, s, none) + w (D(x, s, c) - D(x, s, none))``. The scale ``w`` is part of the model's
fingerprint, hence of every cell's identity. ``w = 1`` is the conditional model itself and costs one
network evaluation; any other ``w`` costs two. When the model accepts the null label (-1) in a
batch (``null_label = True``) the two halves run as one forward of batch 2B.

Evaluation counts (papers differ: DPM-Solver and diff-sampler count a guided call as 2 NFE, EDM2 and
most samplers' papers as 1): the solver's NFE (``nfe_counted`` of a cell) counts *guided denoiser*
evaluations; :class:`EvaluationCounter` also counts *network* evaluations per sample and forward
calls, which the sweep stores with every value.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch

from .base import tensor_hash
from .plugin import NULL_LABEL


def draw_class_labels(generators: Sequence[torch.Generator], num_classes: int, device=None) -> torch.Tensor:
    """One label per generator (``randint(num_classes)``, EDM's ``StackedRandomGenerator.randint``)."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    labels = [torch.randint(num_classes, size=[], generator=g, device=g.device) for g in generators]
    out = torch.stack(labels) if labels else torch.zeros(0, dtype=torch.int64)
    return out.to(device) if device is not None else out


def class_labels_for(seeds: Sequence[int], shape: Sequence[int], num_classes: int, device="cpu") -> torch.Tensor:
    """The labels of samples with these seeds, recomputed from the seeds alone (the prior draw skipped first)."""
    gens = []
    for s in seeds:
        g = torch.Generator(device=device).manual_seed(int(s))
        torch.randn(tuple(shape), generator=g, device=device, dtype=torch.float32)  # the prior's draw
        gens.append(g)
    return draw_class_labels(gens, num_classes)


class EvaluationCounter:
    """Network evaluations (per sample) and forward calls of a model during one batch."""

    def __init__(self):
        self.network_evals = 0
        self.forward_calls = 0

    def add(self, evals: int, calls: int) -> None:
        self.network_evals += evals
        self.forward_calls += calls


class Conditioned:
    """``model(x, sigma, class_labels=labels)`` as a plain denoiser ``D(x, sigma)`` for one batch."""

    def __init__(self, model, labels: torch.Tensor | None, counter: EvaluationCounter | None = None):
        self.model = model
        self.labels = labels
        self.counter = counter

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        kw = {}
        if self.labels is not None:
            if self.labels.shape[0] != x.shape[0]:
                raise ValueError(f"a batch of {x.shape[0]} states was given {self.labels.shape[0]} class labels; "
                                 "a solver must evaluate the whole batch at once")
            kw["class_labels"] = self.labels
        if isinstance(self.model, GuidedModel):
            return self.model(x, sigma, counter=self.counter, **kw)
        if self.counter is not None:
            self.counter.add(1, 1)
        return self.model(x, sigma, **kw)

    def denoise_with_rate(self, x: torch.Tensor, sigma: torch.Tensor):
        """(D, kappa) of a model with a birth/death-rate head (Yukawa); such models are unconditional."""
        if self.labels is not None:
            raise ValueError("class-conditional models have no birth/death-rate head (Yukawa models are unconditional)")
        if self.counter is not None:
            self.counter.add(1, 1)
        return self.model.denoise_with_rate(x, sigma)

    def __getattr__(self, name: str):
        # The wrapped model's own attributes (e.g. CLD's process_def, which gDDIM checks) stay visible
        # to the solvers through this per-batch wrapper.
        if name in ("model", "labels", "counter"):
            raise AttributeError(name)
        return getattr(self.model, name)


class GuidedModel:
    """Classifier-free guidance of a class-conditional model at scale ``w`` (a Model, fingerprinted with w)."""

    def __init__(self, model, scale: float):
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
            raise ValueError(f"guidance scale must be a finite number, got {scale!r}")
        if not getattr(model, "num_classes", 0):
            raise ValueError(f"guidance needs a class-conditional model (num_classes > 0); "
                             f"model {getattr(model, 'name', '?')!r} has none")
        self.model = model
        self.scale = float(scale)
        self.num_classes = model.num_classes
        self.null_label = bool(getattr(model, "null_label", False))
        for attr in ("sigma_min", "sigma_max", "shape", "process", "name", "description"):
            setattr(self, attr, getattr(model, attr, None))
        for attr in ("sample_data", "floor_data", "data_from_state", "cld", "prior", "weight_files"):
            if getattr(model, attr, None) is not None:
                setattr(self, attr, getattr(model, attr))

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, class_labels: torch.Tensor | None = None,
                 counter: EvaluationCounter | None = None) -> torch.Tensor:
        if class_labels is None:
            raise ValueError("a guided model needs class_labels for every sample")
        if self.scale == 1.0:  # D_1 = D(x, s, c) exactly; one network evaluation
            if counter is not None:
                counter.add(1, 1)
            return self.model(x, sigma, class_labels=class_labels)
        if self.null_label:  # both halves in one forward of batch 2B
            out = self.model(torch.cat([x, x]), torch.cat([sigma, sigma]),
                             class_labels=torch.cat([class_labels, torch.full_like(class_labels, NULL_LABEL)]))
            cond, uncond = out.chunk(2)
            calls = 1
        else:
            cond = self.model(x, sigma, class_labels=class_labels)
            uncond = self.model(x, sigma)
            calls = 2
        if counter is not None:
            counter.add(2, calls)
        return uncond + self.scale * (cond - uncond)

    def fingerprint(self) -> str:
        return tensor_hash(extra={"model": self.model.fingerprint(), "guidance_scale": self.scale})

    def provenance(self) -> dict[str, Any]:
        inner = self.model.provenance() if hasattr(self.model, "provenance") else {}
        return {**inner, "guidance_scale": self.scale, "guidance": "classifier-free (Ho & Salimans 2022)"}


__all__ = ["draw_class_labels", "class_labels_for", "EvaluationCounter", "Conditioned", "GuidedModel"]
