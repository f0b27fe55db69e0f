"""``sampler-bench train SPEC.toml``: train a model from a spec, with progress, checkpoints and resume.

The command is registered on the ``sampler-bench`` group by :mod:`sampler_bench.cli`; it also runs
alone as ``python -m sampler_bench.train.cli SPEC.toml``. Under ``torchrun --nproc_per_node=K`` the
same command trains on K GPUs (or K CPU processes with gloo).
"""

from __future__ import annotations

import click


@click.command("train")
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Output folder (default: runs/<spec name>). Holds the checkpoint, the resumable state and log.jsonl.")
@click.option("--resume/--no-resume", default=True, show_default=True,
              help="Continue from the folder's last checkpoint, if any.")
@click.option("--steps", type=click.IntRange(min=1), default=None, help="Override [train].steps (e.g. to train longer).")
@click.option("--device", default=None, help="Override [train].device: auto, cpu, cuda, cuda:N.")
@click.option("--threads", type=click.IntRange(min=0), default=None, help="Override [train].threads (torch CPU threads).")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a live progress bar.")
def train(spec, out_dir, resume, steps, device, threads, progress):
    """Train the model described by the TOML file SPEC (see benchmarks/train_*.toml)."""
    from pathlib import Path

    from ..bench.distributed import DistributedError
    from ..cli import InputError
    from .loop import train as run
    from .spec import load_spec

    try:
        s = load_spec(spec)
        if steps is not None:
            s.train["steps"] = steps
        if device is not None:
            s.train["device"] = device
        if threads is not None:
            s.train["threads"] = threads
        result = run(s, Path(out_dir) if out_dir else Path("runs") / s.name, resume=resume, progress=progress)
    except DistributedError as e:  # before ValueError: one rank's failure, reported on every rank
        raise click.ClickException(f"{e}. Every rank stopped; rerun the same command to resume from the last "
                                   "checkpoint") from None
    except ValueError as e:  # bad input: exit status 2, as `sweep` does
        raise InputError(str(e)) from None
    except KeyboardInterrupt:
        raise click.Abort() from None
    if result.main:  # under torchrun only rank 0 reports
        click.echo(f"{s.name}: step {result.step}, loss {result.last_loss:.4f}, {result.seconds:.0f} s of training; "
                   f"checkpoint {result.checkpoint}")


if __name__ == "__main__":  # pragma: no cover
    train()
