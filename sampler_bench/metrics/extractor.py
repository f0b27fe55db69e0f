"""The feature-extractor contract: ``extractor(x) -> [B, F]`` float64 features with a fingerprint.

Concrete extractors (raw, Inception, a user's network) and their registry live in
:mod:`sampler_bench.metrics.features`; this module is what they all build on.
"""

from __future__ import annotations

from typing import Any

import torch


class FeatureExtractor:
    """Base class: ``extractor(x) -> [B, F]`` float64 features, plus fingerprint and provenance."""

    name: str = ""
    description: str = ""

    def __init__(self, device: str | torch.device = "cpu"):
        self.device = torch.device(device)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            out = self.extract(x.to(self.device))
        return out.reshape(out.shape[0], -1).to(torch.float64)

    def extract(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @property
    def fingerprint(self) -> str:
        """Identifies the features: equal fingerprints give equal features for equal inputs."""
        return self.name

    def provenance(self) -> dict[str, Any]:
        return {"feature_extractor": self.name, "extractor_fingerprint": self.fingerprint}

    def check_input(self, shape: tuple[int, ...]) -> str | None:
        """None if samples of this shape are accepted, else the reason they are not."""
        return None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


def image_shape_problem(shape: tuple[int, ...]) -> str | None:
    """Why samples of ``shape`` are not images the Inception extractor takes (None if they are)."""
    if len(shape) != 3 or shape[0] not in (1, 3):
        return f"inception-v3-compat needs images of shape [1 or 3, H, W]; the model's samples are {list(shape)}"
    return None
