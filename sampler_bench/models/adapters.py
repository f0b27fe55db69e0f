"""Adapters for outside checkpoints: a diffusers ``UNet2DModel`` with its DDPM schedule as a denoiser.

A DDPM network (Ho et al., arXiv 2006.11239) predicts epsilon (or v, or x0) from the scaled state
x = sqrt(abar_k) x0 + sqrt(1 - abar_k) eps at an integer step k. In the toolkit's notation
(docs/notation.md) step k is the noise level sigma_k = sqrt((1 - abar_k)/abar_k), the
state is x-hat = x / sqrt(abar_k), and the network becomes the denoiser
D(x-hat, sigma) = x-hat - sigma eps(sqrt(abar) x-hat, k(sigma)), with k(sigma) the step whose sigma is
nearest (:class:`~sampler_bench.models.precond.DiscreteVPTime`, EDM's ``iDDPMPrecond.round_sigma``).
On the schedule's own sigmas every solver thus evaluates the network at exactly the inputs DDIM
would, and Euler on that grid *is* DDIM (Song et al., arXiv 2010.02502); a test checks this against
diffusers' own ``DDIMScheduler``.

diffusers is an optional dependency (``pip install 'sampler-bench[diffusers]'``); it is imported only
when an adapter is built. Weights are read with safetensors when the folder has them (diffusers'
``use_safetensors``); otherwise diffusers reads ``.bin`` files with ``torch.load(weights_only=True)``.

A diffusers folder may carry an optional ``sampler-bench.json`` with ``{"dataset": {...},
"reference_split": "train" | "test"}`` (a :func:`sampler_bench.data.load_dataset` config, e.g.
``{"name": "cifar10", "root": "...", "download": true}``), which gives the model its reference data
(``sample_data``) for FID in sweeps; CIFAR-10 FID conventionally uses the 50k training images.
A class-conditional ``UNet2DModel`` (``num_class_embeds``) takes ``class_labels``; when it was trained for
classifier-free guidance the sidecar's ``"null_class": k`` names the embedding that means "no label".
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..processes.gaussian import GaussianProcess
from .base import network_grad_mode, tensor_hash
from .trained import CheckpointError, TrainedModel
from .precond import DiscreteVPTime, VPPrecond

PREDICTION_TYPES = {"epsilon": "eps", "v_prediction": "v", "sample": "x0"}
SIDECAR = "sampler-bench.json"


def import_diffusers():
    """diffusers, after making torchvision importable (diffusers imports it); a clear error if absent."""
    from ..compat import import_torchvision

    try:
        import_torchvision()
    except ImportError:
        pass  # diffusers works without torchvision
    try:
        import diffusers
    except ImportError:
        raise ValueError("the diffusers adapter needs diffusers: pip install 'sampler-bench[diffusers]' "
                         "(on a CPU-only machine add -c constraints.txt so torch is not replaced)") from None
    return diffusers


class _UNetCall(nn.Module):
    """``unet(x, t).sample`` as a plain ``net(x, t)``."""

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.unet = unet

    def forward(self, x: torch.Tensor, t: torch.Tensor, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.unet(x, t, class_labels=class_labels).sample


class DiffusersDenoiser(TrainedModel):
    """A diffusers ``UNet2DModel`` + DDPM ``alphas_cumprod`` as a sweepable model (process 'gaussian').

    The prior is the VP one, N(0, I) in the scaled state, i.e. N(0, (1 + sigma_max^2) I) in x-hat.
    """

    def __init__(self, unet: nn.Module, alphas_cumprod, prediction_type: str = "epsilon", name: str = "diffusers",
                 dataset: dict | None = None, source: str = "", reference_split: str = "test",
                 null_class: int | None = None):
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"unsupported diffusers prediction_type {prediction_type!r}; allowed: {', '.join(PREDICTION_TYPES)}")
        self.time = DiscreteVPTime(alphas_cumprod)
        denoiser = VPPrecond(_UNetCall(unet), PREDICTION_TYPES[prediction_type], self.time)
        cfg = unet.config
        size = cfg.sample_size if isinstance(cfg.sample_size, int) else tuple(cfg.sample_size)
        h, w = (size, size) if isinstance(size, int) else size
        process = GaussianProcess("vp", sigma_min=self.time.sigma_min, sigma_max=self.time.sigma_max)
        config = {"name": name, "adapter": "diffusers.UNet2DModel", "prediction_type": prediction_type, "source": source,
                  "process": process.config(), "shape": [cfg.in_channels, h, w], "dataset": dataset or {},
                  "reference_split": reference_split,
                  "weights_sha256": _state_hash(unet), "alphas_cumprod_hash": tensor_hash(self.time.alphas_cumprod)}
        # class-conditional UNet2DModel (num_class_embeds): labels 0..num_classes-1; a model trained for
        # classifier-free guidance reserves one embedding for "no label" (the sidecar's "null_class")
        embeds = int(getattr(cfg, "num_class_embeds", None) or 0)
        if null_class is not None and not (0 <= null_class < embeds):
            raise ValueError(f"null_class {null_class} is not an embedding of this UNet (num_class_embeds = {embeds})")
        self.null_class = null_class
        self.null_label = null_class is not None
        self.num_classes = embeds - (1 if null_class is not None else 0)
        if embeds:
            config.update(num_class_embeds=embeds, null_class=null_class)
        super().__init__(denoiser, process, (cfg.in_channels, h, w), config, name=name)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        if class_labels is None:
            if self.num_classes and self.null_class is None:
                raise ValueError(f"model {self.name!r} is class-conditional without a null class: give class_labels")
            if self.null_class is not None:
                class_labels = torch.full((x.shape[0],), -1, dtype=torch.int64)
        if class_labels is None:
            return super().__call__(x, sigma)
        labels = torch.as_tensor(class_labels).to(self.device, torch.int64)
        if self.null_class is not None:  # -1 ("no label", guidance's unconditional half) -> the null embedding
            labels = torch.where(labels < 0, torch.full_like(labels, self.null_class), labels)
        with network_grad_mode(x, sigma):  # gradients only when the caller asks for them (models/base.py)
            out = self.denoiser(x.to(self.device), torch.as_tensor(sigma).to(self.device), class_labels=labels)
        return out.to(device=x.device, dtype=x.dtype)

    def fingerprint(self) -> str:
        keys = ("weights_sha256", "alphas_cumprod_hash", "prediction_type", "null_class")
        return tensor_hash(extra={k: self.config[k] for k in keys if k in self.config and (k != "null_class" or self.config[k] is not None)})


def _state_hash(module: nn.Module) -> str:
    sd = module.state_dict()
    return tensor_hash(*[sd[k] for k in sorted(sd)], extra=sorted(sd))


def is_diffusers_dir(path: str | Path) -> bool:
    p = Path(path)
    for cfg in (p / "config.json", p / "unet" / "config.json"):
        if cfg.exists():
            try:
                return json.loads(cfg.read_text()).get("_class_name") == "UNet2DModel"
            except (json.JSONDecodeError, UnicodeDecodeError):
                return False
    return False


def _scheduler_config(p: Path) -> dict[str, Any]:
    for cfg in (p / "scheduler" / "scheduler_config.json", p / "scheduler_config.json"):
        if cfg.exists():
            return json.loads(cfg.read_text())
    raise CheckpointError(f"{p}: no scheduler_config.json (looked in {p / 'scheduler'} and {p}); "
                          "the adapter needs the DDPM schedule the UNet was trained with")


def load_diffusers(path: str | Path, device: str | torch.device = "cpu", name: str | None = None) -> DiffusersDenoiser:
    """A diffusers folder (``UNet2DModel`` at the root or in ``unet/``, plus its scheduler config)."""
    diffusers = import_diffusers()
    p = Path(path).expanduser()
    unet_dir = p / "unet" if (p / "unet" / "config.json").exists() else p
    has_safetensors = any(unet_dir.glob("*.safetensors"))
    unet = diffusers.UNet2DModel.from_pretrained(str(unet_dir), use_safetensors=has_safetensors).eval()
    sched_cfg = _scheduler_config(p)
    scheduler = diffusers.DDPMScheduler.from_config(sched_cfg)
    sidecar = json.loads((p / SIDECAR).read_text()) if (p / SIDECAR).exists() else {}
    model = DiffusersDenoiser(unet, scheduler.alphas_cumprod, sched_cfg.get("prediction_type", "epsilon"),
                              name=name or p.name, dataset=sidecar.get("dataset", {}), source=str(p),
                              reference_split=sidecar.get("reference_split", "test"),
                              null_class=sidecar.get("null_class"))
    return model.to(device)


def ddpm_sigmas(alphas_cumprod, timesteps) -> torch.Tensor:
    """The sigmas of DDPM steps ``timesteps`` (descending), followed by 0: DDIM's grid in x-hat units."""
    ac = torch.as_tensor(alphas_cumprod, dtype=torch.float64)
    t = torch.as_tensor(timesteps).long()
    s = torch.sqrt((1 - ac[t]) / ac[t])
    return torch.cat([s, s.new_zeros(1)])


__all__ = ["DiffusersDenoiser", "load_diffusers", "is_diffusers_dir", "ddpm_sigmas", "import_diffusers"]

