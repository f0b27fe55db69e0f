"""Latent models: a decoder applied to the samples before image metrics (``decode = "module:fn"``).

A latent diffusion model (Rombach et al., arXiv 2112.10752) samples in a latent space; FID and the
other image metrics score ``fn(latents)``. The decoder is the user's function (e.g. a diffusers VAE's
``decode(z / scaling_factor).sample``), loaded and probed once like a plug-in model: it must map a
batch [B, *latent shape] to a finite floating tensor [B, *image shape]. The sweep times it apart from
sampling (``decode_s`` in every value's provenance), so samples/s measures the sampler alone.

:class:`DecodedView` is what the metrics see: the model with the decoded shape, its reference data
(``sample_data``, which must already be images) and a fingerprint that includes the decoder.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from .base import tensor_hash
from .plugin import PluginError, import_object


def load_decoder(ref: str, model, device: str | torch.device = "cpu") -> tuple[Callable, tuple[int, ...]]:
    """Import ``ref`` ("module:fn") and probe it on two prior draws; returns (fn, decoded shape)."""
    fn = import_object(ref, "decoder")
    gens = [torch.Generator().manual_seed(s) for s in (0, 1)]
    z = model.prior(2, generator=gens).to(device)
    z = z / float(model.sigma_max)  # a latent of data scale, not of the prior's
    try:
        with torch.no_grad():
            out = fn(z)
    except Exception as e:
        raise PluginError(f"decoder {ref!r} raised {type(e).__name__}: {e} on a batch of shape {list(z.shape)}") from None
    if not isinstance(out, torch.Tensor) or not out.is_floating_point():
        raise PluginError(f"decoder {ref!r} returned {type(out).__name__}; expected a floating torch.Tensor [B, C, H, W]")
    if out.shape[0] != z.shape[0]:
        raise PluginError(f"decoder {ref!r} returned {out.shape[0]} items for a batch of {z.shape[0]}")
    if not torch.isfinite(out).all():
        raise PluginError(f"decoder {ref!r} returned NaN or inf")
    return fn, tuple(int(s) for s in out.shape[1:])


class DecodedView:
    """The model as the metrics see it: decoded shape, reference data and a fingerprint with the decoder."""

    def __init__(self, model, ref: str, shape: tuple[int, ...]):
        self.model = model
        self.decoder = ref
        self.shape = shape
        self.name = getattr(model, "name", "model")
        self.process = getattr(model, "process", "gaussian")
        self.distribution = None  # an analytic law of the latents says nothing about the images

    def sample_data(self, n: int, generator=None):
        data = getattr(self.model, "sample_data", None)
        return data(n, generator=generator) if data is not None else None

    def fingerprint(self) -> str:
        return tensor_hash(extra={"model": self.model.fingerprint(), "decoder": self.decoder, "shape": list(self.shape)})

    def __getattr__(self, name: str) -> Any:  # everything else is the model's
        return getattr(self.model, name)


__all__ = ["load_decoder", "DecodedView"]
