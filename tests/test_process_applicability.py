"""``sb.sample`` refuses every solver on every process it does not apply to, and runs the others.

The expected table is written out here from what each sampler is (CLD samplers; other stochastic
samplers need a Gaussian reverse SDE; deterministic ones the probability-flow ODE in sigma), not read
back from the registry's own declarations, so a wrong declaration fails. Models: the built-in analytic
ones, every checkpoint in checkpoints/, and PFGM++ with D = inf (the Gaussian limit).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import sampler_bench as sb
from sampler_bench.models.builtin import builtin_model
from sampler_bench.processes.pfgmpp import PFGMPPProcess
from sampler_bench.solvers.registry import mismatch, samplers_for
from solver_names import EXPECTED_SOLVERS

CHECKPOINTS = Path(__file__).resolve().parent.parent / "checkpoints"
CLD_SAMPLERS = {"gddim", "gddim_sde", "cld_euler", "cld_euler_maruyama", "cld_heun", "cld_reference"}
BDM_SAMPLERS = {"gddim_bdm", "bdm_euler", "bdm_euler_maruyama", "bdm_heun", "bdm_reference"}
#: the Yukawa flow has a birth/death term: its plain ODE samples the wrong law, so only the weighted sampler applies
YUKAWA_SAMPLERS = {"yukawa_smc"}


class PFGMInfinityModel:
    """The gmm2d mixture declared as PFGM++ with D = inf: the Gaussian kernel under PFGM++'s name."""

    def __init__(self):
        self.inner = builtin_model("gmm2d")
        self.process_def = PFGMPPProcess(D="inf")
        self.process = self.process_def.kind
        self.shape, self.sigma_min, self.sigma_max = self.inner.shape, 0.002, 80.0

    def __call__(self, x, sigma):
        return self.inner(x, sigma)

    def prior(self, n, generator=None):
        return self.process_def.prior(n, self.shape, generator)


def _models():
    yield "gmm2d", "gaussian", builtin_model("gmm2d")
    yield "gmm2d_cld", "cld", builtin_model("gmm2d_cld")
    yield "gmm16_bdm", "bdm", builtin_model("gmm16_bdm")
    yield "gmm2d_yukawa", "yukawa", builtin_model("gmm2d_yukawa")
    yield "pfgmpp-D=inf", "gaussian", PFGMInfinityModel()
    for path in sorted(CHECKPOINTS.glob("*.safetensors")):
        model = sb.load_model(path)
        yield path.stem, model.process, model


MODELS = {label: (kind, model) for label, kind, model in _models()}
ANALYTIC = {"gmm2d", "gmm2d_cld", "gmm16_bdm", "gmm2d_yukawa", "pfgmpp-D=inf"}


def applies(solver: str, kind: str) -> bool:
    if solver in CLD_SAMPLERS:
        return kind == "cld"
    if solver in BDM_SAMPLERS:
        return kind == "bdm"
    if solver in YUKAWA_SAMPLERS:
        return kind == "yukawa"
    if kind in ("cld", "bdm", "yukawa"):
        return False
    return kind == "gaussian" or not sb.solvers.info(solver).stochastic


class Accepted(Exception):
    """Raised by the first denoiser call of a network model: sb.sample got past every check."""


class Counting:
    """Forwards everything to the model and counts denoiser calls (a refusal must come before any).

    With ``stop_at_first_call`` the first call raises :class:`Accepted` instead of running the network,
    so every (solver, checkpoint) pair is checked in milliseconds; the analytic models sample for real.
    """

    def __init__(self, model, stop_at_first_call: bool = False):
        self.model, self.calls, self.stop = model, 0, stop_at_first_call

    def __call__(self, x, sigma):
        self.calls += 1
        if self.stop:
            raise Accepted
        return self.model(x, sigma)

    def denoise_with_rate(self, x, sigma):  # a Yukawa model's one evaluation of D and kappa
        self.calls += 1
        if self.stop:
            raise Accepted
        return self.model.denoise_with_rate(x, sigma)

    def __getattr__(self, name):
        if name == "model":
            raise AttributeError(name)
        return getattr(self.model, name)


def _grid(model, kind: str) -> torch.Tensor:
    rho = 2.0 if kind in ("cld", "bdm") else 7.0  # CLD's and BDM's own default (time grid uniform in sqrt t)
    return sb.schedules.karras(6, float(model.sigma_min), float(model.sigma_max), rho=rho)


