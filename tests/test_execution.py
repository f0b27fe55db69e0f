"""Execution of the denoiser (device, autocast, compile, CUDA graphs) and the per-grid coefficient cache.

* ExecutedModel changes how the network runs, never what the solver sees: the state keeps its dtype,
  autocast covers the network only (the EDM skip connection stays float64), and every option in
  effect is recorded.
* Per-grid solver coefficients are computed once per (solver, grid, options), not once per batch.
"""

from __future__ import annotations

import pytest
import torch

import sampler_bench as sb
from sampler_bench.models.builtin import builtin_model
from sampler_bench.models.checkpoint import TrainedModel
from sampler_bench.models.execution import ExecutedModel
from sampler_bench.models.networks import MLP
from sampler_bench.models.precond import EDMPrecond
from sampler_bench.processes.catalog import process_from_config
from sampler_bench.solvers import adams, driver, er_sde, unipc

DIM = 4


def random_mlp(seed: int = 0) -> MLP:
    """A small MLP with every weight random (the zero-initialised output layer would hide autocast)."""
    torch.manual_seed(seed)
    net = MLP((DIM,), hidden=32, depth=2, emb_channels=16, fourier_channels=8)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=g))
    return net


def trained_model(seed: int = 0) -> TrainedModel:
    process = process_from_config({"name": "edm"})
    return TrainedModel(EDMPrecond(random_mlp(seed), sigma_data=0.5), process, (DIM,), config={}, name="tiny-mlp",
                        fingerprint="tiny-mlp-v1")


class DtypeProbe:
    """Forward hook: the dtypes a module's outputs had."""

    def __init__(self, module: torch.nn.Module):
        self.seen: list[torch.dtype] = []
        module.register_forward_hook(lambda m, inp, out: self.seen.append(out.dtype))


# ---------------------------------------------------------------------------------------------
# ExecutedModel


def test_execution_options_in_effect_are_recorded_in_provenance():
    ex = ExecutedModel(trained_model(), device="cpu", autocast="bf16", compile=True, compile_backend="eager")
    prov = ex.provenance()
    assert prov == {"device": "cpu", "compile": True, "compile_mode": "default", "compile_backend": "eager",
                    "cuda_graphs": False, "autocast": "bf16", "scope": "network", "network_dtype": "float32"}
    plain = ExecutedModel(builtin_model("gmm2d")).provenance()
    assert plain["autocast"] is None and plain["compile"] is False and plain["scope"] == "denoiser"
    assert "compile_mode" not in plain  # only options in effect are recorded


@pytest.mark.parametrize("state_dtype", [torch.float64, torch.float32])
def test_autocast_runs_the_network_in_bf16_while_the_solver_state_keeps_its_dtype(state_dtype):
    model = trained_model()
    probe = DtypeProbe(model.denoiser.net)
    ex = ExecutedModel(model, autocast="bf16")
    x = 80.0 * torch.randn(6, DIM, generator=torch.Generator().manual_seed(1), dtype=state_dtype)
    sigmas = sb.schedules.karras(6, 0.002, 80.0)
    out = sb.sample("dpmpp_2m", ex, x, sigmas)
    assert out.dtype == state_dtype and torch.isfinite(out).all()
    assert probe.seen and set(probe.seen) == {torch.bfloat16}  # the network itself ran under autocast
    probe.seen.clear()
    reference = sb.sample("dpmpp_2m", model, x, sigmas)  # the same model without autocast
    assert set(probe.seen) == {torch.float32}
    diff = (out.double() - reference.double()).abs().max().item()
    assert 0 < diff < 0.1  # autocast is in effect, and it only rounds the network's output


