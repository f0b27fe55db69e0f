"""Networks and preconditioning: EDM coefficients, VP conversion table, batch independence."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sampler_bench.models.networks import MLP, UNet, build_network
from sampler_bench.models.precond import (ContinuousVPTime, DiscreteVPTime, EDMPrecond, VEPrecond, VPPrecond,
                                          build_precond, denoised_to_vp_target, precond_config, vp_output_to_denoised)
from sampler_bench.processes.analytic import GaussianMixture
from sampler_bench.solvers.schedules import vp_sigma


class Recorder(nn.Module):
    """A 'network' that records its inputs and returns a fixed function of them (float64)."""

    def __init__(self, fn):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros((), dtype=torch.float64))  # sets the network dtype
        self.fn = fn
        self.seen = None

    def forward(self, x, c):
        self.seen = (x.clone(), c.clone())
        return self.fn(x, c)


def test_edm_precond_applies_the_coefficients_of_edm_table_1():
    sd = 0.6
    net = Recorder(lambda x, c: torch.sin(x) + c.reshape(-1, 1))
    pre = EDMPrecond(net, sigma_data=sd)
    x = torch.randn(4, 3, dtype=torch.float64)
    sigma = torch.tensor([0.002, 0.3, 2.0, 80.0], dtype=torch.float64)
    out = pre(x, sigma)
    s = sigma[:, None]
    c_skip, c_out = sd**2 / (s**2 + sd**2), s * sd / torch.sqrt(s**2 + sd**2)
    c_in, c_noise = 1 / torch.sqrt(s**2 + sd**2), torch.log(sigma) / 4
    torch.testing.assert_close(net.seen[0], c_in * x)
    torch.testing.assert_close(net.seen[1], c_noise)
    torch.testing.assert_close(out, c_skip * x + c_out * (torch.sin(c_in * x) + c_noise[:, None]))


@pytest.mark.parametrize("cfg, shape", [({"type": "mlp", "hidden": 32, "depth": 2}, (5,)),
                                        ({"type": "unet", "channels": 8, "channel_mult": [1, 2]}, (1, 8, 8))])
def test_untrained_network_under_edm_precond_is_the_skip_connection(cfg, shape):
    # Zero-initialised output layers: D(x, sigma) = c_skip(sigma) x before any training.
    pre = EDMPrecond(build_network(cfg, shape), sigma_data=0.5)
    x = torch.randn(3, *shape, dtype=torch.float64)
    sigma = torch.tensor([0.1, 1.0, 10.0], dtype=torch.float64)
    c_skip = (0.25 / (sigma**2 + 0.25)).reshape(-1, *([1] * len(shape)))
    torch.testing.assert_close(pre(x, sigma), c_skip * x, rtol=0, atol=0)


@pytest.mark.parametrize("cfg, shape", [
    ({"type": "mlp", "hidden": 32, "depth": 2}, (6,)),
    ({"type": "unet", "channels": 8, "channel_mult": [1, 2], "attn_resolutions": [4]}, (2, 8, 8)),
])
def test_network_output_for_a_sample_does_not_depend_on_the_rest_of_the_batch(cfg, shape):
    # Per-sample seeds need this: no batch statistics anywhere (LayerNorm/GroupNorm are per sample).
    torch.manual_seed(0)
    net = build_network(cfg, shape)
    for p in net.parameters():  # leave the zero init so the output is not trivially 0
        nn.init.normal_(p, std=0.2)
    net.eval()
    x = torch.randn(5, *shape)
    c = torch.randn(5)
    full = net(x, c)
    one = torch.cat([net(x[i:i + 1], c[i:i + 1]) for i in range(5)])
    torch.testing.assert_close(full, one, rtol=1e-5, atol=1e-5)


def test_unet_keeps_the_image_shape_at_every_supported_size():
    for shape, mult in [((1, 8, 8), [1, 2, 2]), ((1, 24, 24), [1, 2, 2]), ((3, 32, 32), [1, 2, 2, 2])]:
        net = UNet(shape, channels=8, channel_mult=mult)
        assert net(torch.zeros(2, *shape), torch.zeros(2)).shape == (2, *shape)


@pytest.mark.parametrize("cfg, shape, message", [
    ({"type": "unet", "channels": 8, "channel_mult": [1, 2, 2]}, (1, 25, 25), "not divisible"),
    ({"type": "unet"}, (64,), "use the MLP"),
    ({"type": "resnet"}, (2,), "unknown network type"),
    ({"type": "mlp", "width": 3}, (2,), "width"),
])
def test_bad_network_config_raises_one_readable_value_error(cfg, shape, message):
    with pytest.raises(ValueError, match=message):
        build_network(cfg, shape)


def test_fourier_frequencies_are_reproducible_across_builds():
    a, b = MLP((2,)), MLP((2,))
    torch.testing.assert_close(a.emb.fourier.freqs, b.emb.fourier.freqs, rtol=0, atol=0)


# --- VP conversion table (docs/notation.md) --------------------------------------------------------

@pytest.mark.parametrize("prediction", ["eps", "v", "x0"])
def test_vp_target_and_denoised_conversions_are_inverse(prediction):
    g = torch.Generator().manual_seed(0)
    xh = 3 * torch.randn(6, 4, generator=g, dtype=torch.float64)
    d = torch.randn(6, 4, generator=g, dtype=torch.float64)
    sigma = torch.tensor([0.01, 0.1, 1.0, 5.0, 40.0, 150.0], dtype=torch.float64)
    target = denoised_to_vp_target(d, xh, sigma, prediction)
    torch.testing.assert_close(vp_output_to_denoised(target, xh, sigma, prediction), d)


class ExactVPNet(nn.Module):
    """The exact eps / v / x0 network of a Gaussian mixture in VP units, at EDM's continuous VP time."""

    def __init__(self, gmm, prediction, time):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros((), dtype=torch.float64))
        self.gmm, self.prediction, self.time = gmm, prediction, time

    def forward(self, x_vp, t):
        sigma = vp_sigma(t / (self.time.M - 1), self.time.beta_d, self.time.beta_min)
        alpha = (1 / torch.sqrt(1 + sigma**2))[:, None]
        s_vp = alpha * sigma[:, None]
        xh = x_vp / alpha
        y = self.gmm(xh, sigma)
        eps = (x_vp - alpha * y) / s_vp  # x = alpha y + sigma_VP eps
        return {"eps": eps, "x0": y, "v": alpha * eps - s_vp * y}[self.prediction]