def test_the_table_covers_every_kind_and_checkpoint():
    assert {kind for kind, _ in MODELS.values()} == {"gaussian", "pfgmpp", "cld", "bdm", "yukawa"}
    assert {"digits-cld", "digits-pfgmpp-d128", "ring-edm", "digits-edm"} <= set(MODELS)


@pytest.mark.parametrize("label", sorted(MODELS))
@pytest.mark.parametrize("solver", EXPECTED_SOLVERS)
def test_sample_refuses_exactly_the_solvers_that_do_not_apply(solver, label):
    kind, model = MODELS[label]
    counted = Counting(model, stop_at_first_call=label not in ANALYTIC)
    x = model.prior(2, generator=torch.Generator().manual_seed(0)).to(torch.float64)
    sigmas = _grid(model, kind)
    options = {"rtol": 1e-3, "atol": 1e-3} if sb.solvers.info(solver).adaptive else {}
    if applies(solver, kind) and counted.stop:
        with pytest.raises(Accepted):
            sb.sample(solver, counted, x, sigmas, generator=torch.Generator().manual_seed(1), **options)
    elif applies(solver, kind):
        out = sb.sample(solver, counted, x, sigmas, generator=torch.Generator().manual_seed(1), **options)
        assert out.shape == x.shape and torch.isfinite(out).all()
        assert counted.calls > 0
    else:
        with pytest.raises(ValueError) as err:
            sb.sample(solver, counted, x, sigmas, generator=torch.Generator().manual_seed(1), **options)
        message = str(err.value)
        assert f"solver {solver!r} does not apply to {kind!r} processes" in message
        assert ", ".join(n for n in EXPECTED_SOLVERS if applies(n, kind)) in message  # the samplers that do
        assert counted.calls == 0


@pytest.mark.parametrize("kind", ["gaussian", "pfgmpp", "cld", "bdm", "yukawa"])
def test_samplers_for_a_kind_are_exactly_those_that_apply(kind):
    assert samplers_for(kind) == [n for n in EXPECTED_SOLVERS if applies(n, kind)]
    for name in EXPECTED_SOLVERS:
        assert (mismatch(name, kind) is None) == applies(name, kind)
        assert sb.solvers.info(name).applies_to(kind) == applies(name, kind)


def test_a_plain_callable_declares_no_process_and_is_sampled_as_a_sigma_ode():
    mixture = builtin_model("gmm2d").distribution  # a bare denoiser: no `process` attribute
    x = 80.0 * torch.randn(3, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    sigmas = sb.schedules.karras(6, 0.002, 80.0)
    for solver in ("heun", "euler_ancestral", "dpmpp_2m"):
        assert torch.isfinite(sb.sample(solver, mixture, x, sigmas, generator=torch.Generator().manual_seed(3))).all()
    # the CLD samplers need the process's parameters, so they still refuse a bare callable, saying why
    with pytest.raises(ValueError, match="critically-damped Langevin diffusion only"):
        sb.sample("gddim", mixture, x, sigmas)


def test_a_model_declaring_an_unknown_process_is_refused_with_the_known_ones():
    class Odd:
        process = "ising"

        def __call__(self, x, sigma):  # pragma: no cover - never called
            raise AssertionError

    with pytest.raises(ValueError, match="unknown process kind 'ising'.*gaussian, pfgmpp, cld"):
        sb.sample("euler", Odd(), torch.zeros(1, 2), sb.schedules.karras(3, 0.1, 1.0))


def test_process_kinds_own_their_schedule_defaults_yardstick_and_data_layout():
    from sampler_bench.processes.catalog import KINDS

    assert KINDS["cld"].schedule_defaults == {"karras": {"rho": 2.0}} and KINDS["gaussian"].schedule_defaults == {}
    assert [KINDS[k].reference_solver for k in ("gaussian", "pfgmpp", "cld")] == ["reference", "reference", "cld_reference"]
    assert KINDS["yukawa"].capabilities.isdisjoint(KINDS["gaussian"].capabilities)  # no plain ODE: weights needed
    u = torch.arange(12.0).reshape(3, 2, 2)
    assert torch.equal(KINDS["cld"].data_from_state(u), u[:, 0]) and KINDS["gaussian"].data_from_state(u) is u
    assert PFGMPPProcess(D=math.inf).traits is KINDS["gaussian"] and PFGMPPProcess(D=128).traits is KINDS["pfgmpp"]
