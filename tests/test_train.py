"""Training: exact resumption, learning progress, spec validation, the `train` command."""

from __future__ import annotations

import json
import math

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

import sampler_bench as sb
from sampler_bench.train.cli import train as train_command
from sampler_bench.train.ema import EMA
from sampler_bench.bench.distributed import World
from sampler_bench.train.loop import BatchOrder, learning_rate, train
from sampler_bench.train.spec import TRAIN_DEFAULTS, parse_spec

TINY = {
    "name": "tiny",
    "data": {"name": "ring", "n_train": 300, "n_test": 50},
    "process": {"name": "pfgmpp", "D": 16},
    "network": {"type": "mlp", "hidden": 16, "depth": 1, "emb_channels": 16, "fourier_channels": 8},
    "train": {"steps": 6, "batch": 32, "checkpoint_every": 2, "log_every": 1, "warmup_steps": 2, "lr": 1e-2,
              "ema_halflife_samples": 64, "threads": 1, "device": "cpu"},
}


def spec(**train_overrides):
    raw = json.loads(json.dumps(TINY))
    raw["train"].update(train_overrides)
    return parse_spec(raw)


def _state(out):
    return load_file(str(out / "train_state.safetensors")), json.loads((out / "train_state.json").read_text())


def test_a_run_killed_between_checkpoints_resumes_exactly_where_an_uninterrupted_run_would_be(tmp_path):
    train(spec(), tmp_path / "straight", progress=False)
    # killed after 3 steps: the last checkpoint is at step 2, step 3 is lost and redone
    first = train(spec(), tmp_path / "resumed", progress=False, stop_after=3)
    assert first.step == 3 and _state(tmp_path / "resumed")[1]["step"] == 2
    second = train(spec(), tmp_path / "resumed", progress=False)
    assert second.resumed_from == 2 and second.step == 6
    a, info_a = _state(tmp_path / "straight")
    b, info_b = _state(tmp_path / "resumed")
    assert info_a["step"] == info_b["step"] == 6 and info_a["seen_samples"] == info_b["seen_samples"] == 192
    assert set(a) == set(b)
    assert any(k.startswith("opt.") for k in a) and any(k.startswith("ema.") for k in a)
    for key in a:  # raw weights, EMA and every optimizer moment, bit for bit
        assert torch.equal(a[key], b[key]), key
    assert info_a["optimizer"]["param_groups"] == info_b["optimizer"]["param_groups"]


def test_ctrl_c_saves_the_exact_step_and_the_run_resumes_bit_for_bit(tmp_path, monkeypatch):
    import sampler_bench.train.loop as loop

    train(spec(), tmp_path / "straight", progress=False)
    real, fired = loop.learning_rate, []

    def interrupt_at_step_3(step, cfg):
        if step == 3 and not fired:
            fired.append(step)
            raise KeyboardInterrupt
        return real(step, cfg)

    monkeypatch.setattr(loop, "learning_rate", interrupt_at_step_3)
    with pytest.raises(KeyboardInterrupt):
        train(spec(), tmp_path / "resumed", progress=False)
    assert _state(tmp_path / "resumed")[1]["step"] == 3  # not the last periodic checkpoint (2): the step it reached
    assert train(spec(), tmp_path / "resumed", progress=False).resumed_from == 3
    a, b = _state(tmp_path / "straight")[0], _state(tmp_path / "resumed")[0]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resuming_with_more_steps_extends_the_run(tmp_path):
    train(spec(), tmp_path, progress=False)
    result = train(spec(steps=8), tmp_path, progress=True)  # also exercises the rich progress bar
    assert result.resumed_from == 6 and result.step == 8


def test_resuming_a_folder_that_holds_another_run_is_refused(tmp_path):
    train(spec(), tmp_path, progress=False, stop_after=2)
    other = spec(lr=5e-3)
    with pytest.raises(ValueError, match="holds the state of another run"):
        train(other, tmp_path, progress=False)
    assert train(other, tmp_path, progress=False, resume=False).resumed_from == 0


def test_training_moves_the_denoiser_towards_the_exact_one():
    # 200 steps on the ring: the learned D must be much closer to the exact mixture denoiser than the
    # untrained network (which is c_skip x under EDM preconditioning). Measured ratio: ~0.52.
    import tempfile
    from pathlib import Path

    s = spec(steps=200, batch=256, checkpoint_every=200, log_every=50, lr=1e-2, warmup_steps=10)
    s.process = {"name": "edm"}
    s.network = {"type": "mlp", "hidden": 64, "depth": 2, "emb_channels": 32, "fourier_channels": 16}
    s.data = {"name": "ring", "n_train": 4000, "n_test": 100}
    with tempfile.TemporaryDirectory() as d:
        train(s, d, progress=False)
        model = sb.load_model(Path(d) / "tiny")
        law = model.distribution
        g = torch.Generator().manual_seed(0)
        y = law.sample(1000, generator=g)
        sigma = torch.full((1000,), 0.5, dtype=torch.float64)
        x = y + 0.5 * torch.randn(y.shape, generator=g, dtype=torch.float64)
        sd = model.config["sigma_data"]
        untrained = sd**2 / (0.25 + sd**2) * x
        err_trained = (model(x, sigma) - law(x, sigma)).norm(dim=1).mean()
        err_untrained = (untrained - law(x, sigma)).norm(dim=1).mean()
        assert err_trained < 0.7 * err_untrained
        cfg = model.config
        assert cfg["training"]["steps"] == 200 and cfg["training"]["seconds"] > 0
        assert cfg["training"]["ema"]["halflife_samples"] == 64


