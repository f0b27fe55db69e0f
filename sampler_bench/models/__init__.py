"""Models: the denoiser contract, built-in analytic models, trained networks and checkpoints."""

from .base import AnalyticModel, Model, tensor_hash
from .builtin import builtin_model

__all__ = ["AnalyticModel", "Model", "tensor_hash", "builtin_model"]
