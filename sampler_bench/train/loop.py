"""The training loop: EDM-style denoiser training for every process, resumable, DDP-ready.

One step (Karras et al., arXiv 2206.00364, ``training/loss.py``; PFGM++ arXiv 2302.04265 swaps the
noise draw only)::

    y ~ data;  sigma ~ process.sample_sigma;  x ~ process.perturb(y, sigma)
    loss = mean_batch( lambda(sigma) * mean_dims |D(x, sigma) - y|^2 )

CLD (``process.kind == "cld"``) trains an eps network on the state u = (x, v) with gDDIM's HSM loss
instead (Zhang et al., arXiv 2206.05564, ``losses.py``; ``CLD.hsm_loss``)::

    t ~ U[t_min, T];  u_t = Psi(t, 0) (y, 0) + R_t eps;  loss = mean_batch( mean_state |eps_theta(u_t, t) - eps|^2 )

Yukawa models (``process.kind == "yukawa"``, GenPhys, arXiv 2304.02637) train the denoiser with EDM's loss
on the kernel's scale sigma(z) = z / sqrt(1 + m z) and a birth/death-rate head on the per-pair target h
(``YukawaProcess.training_loss``)::

    ln sigma ~ N(P_mean, P_std^2), z = z(sigma);  W ~ IG(z/m, z^2);  x = y + sqrt(W) eps;
    loss = mean_batch( lambda(sigma) mean_pixels |D_theta(x, z) - y|^2 + |z (kappa_theta(x, z) - h)|^2 )

Blurring diffusion (``process.kind == "bdm"``) trains an eps network on the image state (Hoogeboom &
Salimans, arXiv 2209.05557, with gDDIM's eps loss; ``BDM.eps_loss``)::

    t ~ U[t_min, T];  z_t = V diag(a_t) V^T y + sigma_t eps;  loss = mean_batch( mean_pixels |eps_theta(z_t, t) - eps|^2 )

with AdamW, linear warm-up (then cosine or constant), gradient clipping, an EMA of the weights
(:mod:`.ema`) and bfloat16 autocast on CUDA.

Determinism and resumption: the data order (one permutation per epoch) and the noise of step k are
functions of (seed, k) alone, so a run resumed from its last checkpoint continues exactly as if it had
never stopped; the state file holds the raw weights, the EMA and the optimizer.

Under ``torchrun`` (``WORLD_SIZE`` > 1) the run joins the job through the sweeps' own setup
(:func:`sampler_bench.bench.distributed.init_from_env`: gloo on the CPU, NCCL and ``cuda:LOCAL_RANK``
on CUDA, one timeout, one failure rule). Every rank takes its contiguous rows of each global batch
(examples and noise, :meth:`World.shard`), DDP averages the gradients, and only rank 0 writes files.
The average of the ranks' mean-loss gradients is the gradient of the global batch's mean loss, so K
processes train the model one process trains with the same global batch, up to float32 summation
order (tests/test_distributed.py).

Output folder::

    NAME.safetensors + NAME.json       the EMA model: a checkpoint for sb.load_model
    train_state.safetensors + .json    raw weights, EMA, optimizer, step: what --resume reads
    log.jsonl                          one line per log interval (step, loss, lr, samples/s)
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..version import __version__
from ..bench.distributed import World, init_from_env
from ..data import load_dataset
from ..hardware import describe
from ..models.checkpoint import load_weights, model_config, save_checkpoint
from ..models.networks import build_bdm_network, build_cld_network, build_network, build_yukawa_network
from ..models.precond import build_precond, precond_config
from ..processes.catalog import process_from_config
from .ema import EMA
from .spec import TrainSpec

STATE = "train_state"


def derived_seed(*parts) -> int:
    """A 63-bit seed from any parts (seed, purpose, step, rank): independent streams, no shared state."""
    return int.from_bytes(hashlib.sha256("/".join(map(str, parts)).encode()).digest()[:8], "little") >> 1


def init_distributed(device_kind: str) -> World:
    """Join the torchrun job of the environment, if any: the sweeps' :func:`init_from_env` on ``device_kind``.

    A world of one without torchrun; with it, gloo on ``"cpu"``, NCCL and ``cuda:LOCAL_RANK`` on
    ``"cuda"`` (a readable ValueError when the node has too few GPUs for its processes).
    """
    return init_from_env(device_kind)


def device_kind(name: str) -> str:
    """``"cuda"`` or ``"cpu"``: the kind of device ``[train].device`` asks for (``auto``: CUDA when there is one)."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return "cuda" if str(name).startswith("cuda") else "cpu"


