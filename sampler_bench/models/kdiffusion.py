"""A k-diffusion-style denoiser as a plug-in model: any ``model(x, sigma, **extra_args)``.

k-diffusion (``k_diffusion/external.py``) and ComfyUI normalise every network to a denoiser
``D(x, sigma, **extra_args)`` in the EDM parameterisation (Karras et al., arXiv 2206.00364), the
toolkit's own convention; the wrapper only adds what a sweep needs to know and the model does not
carry: its noise range, data shape and, for class-conditional models, the keyword the class label
goes in (``label_key``, e.g. ``"class_labels"`` or ``"y"``).

From a spec::

    [[model]]
    name = "my-kdiff"
    python = "sampler_bench.models.kdiffusion:from_callable"
    args = { model = "mypackage.nets:build_denoiser", sigma_min = 0.002, sigma_max = 80.0, shape = [3, 32, 32],
             model_args = { width = 128 }, weight_files = ["weights.safetensors"] }
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

from .plugin import NULL_LABEL, import_object


class KDiffusionDenoiser:
    """``model(x, sigma, **extra_args)`` with the plug-in protocol's attributes (process 'gaussian')."""

    process = "gaussian"

    def __init__(self, model: Callable, *, sigma_min: float, sigma_max: float, shape: Sequence[int],
                 extra_args: dict[str, Any] | None = None, num_classes: int = 0, label_key: str = "class_labels",
                 null_label: bool = False, weight_files: Sequence[str] = (), name: str = "k-diffusion"):
        self.model = model
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)
        self.shape = tuple(int(s) for s in shape)
        self.extra_args = dict(extra_args or {})
        self.num_classes = int(num_classes)
        self.label_key = label_key
        self.null_label = bool(null_label)
        self.weight_files = list(weight_files)
        self.name = name

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        extra = dict(self.extra_args)
        if class_labels is not None:
            extra[self.label_key] = class_labels
        return self.model(x, sigma, **extra)


def from_callable(model: str, sigma_min: float, sigma_max: float, shape: Sequence[int], model_args: dict | None = None,
                  extra_args: dict | None = None, num_classes: int = 0, label_key: str = "class_labels",
                  null_label: bool = False, weight_files: Sequence[str] = ()) -> KDiffusionDenoiser:
    """Factory for specs: ``model`` is "module:builder"; ``builder(**model_args)`` returns the k-diffusion denoiser."""
    build = import_object(model, "model builder")
    net = build(**(model_args or {}))
    if isinstance(net, torch.nn.Module):
        net = net.eval()
    return KDiffusionDenoiser(net, sigma_min=sigma_min, sigma_max=sigma_max, shape=shape, extra_args=extra_args,
                              num_classes=num_classes, label_key=label_key, null_label=null_label,
                              weight_files=weight_files, name=model.split(":")[-1])


__all__ = ["KDiffusionDenoiser", "from_callable", "NULL_LABEL"]
