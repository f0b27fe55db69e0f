"""Models: the denoiser contract, built-in analytic models, trained networks and checkpoints."""

from .base import AnalyticModel, Model, tensor_hash
from .builtin import builtin_model
from .checkpoint import load_model, save_checkpoint
from .trained import CheckpointError, TrainedModel
from .networks import MLP, UNet, build_network
from .precond import EDMPrecond, VEPrecond, VPPrecond

__all__ = ["AnalyticModel", "Model", "tensor_hash", "builtin_model",
           "CheckpointError", "TrainedModel", "load_model", "save_checkpoint", "MLP", "UNet", "build_network",
           "EDMPrecond", "VEPrecond", "VPPrecond"]
