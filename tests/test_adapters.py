"""diffusers UNet2DModel adapter: Euler on the DDPM sigmas equals diffusers' own DDIM (eta = 0)."""

from __future__ import annotations

import json

import pytest
import torch

import sampler_bench as sb

try:
    from sampler_bench.models.adapters import import_diffusers

    import_diffusers()
    HAVE_DIFFUSERS = True
except ValueError:
    HAVE_DIFFUSERS = False

pytestmark = pytest.mark.skipif(not HAVE_DIFFUSERS, reason="diffusers is not installed (optional: pip install 'sampler-bench[diffusers]')")


@pytest.fixture(scope="module")
def unet():
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    net = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, layers_per_block=1, block_out_channels=(8, 16),
                      down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
                      norm_num_groups=4, attention_head_dim=4)
    return net.double().eval()


def _ddim(unet, prediction_type, steps, x_T):
    from diffusers import DDIMScheduler

    sched = DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=False, set_alpha_to_one=True,
                          prediction_type=prediction_type)
    sched.set_timesteps(steps)
    # diffusers keeps abar in float32 and takes its square roots there (~1e-7 relative); in float64
    # the two samplers must agree to round-off.
    sched.alphas_cumprod = sched.alphas_cumprod.double()
    sched.final_alpha_cumprod = sched.final_alpha_cumprod.double()
    x = x_T.clone()
    with torch.no_grad():
        for t in sched.timesteps:
            x = sched.step(unet(x, t).sample, t, x).prev_sample
    return x, sched


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_euler_on_the_ddpm_sigmas_reproduces_diffusers_ddim(unet, prediction_type):
    from sampler_bench.models.adapters import DiffusersDenoiser, ddpm_sigmas

    x_T = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ref, sched = _ddim(unet, prediction_type, 10, x_T)
    model = DiffusersDenoiser(unet, sched.alphas_cumprod, prediction_type)
    sigmas = ddpm_sigmas(sched.alphas_cumprod, sched.timesteps)
    # DDIM's state is the scaled x = sqrt(abar) x-hat; at the end abar = 1 and both are x0.
    x0 = x_T / torch.sqrt(sched.alphas_cumprod[sched.timesteps[0]].double())
    out = sb.sample("euler", model, x0, sigmas)
    torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-9)


def test_adapter_satisfies_the_model_contract(unet):
    from diffusers import DDPMScheduler

    from sampler_bench.models.adapters import DiffusersDenoiser

    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
    model = DiffusersDenoiser(unet, sched.alphas_cumprod)
    ac = sched.alphas_cumprod.double()
    assert model.shape == (1, 8, 8) and model.process == "gaussian"
    assert model.sigma_max == pytest.approx(float(torch.sqrt((1 - ac[-1]) / ac[-1])))
    assert model.sigma_min == pytest.approx(float(torch.sqrt((1 - ac[0]) / ac[0])))
    gens = [torch.Generator().manual_seed(s) for s in (5, 6)]
    x = model.prior(2, generator=gens)
    torch.testing.assert_close(x[1:], model.prior(1, generator=[torch.Generator().manual_seed(6)]))
    assert model(x, torch.full((2,), model.sigma_max, dtype=torch.float64)).shape == x.shape
    assert len(model.fingerprint()) == 16


def test_load_model_reads_a_saved_diffusers_folder(unet, tmp_path):
    from diffusers import DDPMScheduler

    unet.float().save_pretrained(tmp_path / "unet", safe_serialization=True)
    unet.double()
    DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear").save_pretrained(tmp_path / "scheduler")
    (tmp_path / "sampler-bench.json").write_text(json.dumps({"dataset": {"name": "digits"}, "reference_split": "train"}))
    model = sb.load_model(tmp_path)
    assert model.shape == (1, 8, 8) and model.config["prediction_type"] == "epsilon"
    # the sidecar attaches reference data: here the training split, as CIFAR-10 FID uses
    from sampler_bench.data import load_dataset

    torch.testing.assert_close(model.sample_data(1498).float(), load_dataset("digits").train())


def test_a_diffusers_folder_without_scheduler_is_refused_with_the_reason(unet, tmp_path):
    unet.float().save_pretrained(tmp_path, safe_serialization=True)
    unet.double()
    with pytest.raises(ValueError, match="scheduler_config.json"):
        sb.load_model(tmp_path)


@pytest.fixture(scope="module")
def class_unet():
    from diffusers import UNet2DModel

    torch.manual_seed(1)
    net = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, layers_per_block=1, block_out_channels=(8, 16),
                      down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                      norm_num_groups=4, num_class_embeds=4)
    return net.double().eval()


def _ddim_labels(unet, prediction_type, steps, x_T, labels):
    from diffusers import DDIMScheduler

    sched = DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=False, set_alpha_to_one=True,
                          prediction_type=prediction_type)
    sched.set_timesteps(steps)
    sched.alphas_cumprod = sched.alphas_cumprod.double()
    sched.final_alpha_cumprod = sched.final_alpha_cumprod.double()
    x = x_T.clone()
    with torch.no_grad():
        for t in sched.timesteps:
            x = sched.step(unet(x, t, class_labels=labels).sample, t, x).prev_sample
    return x, sched


@pytest.mark.parametrize("prediction_type", ["v_prediction"])  # the other conversions: test above
def test_class_conditional_unet_matches_diffusers_ddim_with_the_same_labels(class_unet, prediction_type):
    from sampler_bench.models.adapters import DiffusersDenoiser, ddpm_sigmas
    from sampler_bench.models.guidance import Conditioned

    x_T = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    labels = torch.tensor([0, 3, 1])
    ref, sched = _ddim_labels(class_unet, prediction_type, 4, x_T, labels)
    model = DiffusersDenoiser(class_unet, sched.alphas_cumprod, prediction_type)
    assert model.num_classes == 4 and not model.null_label
    sigmas = ddpm_sigmas(sched.alphas_cumprod, sched.timesteps)
    x0 = x_T / torch.sqrt(sched.alphas_cumprod[sched.timesteps[0]].double())
    out = sb.sample("euler", Conditioned(model, labels), x0, sigmas)
    torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-9)
    other = sb.sample("euler", Conditioned(model, torch.tensor([1, 2, 0])), x0, sigmas)
    assert not torch.allclose(out, other)  # the labels reach the network


def test_a_null_class_gives_guidance_one_batched_forward(class_unet):
    from diffusers import DDPMScheduler

    from sampler_bench.models.adapters import DiffusersDenoiser
    from sampler_bench.models.guidance import Conditioned, EvaluationCounter, GuidedModel

    model = DiffusersDenoiser(class_unet, DDPMScheduler(num_train_timesteps=1000).alphas_cumprod, null_class=3)
    assert model.num_classes == 3 and model.null_label
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    s = torch.full((2,), 1.3, dtype=torch.float64)
    labels = torch.tensor([0, 2])
    counter = EvaluationCounter()
    out = Conditioned(GuidedModel(model, 3.0), labels, counter)(x, s)
    cond, uncond = model(x, s, class_labels=labels), model(x, s, class_labels=torch.tensor([3, 3]))
    torch.testing.assert_close(out, uncond + 3.0 * (cond - uncond), rtol=1e-9, atol=1e-9)
    assert (counter.network_evals, counter.forward_calls) == (2, 1)
