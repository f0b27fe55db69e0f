"""Checkpoint format and load_model: round trip, refusals, and the committed reference checkpoints."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from scipy import stats

import sampler_bench as sb
from sampler_bench.data import load_dataset
from sampler_bench.models.checkpoint import CheckpointError, model_config, save_checkpoint
from sampler_bench.models.networks import build_network
from sampler_bench.models.precond import EDMPrecond
from sampler_bench.processes.gaussian import GaussianProcess
from sampler_bench.processes.pfgmpp import PFGMPPProcess
from sampler_bench.solvers.noise import generators_for

CHECKPOINTS = Path(__file__).resolve().parent.parent / "checkpoints"
NET = {"type": "mlp", "hidden": 16, "depth": 1, "emb_channels": 16, "fourier_channels": 8}


def _save(path, process, seed=0, net_cfg=NET):
    torch.manual_seed(seed)
    model = EDMPrecond(build_network(net_cfg, (2,)), 0.8)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.3)
    cfg = model_config(process=process, network=net_cfg, precond={"type": "edm", "sigma_data": 0.8},
                       dataset={"name": "ring", "n_train": 64, "n_test": 32}, shape=(2,), sigma_data=0.8,
                       training={"steps": 0}, name="toy")
    save_checkpoint(path, model, cfg)
    return model


def _rehashed(cfg):
    """``cfg`` with its content hashes recomputed: the later checks must hold for such an edit too (an edit
    that keeps the old hashes is refused first, by the content hash; see test_bad_inputs.py)."""
    from sampler_bench.models.checkpoint import _hashed

    return _hashed(cfg, cfg.get("weights_sha256", ""))


@pytest.fixture()
def saved(tmp_path):
    model = _save(tmp_path / "toy", PFGMPPProcess(D=8))
    return tmp_path / "toy", model


def test_saved_checkpoint_loads_as_the_same_denoiser(saved):
    path, original = saved
    model = sb.load_model(path)
    x = torch.randn(5, 2, dtype=torch.float64)
    sigma = torch.tensor([0.01, 0.1, 1.0, 10.0, 80.0], dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(model(x, sigma), original(x, sigma), rtol=0, atol=0)
    # every spelling of the pair loads the same checkpoint
    for p in (path, path.with_suffix(".safetensors"), path.with_suffix(".json")):
        assert sb.load_model(p).fingerprint() == model.fingerprint()


def test_loaded_model_satisfies_the_model_contract(saved):
    from sampler_bench.models.base import Model

    model = sb.load_model(saved[0])
    assert isinstance(model, Model)
    assert model.shape == (2,) and model.process == "pfgmpp"
    assert (model.sigma_min, model.sigma_max) == (0.002, 80.0)
    x = model.prior(3, generator=generators_for([1, 2, 3]))
    torch.testing.assert_close(x[2:], model.prior(1, generator=generators_for([3])), rtol=0, atol=0)
    assert model.sample_data(10, generator=torch.Generator().manual_seed(0)).shape == (10, 2)
    assert model.distribution is not None  # the ring is an exact mixture


def test_pfgmpp_checkpoint_with_infinite_D_is_a_gaussian_model(tmp_path):
    _save(tmp_path / "inf", PFGMPPProcess(D="inf"))
    assert sb.load_model(tmp_path / "inf").process == "gaussian"


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".ckpt", ".pkl", ".bin"])
def test_pickle_files_are_refused_without_being_opened(tmp_path, suffix):
    p = tmp_path / f"model{suffix}"
    torch.save({"w": torch.zeros(1)}, p)
    with pytest.raises(CheckpointError, match="no pickled checkpoints"):
        sb.load_model(p)


def test_a_pickle_renamed_to_safetensors_is_refused(saved):
    path, _ = saved
    torch.save({"w": torch.zeros(1)}, path.with_suffix(".safetensors"))
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        sb.load_model(path)


def test_weights_from_another_checkpoint_are_refused(tmp_path, saved):
    path, _ = saved
    _save(tmp_path / "other", PFGMPPProcess(D=8), seed=1)
    shutil.copy(tmp_path / "other.safetensors", path.with_suffix(".safetensors"))
    with pytest.raises(CheckpointError, match="does not match its config"):
        sb.load_model(path)


def test_a_config_whose_network_does_not_fit_the_weights_is_refused(saved):
    path, _ = saved
    cfg = json.loads(path.with_suffix(".json").read_text())
    cfg["network"]["hidden"] = 32
    path.with_suffix(".json").write_text(json.dumps(_rehashed(cfg)))  # an edit with its hashes recomputed
    with pytest.raises(CheckpointError, match="do not fit the network"):
        sb.load_model(path)


@pytest.mark.parametrize("edit, message", [
    (lambda c: c.pop("format"), "not a sampler-bench checkpoint config"),
    (lambda c: c.update(format_version=99), "format_version 99; this sampler-bench reads up to"),
    (lambda c: c["process"].update(D=0), "D >= 1"),
    (lambda c: c.pop("network"), "'network'"),
])
def test_a_broken_config_is_refused_with_one_readable_message(saved, edit, message):
    path, _ = saved
    cfg = json.loads(path.with_suffix(".json").read_text())
    edit(cfg)
    cfg = _rehashed(cfg)
    if "format_version" in message or "sampler-bench checkpoint" in message:
        edit(cfg)  # again: rehashing restores the format fields
    path.with_suffix(".json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=message):
        sb.load_model(path)


def test_a_missing_half_of_the_pair_is_named(saved):
    path, _ = saved
    path.with_suffix(".json").unlink()
    with pytest.raises(CheckpointError, match=r"config file .*toy.json not found"):
        sb.load_model(path)


# --- the committed reference checkpoints ---------------------------------------------------------

REFERENCE = ["digits-edm", "digits-pfgmpp-d128", "ring-edm"]
SPECS = {"digits-edm": "train_digits_edm.toml", "digits-pfgmpp-d128": "train_digits_pfgmpp_d128.toml",
         "ring-edm": "train_ring.toml"}


@pytest.mark.parametrize("name", REFERENCE)
def test_reference_checkpoint_records_its_provenance(name):
    cfg = json.loads((CHECKPOINTS / f"{name}.json").read_text())
    for key in ("process", "network", "precond", "dataset", "shape", "sigma_data", "training", "weights_sha256"):
        assert key in cfg, key
    for key in ("steps", "seconds", "ema", "hardware", "spec"):
        assert key in cfg["training"], key
    assert (CHECKPOINTS / f"{name}.safetensors").stat().st_size < 5 * 2**20  # a few MB at most
    # the committed spec is the one it was trained from
    import tomllib

    spec = tomllib.loads((CHECKPOINTS.parent / "benchmarks" / SPECS[name]).read_text())
    assert spec["train"] == {k: cfg["training"]["spec"]["train"][k] for k in spec["train"]}
    assert spec["network"] == cfg["network"] and spec["data"].items() <= cfg["dataset"].items()


def test_reference_digits_models_declare_their_process():
    edm, pf = sb.load_model(CHECKPOINTS / "digits-edm"), sb.load_model(CHECKPOINTS / "digits-pfgmpp-d128")
    assert edm.process == "gaussian" and pf.process == "pfgmpp"
    assert edm.shape == pf.shape == (1, 8, 8)
    # PFGM++ prior: |x|^2 / (sigma_max^2 D) ~ BetaPrime(N/2, D/2) with N = 64, D = 128
    x = pf.prior(4000, generator=torch.Generator().manual_seed(0))
    r2 = (x.flatten(1).norm(dim=1) / (80.0 * math.sqrt(128))) ** 2
    assert stats.kstest(r2.numpy(), stats.betaprime(32, 64).cdf).pvalue > 1e-3
    # SDE samplers do not apply to the PFGM++ model, ODE samplers do
    assert "pfgmpp" not in sb.solvers.info("euler_maruyama").processes
    assert "pfgmpp" in sb.solvers.info("heun").processes


@pytest.mark.parametrize("name", ["digits-edm", "digits-pfgmpp-d128"])
def test_reference_digits_denoiser_beats_the_best_linear_denoiser_on_held_out_digits(name):
    # The optimal denoiser of the Gaussian fit N(m, C) of the training digits is linear (a Wiener
    # filter); a model that learned the digits must do clearly better on images it never saw.
    model = sb.load_model(CHECKPOINTS / name)
    data = load_dataset("digits")
    train = data.train().to(torch.float64).flatten(1)
    m, C = train.mean(0), torch.cov(train.T)
    y = data.test().to(torch.float64)
    g = torch.Generator().manual_seed(0)
    for sigma, bound in ((0.2, 0.7), (0.5, 0.7), (1.0, 0.8)):  # measured: ~0.57, ~0.54, ~0.71
        x = y + sigma * torch.randn(y.shape, generator=g, dtype=torch.float64)
        s = torch.full((y.shape[0],), sigma, dtype=torch.float64)
        mse_model = ((model(x, s) - y) ** 2).mean()
        K = C @ torch.linalg.inv(C + sigma**2 * torch.eye(64, dtype=torch.float64))
        wiener = m + (x.flatten(1) - m) @ K.T
        mse_linear = ((wiener - y.flatten(1)) ** 2).mean()
        assert mse_model < bound * mse_linear, (sigma, float(mse_model), float(mse_linear))


def test_reference_ring_denoiser_is_close_to_the_exact_mixture_denoiser():
    model = sb.load_model(CHECKPOINTS / "ring-edm")
    law = model.distribution
    g = torch.Generator().manual_seed(0)
    y = law.sample(2000, generator=g)
    for sigma in (0.1, 0.5, 2.0):
        x = y + sigma * torch.randn(y.shape, generator=g, dtype=torch.float64)
        s = torch.full((y.shape[0],), sigma, dtype=torch.float64)
        err = (model(x, s) - law(x, s)).norm(dim=1).mean()
        gap = (x - law(x, s)).norm(dim=1).mean()  # how far the exact denoiser moves points
        assert err < 0.1 * gap, (sigma, float(err), float(gap))


def test_gaussian_process_checkpoint_prior_is_gaussian_at_sigma_max(tmp_path):
    _save(tmp_path / "g", GaussianProcess("edm"))
    x = sb.load_model(tmp_path / "g").prior(4000, generator=torch.Generator().manual_seed(0)) / 80.0
    assert stats.kstest(x.reshape(-1).numpy(), stats.norm.cdf).pvalue > 1e-3