@pytest.mark.parametrize("prediction", ["eps", "v", "x0"])
def test_vp_precond_turns_the_exact_vp_network_into_the_exact_denoiser(prediction):
    gmm = GaussianMixture.isotropic(torch.ones(3), torch.tensor([[0.0, 1.0], [2.0, -1.0], [-1.5, 0.5]]), 0.3)
    time = ContinuousVPTime()
    model = VPPrecond(ExactVPNet(gmm, prediction, time), prediction, time)
    xh = 2 * torch.randn(5, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    sigma = torch.tensor([0.02, 0.2, 1.0, 8.0, 60.0], dtype=torch.float64)
    torch.testing.assert_close(model(xh, sigma), gmm(xh, sigma), rtol=1e-9, atol=1e-9)


def test_discrete_vp_time_maps_each_schedule_sigma_to_its_own_step():
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    ac = torch.cumprod(1 - betas, 0)
    t = DiscreteVPTime(ac)
    sig = torch.sqrt((1 - ac) / ac)
    idx = torch.tensor([0, 1, 17, 500, 998, 999])
    assert t(sig[idx]).tolist() == idx.tolist()
    assert t.sigma_min == pytest.approx(float(sig[0])) and t.sigma_max == pytest.approx(float(sig[-1]))


def test_ve_precond_is_x_plus_sigma_F():
    net = Recorder(lambda x, c: torch.cos(x) * c.reshape(-1, 1))
    x = torch.randn(2, 3, dtype=torch.float64)
    sigma = torch.tensor([0.5, 20.0], dtype=torch.float64)
    out = VEPrecond(net)(x, sigma)
    torch.testing.assert_close(out, x + sigma[:, None] * torch.cos(x) * torch.log(sigma / 2)[:, None])


@pytest.mark.parametrize("cfg", [{"type": "edm", "sigma_data": 0.7}, {"type": "ve"},
                                 {"type": "vp", "prediction": "v", "beta_d": 19.9, "beta_min": 0.1, "M": 1000}])
def test_precond_config_round_trips(cfg):
    assert precond_config(build_precond(cfg, MLP((2,), hidden=8, depth=1))) == cfg


def test_unknown_vp_prediction_is_rejected_with_the_allowed_values():
    with pytest.raises(ValueError, match="eps, v, x0"):
        VPPrecond(MLP((2,)), prediction="score")
