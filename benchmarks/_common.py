"""Shared pieces of the benchmark scripts: where they ran, a small image model, offline Inception weights.

Every script prints a Markdown block (command, device, date, software) followed by its medians and
ratios; ``benchmarks/RESULTS.md`` collects those blocks.
"""

from __future__ import annotations

import datetime
import os
import platform
import shlex
import statistics
import sys
from pathlib import Path
from unittest import mock

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def device_label(device: str | torch.device) -> str:
    """'NVIDIA H100 80GB HBM3' or 'AMD EPYC ..., 2 cores usable, 1 torch threads' (per process)."""
    from sampler_bench.hardware import describe  # imported late: the scripts put ROOT on sys.path first

    return describe(device)


def header(title: str, device: str | torch.device) -> list[str]:
    """The Markdown lines every result block starts with."""
    cmd = " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv])
    env = " ".join(f"{k}={os.environ[k]}" for k in ("OMP_NUM_THREADS",) if k in os.environ)
    return [
        f"### {title}", "",
        f"- command: `{(env + ' ' if env else '') + cmd}`",
        f"- device: {device_label(device)}",
        f"- date: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- software: python {platform.python_version()}, torch {torch.__version__}"
        + (f", CUDA {torch.version.cuda}" if torch.device(device).type == "cuda" else ""),
        "",
    ]


def median(values) -> float:
    return float(statistics.median(values))


def sync(device: str | torch.device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def image_model(size: int, channels: int, channel_mult, device: str, seed: int = 0, attn=(), num_blocks: int = 1):
    """An EDM-preconditioned UNet with random weights on ``device`` (the Model contract; timing only).

    Its weights are random, so its samples are not images of anything; every cost (network, solver,
    feature extraction, PNG files) is the one a trained network of the same size has.
    """
    from sampler_bench.models.checkpoint import TrainedModel
    from sampler_bench.models.networks import UNet
    from sampler_bench.models.precond import EDMPrecond
    from sampler_bench.processes.catalog import process_from_config

    torch.manual_seed(seed)
    net = UNet((3, size, size), channels=channels, channel_mult=tuple(channel_mult), attn_resolutions=tuple(attn),
               num_blocks=num_blocks)
    model = TrainedModel(EDMPrecond(net, sigma_data=0.5), process_from_config({"name": "edm"}), (3, size, size),
                         config={}, name=f"unet{size}-random", fingerprint=f"unet{size}-c{channels}-random-{seed}")
    return model.to(device)


def random_inception_weights(path: str | os.PathLike) -> Path:
    """A state-dict file with torch-fidelity's InceptionV3 keys and shapes and random values.

    There is no network here, so the real FID weights cannot be downloaded; the architecture (and so
    the cost of a feature extraction) is exactly torch-fidelity's ``inception-v3-compat``.
    """
    path = Path(path)
    if path.exists():
        return path
    from sampler_bench.compat import import_torch_fidelity

    import_torch_fidelity()
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    torch.manual_seed(0)
    with mock.patch.object(FeatureExtractorInceptionV3, "load_state_dict", lambda self, *a, **k: None), \
            mock.patch("torch_fidelity.feature_extractor_inceptionv3.load_state_dict_from_url", lambda *a, **k: {}):
        net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)
    return path