def test_batches_visit_every_example_once_per_epoch_and_ranks_split_them():
    order = BatchOrder(n=10, batch=4, seed=3)
    stream = torch.cat([order.global_batch(k) for k in range(5)])  # 20 = two epochs
    assert sorted(stream[:10].tolist()) == list(range(10)) and sorted(stream[10:].tolist()) == list(range(10))
    for step in range(3):
        parts = [order.rank_batch(step, World(size=2, rank=r)) for r in range(2)]
        assert torch.equal(torch.cat(parts), order.global_batch(step))


def test_learning_rate_warms_up_linearly_then_decays_to_lr_min():
    cfg = {**TRAIN_DEFAULTS, "lr": 1.0, "warmup_steps": 4, "steps": 14, "lr_decay": "cosine", "lr_min": 0.1}
    assert [learning_rate(k, cfg) for k in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert learning_rate(4, cfg) == pytest.approx(1.0)
    assert learning_rate(9, cfg) == pytest.approx(0.55)
    assert learning_rate(14, cfg) == pytest.approx(0.1)
    assert learning_rate(10, {**cfg, "lr_decay": "none"}) == 1.0


def test_ema_follows_edm_half_life_and_ramp_up():
    net = torch.nn.Linear(2, 2)
    ema = EMA(net, halflife_samples=1000, rampup_ratio=0.05)
    # early: half-life = 5% of the samples seen; later: the configured half-life
    assert ema.beta(seen_samples=2000, batch=100) == pytest.approx(0.5)
    assert ema.beta(seen_samples=10**6, batch=100) == pytest.approx(0.5**0.1)
    target = {k: v + 1.0 for k, v in net.state_dict().items()}
    start = {k: v.clone() for k, v in ema.shadow.items()}
    net.load_state_dict(target)
    beta = ema.update(net, seen_samples=2000, batch=100)
    for k in target:
        torch.testing.assert_close(ema.shadow[k], beta * start[k] + (1 - beta) * target[k])


@pytest.mark.parametrize("edit, message", [
    (lambda r: r["train"].update(stepz=3), r"unknown key \[train\].stepz \(did you mean 'steps'\?\)"),
    (lambda r: r["train"].update(steps=2.5), r"\[train\].steps = 2.5 has the wrong type"),
    (lambda r: r["train"].update(lr=0), r"\[train\].lr must be positive"),
    (lambda r: r["train"].update(lr_decay="linear"), "'cosine' or 'none'"),
    (lambda r: r.pop("network"), r"the \[network\] table is missing"),
    (lambda r: r["data"].update(name="digitz"), "did you mean 'digits'"),
    (lambda r: r["process"].update(D=0), "D >= 1"),
    (lambda r: r.update(optimizer="sgd"), "unknown key 'optimizer'"),
])
def test_bad_train_spec_raises_one_readable_value_error(edit, message):
    raw = json.loads(json.dumps(TINY))
    edit(raw)
    with pytest.raises(ValueError, match=message):
        parse_spec(raw)


def test_batch_not_divisible_by_the_ranks_is_refused(tmp_path, monkeypatch):
    import sampler_bench.train.loop as loop

    monkeypatch.setattr(loop, "init_distributed", lambda kind: World(size=3, rank=0))
    with pytest.raises(ValueError, match="not divisible by the 3 ranks"):
        train(spec(), tmp_path, progress=False)


def _toml(raw: dict) -> str:
    lines = [f'name = "{raw["name"]}"']
    for table in ("data", "process", "network", "train"):
        lines.append(f"[{table}]")
        for k, v in raw[table].items():
            lines.append(f"{k} = {json.dumps(v)}")
    return "\n".join(lines) + "\n"


def test_train_command_writes_a_loadable_checkpoint_and_reports_errors_without_a_traceback(tmp_path):
    spec_path = tmp_path / "tiny.toml"
    spec_path.write_text(_toml(TINY))
    runner = CliRunner()
    result = runner.invoke(train_command, [str(spec_path), "--out", str(tmp_path / "run"), "--no-progress", "--steps", "3"])
    assert result.exit_code == 0, result.output
    model = sb.load_model(tmp_path / "run" / "tiny")
    assert model.config["training"]["steps"] == 3 and model.process == "pfgmpp"
    assert [json.loads(line)["step"] for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()] == [1, 2, 3]
    bad = tmp_path / "bad.toml"
    bad.write_text(_toml(TINY).replace('name = "pfgmpp"', 'name = "pfgm"'))
    result = runner.invoke(train_command, [str(bad), "--out", str(tmp_path / "bad")])
    assert result.exit_code == 2 and "did you mean 'pfgmpp'" in result.output and "Traceback" not in result.output
    assert math.isfinite(model.config["training"]["last_loss"])