def pick_device(name: str, world: World) -> torch.device:
    """The device of ``[train].device`` for this rank: ``cuda`` / ``auto`` mean ``cuda:LOCAL_RANK``."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("[train].device = 'cuda' but no CUDA device is available; use 'cpu' or 'auto'")
        return torch.device("cuda", world.local_rank)
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"[train].device {name!r} is not a device; use 'auto', 'cpu', 'cuda' or 'cuda:N'") from None
    if device.type == "cuda" and not (torch.cuda.is_available() and (device.index or 0) < torch.cuda.device_count()):
        raise ValueError(f"[train].device = {name!r} but this machine has {torch.cuda.device_count()} CUDA device(s); "
                         "use 'cpu', 'auto' or an existing 'cuda:N'")
    return device


class BatchOrder:
    """Indices of the global batch of step k: consecutive slices of one permutation per epoch."""

    def __init__(self, n: int, batch: int, seed: int):
        self.n, self.batch, self.seed = n, batch, seed
        self._perms: dict[int, torch.Tensor] = {}

    def _perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            if len(self._perms) > 4:
                self._perms.pop(min(self._perms))
            g = torch.Generator().manual_seed(derived_seed(self.seed, "epoch", epoch))
            self._perms[epoch] = torch.randperm(self.n, generator=g)
        return self._perms[epoch]

    def global_batch(self, step: int) -> torch.Tensor:
        pos = torch.arange(step * self.batch, (step + 1) * self.batch)
        epochs = pos // self.n
        out = torch.empty_like(pos)
        for e in epochs.unique().tolist():
            m = epochs == e
            out[m] = self._perm(e)[pos[m] % self.n]
        return out

    def rank_batch(self, step: int, world: World) -> torch.Tensor:
        """This rank's contiguous rows of the global batch of step ``step`` (:meth:`World.shard`)."""
        start, stop = world.shard(self.batch)
        return self.global_batch(step)[start:stop]


def learning_rate(step: int, cfg: dict) -> float:
    """Linear warm-up to ``lr`` over ``warmup_steps``, then constant or cosine down to ``lr_min``."""
    lr, warm = cfg["lr"], cfg["warmup_steps"]
    if warm and step < warm:
        return lr * (step + 1) / warm
    if cfg["lr_decay"] == "cosine":
        span = max(cfg["steps"] - warm, 1)
        frac = min(max(step - warm, 0) / span, 1.0)
        return cfg["lr_min"] + 0.5 * (lr - cfg["lr_min"]) * (1 + math.cos(math.pi * frac))
    return lr


# --- state files (safetensors + JSON, no pickle) ------------------------------------------------

