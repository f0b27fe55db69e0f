"""The k-diffusion wrapper: any model(x, sigma, **extra_args) plugs in unchanged."""

from __future__ import annotations

import torch

import sampler_bench as sb
from sampler_bench.models.guidance import Conditioned
from sampler_bench.models.plugin import load_plugin


class TinyKDiffusionNet(torch.nn.Module):
    """A k-diffusion-style denoiser D(x, sigma, y=...) (EDM preconditioning around a linear layer)."""

    def __init__(self, dim=4, classes=3):
        super().__init__()
        torch.manual_seed(0)
        self.lin = torch.nn.Linear(dim + 1, dim).double()
        self.emb = torch.nn.Embedding(classes, dim).double()

    def forward(self, x, sigma, y=None, scale=1.0):
        s = sigma.reshape(-1, 1)
        h = self.lin(torch.cat([x / torch.sqrt(s**2 + 1), torch.log(s) / 4], 1))
        if y is not None:
            h = h + self.emb(y)
        return (x + scale * s * h) / (1 + s**2)


def build(dim=4):
    return TinyKDiffusionNet(dim)


def test_a_kdiffusion_denoiser_samples_as_it_would_in_kdiffusion():
    net = TinyKDiffusionNet()
    m = load_plugin("sampler_bench.models.kdiffusion:from_callable",
                    {"model": "test_kdiffusion_wrapper:build", "sigma_min": 0.002, "sigma_max": 80.0, "shape": [4],
                     "extra_args": {"scale": 0.5}, "num_classes": 3, "label_key": "y"})
    assert m.num_classes == 3 and m.shape == (4,)
    x = m.prior(3, generator=[torch.Generator().manual_seed(s) for s in range(3)])
    labels = torch.tensor([2, 0, 1])
    sigmas = sb.schedules.karras(8, 0.002, 80.0)
    ours = sb.sample("dpmpp_2m", Conditioned(m, labels), x, sigmas)
    # the same network called directly with k-diffusion's extra_args gives the same samples
    direct = sb.sample("dpmpp_2m", lambda x, s: net(x, s, y=labels, scale=0.5), x, sigmas)
    torch.testing.assert_close(ours, direct, rtol=0, atol=0)