def test_autocast_covers_the_network_only_so_the_edm_skip_connection_stays_exact():
    # D = c_skip x + c_out F: at sigma = 0.002, c_out = 0.002 * 0.5 / sqrt(0.5^2 + 0.002^2) ~ 0.002, so a bf16
    # network moves D by at most c_out |F_bf16 - F_fp32|, while x itself (|x| ~ 1) is never rounded to bf16.
    model = trained_model()
    ex = ExecutedModel(model, autocast="bf16")
    x = torch.randn(64, DIM, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    small = torch.full((64,), 0.002, dtype=torch.float64)
    d_bf16, d_fp32 = ex(x, small), model(x, small)
    net = model.denoiser.net
    c_in = 1 / (0.002**2 + 0.25) ** 0.5
    with torch.no_grad():
        f_fp32 = net((c_in * x).float(), (torch.log(small) / 4).float()).double()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            f_bf16 = net((c_in * x).float(), (torch.log(small) / 4).float()).double()
    c_out = 0.002 * 0.5 / (0.002**2 + 0.25) ** 0.5
    bound = c_out * (f_bf16 - f_fp32).abs().max().item()
    assert 0 < (d_bf16 - d_fp32).abs().max().item() <= bound * (1 + 1e-6) + 1e-12
    assert bound < 1e-2 * x.abs().max().item() * 2**-8  # far below bf16 rounding of x (2^-8 relative)


def test_wrapping_leaves_the_original_model_untouched():
    model = trained_model()
    net = model.denoiser.net
    x = torch.randn(3, DIM, dtype=torch.float64)
    sigma = torch.full((3,), 0.7, dtype=torch.float64)
    before = model(x, sigma)
    ExecutedModel(model, autocast="fp16")
    assert model.denoiser.net is net
    assert torch.equal(model(x, sigma), before)


def test_compiled_network_gives_the_same_denoiser_output():
    model = trained_model()
    ex = ExecutedModel(model, compile=True, compile_backend="eager")  # dynamo tracing without a C++ build
    x = torch.randn(5, DIM, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    sigma = torch.linspace(0.01, 10.0, 5, dtype=torch.float64)
    torch.testing.assert_close(ex(x, sigma), model(x, sigma), rtol=0, atol=0)


def test_execution_wrapper_forwards_the_model_contract():
    model = builtin_model("gmm16")
    ex = ExecutedModel(model)
    assert (ex.sigma_min, ex.sigma_max, ex.shape, ex.process) == (model.sigma_min, model.sigma_max, model.shape, model.process)
    assert ex.fingerprint() == model.fingerprint()
    g1, g2 = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    torch.testing.assert_close(ex.prior(3, generator=g1), model.prior(3, generator=g2))


@pytest.mark.parametrize("kwargs, match", [
    ({"autocast": "int8"}, r"autocast 'int8' is not allowed; use one of 'bf16', 'fp16'"),
    ({"cuda_graphs": True}, r"cuda_graphs needs a CUDA device"),
    ({"compile": True, "compile_mode": "fast"}, r"compile_mode 'fast' is not allowed"),
    ({"device": "gpu0"}, r"device 'gpu0' is not a torch device"),
])
def test_bad_execution_options_stop_with_one_readable_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ExecutedModel(trained_model(), **kwargs)


def test_autocast_is_refused_for_an_exact_analytic_denoiser():
    with pytest.raises(ValueError, match="does not apply to the analytic model 'gmm2d'.*remove autocast"):
        ExecutedModel(builtin_model("gmm2d"), autocast="bf16")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device (run on a GPU machine)")
def test_cuda_graph_replay_equals_eager_execution_for_every_batch_shape():
    model = trained_model().to("cuda")
    eager = ExecutedModel(model, device="cuda")
    graphed = ExecutedModel(model, device="cuda", cuda_graphs=True)
    for batch in (8, 8, 3):  # the second call replays; the third captures a new shape
        x = torch.randn(batch, DIM, device="cuda", dtype=torch.float64)
        sigma = torch.full((batch,), 1.5, device="cuda", dtype=torch.float64)
        torch.testing.assert_close(graphed(x, sigma), eager(x, sigma))
    assert len(graphed._inner.denoiser.net._graphed.graphs) == 2
    assert graphed.provenance()["cuda_graphs"] is True


# ---------------------------------------------------------------------------------------------
# Per-grid coefficients: once per (solver, grid, options), never per batch


def _counting(monkeypatch, module, name):
    calls = []
    original = getattr(module, name)

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return calls


COEFFICIENT_FUNCTIONS = [
    ("deis", {}, adams, "_deis_coefficients"),
    ("lms", {}, adams, "_ab_sigma_coefficients"),
    ("unipc", {}, unipc, "_grid_coefficients"),
    ("er_sde_3", {}, er_sde, "_coefficients"),
]


@pytest.mark.parametrize("solver, options, module, function", COEFFICIENT_FUNCTIONS,
                         ids=[c[0] for c in COEFFICIENT_FUNCTIONS])
def test_solver_coefficients_are_computed_once_for_two_batches_on_the_same_grid(monkeypatch, solver, options, module,
                                                                                function):
    driver.clear_coefficient_cache()
    calls = _counting(monkeypatch, module, function)
    model = builtin_model("gmm2d")
    grid = sb.schedules.karras(8, 0.002, 80.0)
    gens = lambda seed: [torch.Generator().manual_seed(seed + i) for i in range(4)]  # noqa: E731
    x1, x2 = (80.0 * torch.randn(4, 2, generator=torch.Generator().manual_seed(s), dtype=torch.float64) for s in (5, 6))
    first = sb.sample(solver, model, x1, grid, generator=gens(0), **options)
    assert len(calls) == 1
    second = sb.sample(solver, model, x2, grid, generator=gens(4), **options)
    assert len(calls) == 1  # the second batch reused the coefficients
    sb.sample(solver, model, x1, sb.schedules.karras(9, 0.002, 80.0), generator=gens(0), **options)
    assert len(calls) == 2  # another grid: new coefficients
    # cached coefficients give exactly the samples freshly computed ones give
    driver.clear_coefficient_cache()
    torch.testing.assert_close(sb.sample(solver, model, x1, grid, generator=gens(0), **options), first, rtol=0, atol=0)
    torch.testing.assert_close(sb.sample(solver, model, x2, grid, generator=gens(4), **options), second, rtol=0, atol=0)


def test_coefficient_cache_keys_on_options_and_stays_bounded(monkeypatch):
    driver.clear_coefficient_cache()
    calls = _counting(monkeypatch, adams, "_deis_coefficients")
    model = builtin_model("gmm2d")
    x = 80.0 * torch.randn(2, 2, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    grid = sb.schedules.karras(6, 0.002, 80.0)
    sb.sample("deis", model, x, grid, order=2)
    sb.sample("deis", model, x, grid, order=3)
    assert len(calls) == 2  # the options are part of the key
    monkeypatch.setattr(driver, "COEFFICIENT_CACHE_SIZE", 3)
    for n in range(10, 15):  # five new grids
        sb.sample("deis", model, x, sb.schedules.karras(n, 0.002, 80.0))
    info = driver.coefficient_cache_info()
    assert info["size"] == 3 and info["max_size"] == 3
    sb.sample("deis", model, x, sb.schedules.karras(14, 0.002, 80.0))  # most recent: still cached
    assert len(calls) == 7
    sb.sample("deis", model, x, grid, order=2)  # least recently used: evicted, computed again
    assert len(calls) == 8


# ---------------------------------------------------------------------------------------------
# In a sweep: [execution] options reach the model, the provenance and (autocast only) the cell identity


def _checkpoint(tmp_path):
    from sampler_bench.models.checkpoint import model_config, save_checkpoint

    net_cfg = {"type": "mlp", "hidden": 16, "depth": 1, "emb_channels": 16, "fourier_channels": 8}
    model = EDMPrecond(random_mlp_for((2,), net_cfg), 0.5)
    cfg = model_config(process=process_from_config({"name": "edm"}), network=net_cfg,
                       precond={"type": "edm", "sigma_data": 0.5}, dataset={"name": "ring", "n_train": 64, "n_test": 32},
                       shape=(2,), sigma_data=0.5, training={"steps": 0}, name="toy")
    save_checkpoint(tmp_path / "toy", model, cfg)
    return tmp_path / "toy.safetensors"


def random_mlp_for(shape, cfg):
    from sampler_bench.models.networks import build_network

    torch.manual_seed(0)
    net = build_network(cfg, shape)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.3)
    return net


def _sweep_spec(checkpoint, execution: str = "") -> str:
    return (f'nfe = [4]\nn_samples = 8\nbatch_size = 8\n{execution}\n[[model]]\ncheckpoint = "{checkpoint}"\n'
            '[[sampler]]\nname = "euler"\n[[metric]]\nname = "gmm_nll"\n')


def test_sweep_records_execution_options_and_autocast_makes_another_cell(tmp_path):
    import json
    import socket

    from sampler_bench.bench.runner import Sweep, run_sweep
    from sampler_bench.bench.spec import SpecError, parse_spec
    from sampler_bench.bench.store import ResultsStore

    ckpt = _checkpoint(tmp_path)
    plain = run_sweep(parse_spec(_sweep_spec(ckpt)), tmp_path / "out")
    mixed = run_sweep(parse_spec(_sweep_spec(ckpt, '[execution]\nautocast = "bf16"')), tmp_path / "out")
    assert plain.ok == mixed.ok == 1 and mixed.reused == 0  # bf16 numbers are not the float32 cell's
    with ResultsStore(plain.store_path) as store:
        rows = store.joined()
    assert len(rows) == 2 and rows["cell_id"].nunique() == 2
    prov = {json.loads(p)["execution"]["autocast"]: json.loads(p)["execution"] for p in rows["provenance"]}
    assert prov[None] == {"device": "cpu", "compile": False, "cuda_graphs": False, "autocast": None,
                          "ranks": 1, "hosts": [socket.gethostname()]}
    assert prov["bf16"]["scope"] == "network" and prov["bf16"]["network_dtype"] == "float32"
    values = {json.loads(p)["execution"]["autocast"]: v for p, v in zip(rows["provenance"], rows["value"])}
    assert values[None] != values["bf16"] and values["bf16"] == pytest.approx(values[None], rel=0.05)
    with pytest.raises(SpecError, match=r"\[execution\] for model 'toy': execution: cuda_graphs needs a CUDA device"):
        Sweep(parse_spec(_sweep_spec(ckpt, "[execution]\ncuda_graphs = true")), tmp_path / "bad")