def _optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, st in sd["state"].items():
        for key, value in st.items():
            if isinstance(value, torch.Tensor):
                tensors[f"opt.{idx}.{key}"] = value.detach().contiguous().cpu()
            else:
                scalars[f"{idx}.{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _optimizer_state(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        if name.startswith("opt."):
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = value
    for name, value in meta.get("scalars", {}).items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def save_state(out: Path, *, net: nn.Module, ema: EMA, opt: torch.optim.Optimizer, info: dict) -> None:
    from safetensors.torch import save_file

    tensors = {f"net.{k}": v.detach().contiguous().cpu() for k, v in net.state_dict().items()}
    tensors.update({f"ema.{k}": v.contiguous().cpu() for k, v in ema.state_dict().items()})
    opt_tensors, opt_meta = _optimizer_tensors(opt)
    tensors.update(opt_tensors)
    tmp = out / f"{STATE}.safetensors.tmp"
    save_file(tensors, str(tmp))
    tmp_json = out / f"{STATE}.json.tmp"
    tmp_json.write_text(json.dumps({**info, "optimizer": opt_meta}, indent=2) + "\n")
    tmp.replace(out / f"{STATE}.safetensors")
    tmp_json.replace(out / f"{STATE}.json")


def load_state(out: Path) -> tuple[dict[str, torch.Tensor], dict] | None:
    from safetensors.torch import load_file

    w, j = out / f"{STATE}.safetensors", out / f"{STATE}.json"
    if not (w.exists() and j.exists()):
        return None
    return load_file(str(w)), json.loads(j.read_text())


def _split(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def _hardware(device: torch.device) -> str:
    return describe(device)


# --- the loop -----------------------------------------------------------------------------------

@dataclass
class TrainResult:
    out_dir: Path
    checkpoint: Path
    step: int
    seconds: float
    last_loss: float
    resumed_from: int
    main: bool = True


def train(spec: TrainSpec, out_dir: str | Path, *, resume: bool = True, progress: bool = True,
          stop_after: int | None = None, console=None) -> TrainResult:
    """Train ``spec`` into ``out_dir`` (resuming from its state file when there is one).

    ``stop_after`` ends the process's work after that many steps *of this call* without a final save,
    exactly like a job killed between checkpoints (used by the resume tests).
    """
    cfg = spec.train
    if cfg["threads"]:
        torch.set_num_threads(cfg["threads"])
    world = init_distributed(device_kind(cfg["device"]))
    device = pick_device(cfg["device"], world)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    # Equal shares: DDP averages the ranks' gradients with equal weights, which is the global batch's
    # mean-loss gradient only when every rank holds the same number of rows.
    if cfg["batch"] % world.size:
        raise ValueError(f"[train].batch = {cfg['batch']} is not divisible by the {world.size} ranks; pick a multiple")
    world = dataclasses.replace(world, device=str(device))
    rows = slice(*world.shard(cfg["batch"]))  # this rank's rows of every global batch (examples and noise)
    out = Path(out_dir)
    if world.is_main:
        out.mkdir(parents=True, exist_ok=True)

    data = load_dataset(dict(spec.data))
    process = process_from_config(dict(spec.process))
    sigma_data = data.sigma_data
    cld = process.kind == "cld"
    bdm = process.kind == "bdm"
    yukawa = process.kind == "yukawa"
    precond_cfg = {"type": "cld" if cld else "bdm" if bdm else "yukawa" if yukawa else "edm", **spec.precond}
    if precond_cfg["type"] in ("edm", "cld", "bdm", "yukawa"):
        precond_cfg.setdefault("sigma_data", sigma_data)
    torch.manual_seed(derived_seed(cfg["seed"], "init"))  # the same initial weights on every rank
    if cld:  # an eps network on u = (x, v) (sampler_bench.models.networks.CLDEpsNetwork)
        model = build_cld_network(dict(spec.network), precond_cfg, process, data.shape).to(device)
        precond_cfg = model.config()
    elif bdm:  # an eps network on the image state (sampler_bench.models.networks.BDMEpsNetwork)
        model = build_bdm_network(dict(spec.network), precond_cfg, process, data.shape).to(device)
        precond_cfg = model.config()
    elif yukawa:  # a denoiser in z plus a birth/death-rate head (sampler_bench.models.networks.YukawaNetwork)
        model = build_yukawa_network(dict(spec.network), precond_cfg, process, data.shape).to(device)
        precond_cfg = model.config()
    else:
        net = build_network(dict(spec.network), data.shape)
        model = build_precond(precond_cfg, net).to(device)
        precond_cfg = precond_config(model)
    ema = EMA(model, cfg["ema_halflife_samples"], cfg["ema_rampup_ratio"] or None)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], betas=tuple(cfg["betas"]), weight_decay=cfg["weight_decay"])

    step, seconds, seen, resumed_from = 0, 0.0, 0, 0
    saved = load_state(out) if resume else None
    if saved is not None:
        tensors, info = saved
        if info.get("run_hash") != spec.run_hash():
            raise ValueError(f"{out} holds the state of another run (spec {info.get('spec_name')!r}, hash {info.get('run_hash')}); "
                             "use another --out folder, or --no-resume to start over there")
        load_weights(model, _split(tensors, "net."), str(out / f"{STATE}.safetensors"))
        ema.load_state_dict(_split(tensors, "ema."))
        opt.load_state_dict(_optimizer_state(tensors, info["optimizer"]))
        step, seconds, seen = info["step"], info["seconds"], info["seen_samples"]
        resumed_from = step
    # Every rank reads the state file itself, so under torchrun they must all have found the same one;
    # ranks resuming from different steps would disagree on the data, the schedule and the last step.
    found = world.gather_objects(step)
    if len(set(found)) > 1:
        raise ValueError(f"the ranks found different training states in {out} (step by rank: {found}); --out must be "
                         "one folder every rank reads (on several nodes: a shared filesystem), or use --no-resume")
    ema.to(device)

    ddp_model = model
    if world.distributed:
        from torch.nn.parallel import DistributedDataParallel

        ddp_model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    amp = cfg["amp"] and device.type == "cuda"
    order = BatchOrder(len(data), cfg["batch"], cfg["seed"])
    total = cfg["steps"]
    log_path = out / "log.jsonl"

    def checkpoint_config() -> dict:
        return model_config(
            process=process, network=dict(spec.network), precond=precond_cfg, dataset=dict(data.config), shape=data.shape,
            sigma_data=sigma_data, name=spec.name, description=spec.description,
            training={"steps": step, "seen_samples": seen, "batch": cfg["batch"], "ema": ema.config(), "seconds": round(seconds, 1),
                      "hardware": _hardware(device), "world_size": world.size, "torch": torch.__version__,
                      "sampler_bench": __version__, "last_loss": last_loss, "spec": spec.to_dict()})

    def write(final: bool = False) -> None:
        if not world.is_main:
            return
        save_state(out, net=model, ema=ema, opt=opt,
                   info={"step": step, "seconds": seconds, "seen_samples": seen, "run_hash": spec.run_hash(),
                         "spec_name": spec.name, "spec": spec.to_dict()})
        save_checkpoint(out / spec.name, ema.state_dict(), checkpoint_config())

    console = console or _console()
    bar = _progress(console, spec.name, total, step) if (progress and world.is_main) else None
    last_loss, window_loss, window_n, t_window, done_here = float("nan"), 0.0, 0, time.perf_counter(), 0
    model.train()
    try:
        with bar if bar is not None else contextlib.nullcontext():
            while step < total:
                if stop_after is not None and done_here >= stop_after:
                    return TrainResult(out, out / f"{spec.name}.safetensors", step, seconds, last_loss, resumed_from,
                                       world.is_main)
                t0 = time.perf_counter()
                idx = order.rank_batch(step, world)
                y = data.train(idx)
                # Noise: one stream per step (a 1-process run's), drawn for the global batch; each rank takes its
                # rows, so K ranks train on exactly the noise of one process. (CLD's HSM loss draws inside
                # the process per rank batch: for CLD the stream of rank r is (seed, step, r), the same law.)
                g = torch.Generator().manual_seed(derived_seed(cfg["seed"], "noise", step, world.rank if cld or bdm or yukawa else 0))
                for group in opt.param_groups:
                    group["lr"] = learning_rate(step, cfg)
                if cld:
                    # gDDIM sums the squares over the state; the mean over its 2 * dim entries is the same
                    # objective up to a constant, on the scale of the EDM loss (so grad_clip means the same).
                    with torch.autocast("cuda", dtype=torch.bfloat16) if amp else contextlib.nullcontext():
                        loss = process.hsm_loss(ddp_model, y.to(device), generator=g) / (2 * y[0].numel())
                elif bdm:  # eps prediction, mean over the pixels (BDM.eps_loss draws t and eps like CLD's)
                    with torch.autocast("cuda", dtype=torch.bfloat16) if amp else contextlib.nullcontext():
                        loss = process.eps_loss(ddp_model, y.to(device), generator=g)
                elif yukawa:  # EDM's loss on sigma(z) = z/sqrt(1 + m z) plus the rate head's |z (kappa - h)|^2
                    with torch.autocast("cuda", dtype=torch.bfloat16) if amp else contextlib.nullcontext():
                        loss = process.training_loss(ddp_model, y.to(device), sigma_data, generator=g)
                else:
                    sigma_all = process.sample_sigma(cfg["batch"], g)
                    noise_all = process.noise((cfg["batch"], *y.shape[1:]), sigma_all, g)
                    sigma = sigma_all[rows]
                    x = (y.to(torch.float64) + noise_all[rows]).to(torch.float32)
                    weight = process.loss_weight(sigma, sigma_data).to(device)
                    y, x, sigma_dev = y.to(device), x.to(device), sigma.to(device)
                    with torch.autocast("cuda", dtype=torch.bfloat16) if amp else contextlib.nullcontext():
                        denoised = ddp_model(x, sigma_dev)
                    per_sample = ((denoised.to(torch.float64) - y.to(torch.float64)) ** 2).flatten(1).mean(1)
                    loss = (weight * per_sample).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if cfg["grad_clip"]:
                    nn.utils.clip_grad_norm_(model.parameters(), cfg["grad_clip"])
                opt.step()
                step += 1
                seen += cfg["batch"]
                done_here += 1
                ema.update(model, seen, cfg["batch"])
                # the global batch's loss: logged, and checked, alike on every rank
                loss_item = world.average(loss).item()
                if not math.isfinite(loss_item):
                    raise FloatingPointError(f"training {spec.name!r}: the loss became {loss_item} at step {step}; "
                                             "lower [train].lr or enable grad_clip")
                seconds += time.perf_counter() - t0
                window_loss += loss_item
                window_n += 1
                if step % cfg["log_every"] == 0 or step == total:
                    last_loss = window_loss / window_n
                    rate = window_n * cfg["batch"] / max(time.perf_counter() - t_window, 1e-9)
                    if world.is_main:
                        with open(log_path, "a") as f:
                            f.write(json.dumps({"step": step, "loss": last_loss, "lr": learning_rate(step - 1, cfg),
                                                "samples_per_s": round(rate, 1), "seconds": round(seconds, 1)}) + "\n")
                        if bar is not None:
                            bar.update(bar.task_ids[0], completed=step, loss=last_loss, rate=rate)
                        elif progress:
                            console.print(f"{spec.name}: step {step}/{total}  loss {last_loss:.4f}  {rate:.0f} samples/s")
                    window_loss, window_n, t_window = 0.0, 0, time.perf_counter()
                if step % cfg["checkpoint_every"] == 0 or step == total:
                    # rank 0 writes; every rank learns whether that worked (a failed write stops all, none waits)
                    world.run(write, f"while writing the checkpoint of step {step}")
    except KeyboardInterrupt:
        write()  # an interrupted run keeps everything it has done
        if world.is_main:
            console.print(f"[yellow]interrupted at step {step}; resume with the same command[/yellow]")
        raise
    return TrainResult(out, out / f"{spec.name}.safetensors", step, seconds, last_loss, resumed_from, world.is_main)


def _console():
    from rich.console import Console

    return Console(stderr=True)


def _progress(console, name: str, total: int, start: int):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("loss {task.fields[loss]:.4f}"), TextColumn("{task.fields[rate]:.0f} samples/s"),
                   TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False)
    bar.add_task(name, total=total, completed=start, loss=float("nan"), rate=0.0)
    return bar
