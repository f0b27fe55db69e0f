"""Checkpoint models pass gradients when -- and only when -- the caller asks for them (models/base.py,
network_grad_mode), so that ld3 (solvers/optimised/ld3.py) can differentiate through a trained network,
while sampling (run_solver, under torch.no_grad) and plain calls still build no autograd graph."""

from __future__ import annotations

import pytest
import torch

import sampler_bench as sb
from sampler_bench.models.checkpoint import model_config, save_checkpoint
from sampler_bench.models.networks import build_network
from sampler_bench.models.precond import EDMPrecond
from sampler_bench.processes.gaussian import GaussianProcess
from sampler_bench.solvers import optimised as O
from sampler_bench.solvers import schedules
from sampler_bench.solvers.driver import CountingDenoiser, run_solver
from sampler_bench.solvers.optimised import ld3

NET = {"type": "mlp", "hidden": 16, "depth": 1, "emb_channels": 16, "fourier_channels": 8}


@pytest.fixture(scope="module")
def checkpoint_model(tmp_path_factory):
    """A small trained-checkpoint model (random MLP weights, EDM preconditioning) loaded by sb.load_model,
    its network cast to float64 so that finite differences resolve its gradient."""
    path = tmp_path_factory.mktemp("ckpt") / "toy"
    torch.manual_seed(0)
    net = EDMPrecond(build_network(NET, (2,)), 0.8)
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.3)
    cfg = model_config(process=GaussianProcess(), network=NET, precond={"type": "edm", "sigma_data": 0.8},
                       dataset={"name": "ring", "n_train": 64, "n_test": 32}, shape=(2,), sigma_data=0.8,
                       training={"steps": 0}, name="toy")
    save_checkpoint(path, net, cfg)
    model = sb.load_model(path)
    model.denoiser.double()
    return model


class GradModes:
    """Records torch.is_grad_enabled() inside the network at every forward call."""

    def __init__(self, module: torch.nn.Module):
        self.seen: list[bool] = []
        self.handle = module.register_forward_pre_hook(lambda *_: self.seen.append(torch.is_grad_enabled()))


def test_sampling_builds_no_graph_and_plain_calls_build_none(checkpoint_model):
    model = checkpoint_model
    modes = GradModes(model.denoiser)
    try:
        x = 80.0 * torch.randn(8, 2, dtype=torch.float64, requires_grad=True)  # even an input asking for gradients
        with torch.enable_grad():
            out = sb.sample("dpmpp_2m", model, x, schedules.karras(6, 0.002, 80.0))
        assert len(modes.seen) == 6 and not any(modes.seen)  # the network ran 6 times, never recording a graph
        assert out.grad_fn is None and not out.requires_grad
        modes.seen.clear()
        plain = model(x.detach(), torch.full((8,), 1.0, dtype=torch.float64))  # grad mode on, nothing needs a gradient
        assert modes.seen == [False] and plain.grad_fn is None
        modes.seen.clear()
        with torch.no_grad():  # the caller's no_grad wins over an input that requires a gradient
            model(x, torch.full((8,), 1.0, dtype=torch.float64))
        assert modes.seen == [False]
    finally:
        modes.handle.remove()


def test_a_checkpoint_passes_gradients_to_the_state_and_the_level_when_asked(checkpoint_model):
    model = checkpoint_model
    assert ld3.differentiable(model) is None  # before: "trained checkpoints ... run under torch.no_grad"
    x = torch.randn(4, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    sigma = torch.full((4,), 0.7, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(model(x, sigma).sum(), sigma)
    h = 1e-6
    fd = (model(x, sigma.detach() + h).sum() - model(x, sigma.detach() - h).sum()) / (2 * h)
    assert float(g.sum()) == pytest.approx(float(fd), rel=1e-6)


@pytest.mark.parametrize("solver", ["dpmpp_2m", "ipndm"])
def test_ld3_loss_gradient_through_a_checkpoint_equals_finite_differences(checkpoint_model, solver):
    model = checkpoint_model
    x = 80.0 * torch.randn(8, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    target = run_solver("ipndm", CountingDenoiser(model), x, schedules.karras(40, 0.002, 80.0))

    def loss(xi):
        grid = torch.cat([ld3.levels_of(xi, 0.002, 80.0), torch.zeros(1, dtype=torch.float64)])
        out = ld3.STUDENTS[solver](CountingDenoiser(model), x, grid, {})
        return torch.linalg.vector_norm(out - target, dim=1).mean()

    xi = torch.tensor([0.3, -0.2, 0.1, 0.0], dtype=torch.float64, requires_grad=True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(loss(xi), xi)
    assert grad.abs().max() > 1e-6  # a gradient that is really there
    for k in range(4):
        e = torch.zeros(4, dtype=torch.float64)
        e[k] = 1e-6
        with torch.no_grad():
            fd = (loss(xi.detach() + e) - loss(xi.detach() - e)) / 2e-6
        assert float(grad[k]) == pytest.approx(float(fd), rel=1e-5, abs=1e-8)


def test_ld3_on_a_checkpoint_improves_on_its_start(checkpoint_model):
    model = checkpoint_model
    problem = O.Problem(model, "dpmpp_2m", {}, 5, 0.002, 80.0)
    params = {"n_warmup": 16, "iterations": 15, "teacher_steps": 40}
    grid, cost = O.run(O.get("ld3"), problem, params)
    assert cost.nfe == 40 + 15 * 5 and cost.samples == 16
    warm = problem.warmup_states(0, 16)
    target = run_solver("ipndm", CountingDenoiser(model), warm, schedules.karras(40, 0.002, 80.0))

    def err(g):
        out = run_solver("dpmpp_2m", CountingDenoiser(model), warm, g)
        return float(torch.linalg.vector_norm(out - target, dim=1).mean())

    assert err(grid) < err(schedules.log_snr_uniform(5, 0.002, 80.0))


@pytest.mark.parametrize("per_sample", [False, True])
def test_the_mixture_denoiser_passes_gradients_to_its_level(per_sample):
    """gmm16's exact denoiser works in place where it can; with a level that carries a gradient it must
    not (ld3 on gmm16 in a sweep failed with 'modified by an inplace operation' before)."""
    from sampler_bench.models import builtin

    model = builtin.builtin_model("gmm16")
    x = 3.0 * torch.randn(4, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    base = torch.tensor([0.5, 0.7, 0.9, 1.1] if per_sample else [0.7] * 4, dtype=torch.float64)
    sigma = base.clone().requires_grad_(True)
    # the state carries a gradient too, as every state after a sampler's first step does
    xs = x.clone().requires_grad_(True)
    (g, gx) = torch.autograd.grad(model(xs, sigma).pow(2).sum(), (sigma, xs))
    assert gx.abs().max() > 0
    h = 1e-6
    for k in range(4):
        e = torch.zeros(4, dtype=torch.float64)
        e[k] = h
        fd = (model(x, base + e).pow(2).sum() - model(x, base - e).pow(2).sum()) / (2 * h)
        if per_sample:
            assert float(g[k]) == pytest.approx(float(fd), rel=1e-5)
    if not per_sample:  # one shared level: the derivative along all four together
        fd = (model(x, base + h).pow(2).sum() - model(x, base - h).pow(2).sum()) / (2 * h)
        assert float(g.sum()) == pytest.approx(float(fd), rel=1e-5)
    torch.testing.assert_close(model(x, sigma).detach(), model(x, base), rtol=1e-13, atol=1e-13)
