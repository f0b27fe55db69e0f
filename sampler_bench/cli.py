"""The ``sampler-bench`` command line (click + rich).

    sampler-bench sweep [SPEC] [--out DIR]     run a sweep (default: the built-in quickstart spec); resumes
    sampler-bench report DB [--out DIR]        Markdown + HTML report of a results store
    sampler-bench check DB --baseline FILE     exit 1 if any metric regressed beyond its tolerance
    sampler-bench list [WHAT]                  samplers, schedules, metrics, feature extractors, models, specs
    sampler-bench show DB [--csv F]            the stored results as a table (or CSV / Parquet)
    sampler-bench import edm NETWORK.pkl --out DIR --trust-pickle   convert an EDM pickle to safetensors + JSON

Everything a user can get wrong ends in one readable message (click's ``Error: ...``), never a
traceback. Exit status: 0 success, 1 a regression found by ``check``, 2 bad input (spec, store,
baseline, options).
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import json
import math
import os
import shlex
import sys
from pathlib import Path

from ._interrupt import INTERRUPTED, deferred
from .version import __version__

with deferred():  # Ctrl-C during start-up: one line, no import traceback
    import click
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

console = Console(highlight=False)

#: Subcommands provided by other modules, imported only when used (a missing one never breaks the CLI).
LAZY_COMMANDS = {"train": "sampler_bench.train.cli:train"}




class _Group(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            click.echo(f"\n{INTERRUPTED}", err=True)
            ctx.exit(130)

    def list_commands(self, ctx):
        lazy = [n for n, target in LAZY_COMMANDS.items() if self._findable(target)]
        return sorted(set(super().list_commands(ctx)) | set(lazy))

    @staticmethod
    def _findable(target: str) -> bool:
        try:
            return importlib.util.find_spec(target.split(":")[0]) is not None
        except ImportError:
            return False

    def get_command(self, ctx, name):
        cmd = super().get_command(ctx, name)
        if cmd is not None or name not in LAZY_COMMANDS:
            return cmd
        module, attr = LAZY_COMMANDS[name].split(":")
        try:
            return getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:
            raise click.ClickException(f"the {name!r} command is not available in this installation ({e})") from None


class InputError(click.ClickException):
    """Bad input (spec, store, baseline): exit status 2, so `check` keeps 1 for "a value regressed"."""

    exit_code = 2


def _loaded_classes(*where: tuple[str, str]) -> tuple[type, ...]:
    """The classes ``(module, name)`` (modules relative to this package) of the modules imported so far."""
    return tuple(getattr(sys.modules[f"sampler_bench.{m}"], n) for m, n in where if f"sampler_bench.{m}" in sys.modules)


def friendly(fn):
    """Turn the package's input errors (ValueError subclasses with readable messages) into click errors."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ValueError as e:
            # an error class can only be raised once its module is imported: look them up, import none
            # (importing the store here would cost a spec error the seconds of a torch import)
            if isinstance(e, _loaded_classes(("bench.spec", "SpecError"), ("bench.store", "StoreError"),
                                             ("bench.check", "BaselineError"),
                                             ("report.drawing", "WorkersSettingError"))):
                raise InputError(str(e)) from None
            raise
        except OSError as e:  # the environment, not the input: exit 1, one line, and say that nothing is lost
            from .bench.store import EnvironmentFailure, environment_problem

            text = str(e) if isinstance(e, EnvironmentFailure) else environment_problem(e)
            raise click.ClickException(f"{text}. Cells finished before are kept; once this is fixed, rerun the same "
                                       "command to resume") from None

    return wrapper


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="sampler-bench")
def main():
    """Benchmark diffusion samplers over NFE budgets: counted NFE, exact references, provenance."""
    global console
    console = Console(highlight=False)  # per invocation: the terminal width of *this* run


# ---------------------------------------------------------------------------------------------
# sweep


def _progress_handler(progress, task_ids):
    def on_event(kind, data):
        if kind == "start":
            if data["todo"]:
                task_ids["cells"] = progress.add_task("cells", total=data["todo"])
            if data["reused"]:
                console.print(f"[dim]{data['reused']} of {data['total']} cells already stored: resuming[/dim]")
        elif kind == "cell_start":
            progress.update(task_ids["cells"], description=data["cell"].label)
        elif kind == "cell_done":
            row = data["row"]
            if row["status"] == "failed":
                progress.console.print(f"[red]failed[/red] {escape(data['cell'].label)}: {escape(row['reason'])}")
            progress.advance(task_ids["cells"])
        elif kind == "reference" and "cells" in task_ids:
            progress.update(task_ids["cells"], description=(
                f"{data['model']} · reference ODE endpoints (DOP853), samples {data['start']}..{data['stop'] - 1}"))

    return on_event


def _write_report(store_path: Path, out_dir: Path) -> dict | None:
    try:
        from .report import write_report
    except ImportError as e:
        console.print(f"[yellow]report unavailable[/yellow] (sampler_bench.report cannot be imported: {e}); "
                      f"the results are in {store_path}")
        return None
    with console.status("writing the report"):
        return write_report(store_path, out_dir)


def _print_report_paths(paths) -> None:
    if not paths:
        return
    for kind in ("markdown", "html"):
        if kind in paths:
            console.print(f"{kind:>8}: {paths[kind]}")


@main.command()
@click.argument("spec", required=False, default="quickstart", metavar="[SPEC]")
@click.option("--out", "-o", "out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Output directory for results.sqlite and the report [default: results/<spec name>].")
@click.option("--force", is_flag=True, help="Recompute cells that are already in the store.")
@click.option("--retry-failed", is_flag=True, help="Recompute only the stored cells that failed.")
@click.option("--no-report", is_flag=True, help="Do not write the report after the sweep.")
@click.option("--device", default=None, help="Override the spec's device (e.g. cuda:0).")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Override the spec's batch size; results do not depend on it (per-sample seeds).")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="Override the spec's threads: torch CPU threads per process (one per core by default).")
@friendly
def sweep(spec, out, force, retry_failed, no_report, device, batch_size, threads):
    """Run SPEC (a TOML file or a built-in spec name; default: quickstart) and store every cell.

    Re-running the same command resumes: cells already in DIR/results.sqlite are not recomputed.
    Under `torchrun --nproc_per_node=N -m sampler_bench sweep SPEC` the samples of every cell are
    split over the N processes (one GPU each on CUDA); rank 0 writes the store and the report.
    """
    with deferred():  # the heavy imports of a sweep (torch, scipy): Ctrl-C acts once they are done
        from .bench.spec import check_device, load_spec, with_overrides

        # the spec first: its mistakes are found before torch is imported where the names tell them
        s = with_overrides(load_spec(spec), device=device, batch_size=batch_size, threads=threads)
        if not no_report:
            from .report.drawing import default_workers

            default_workers()  # a bad $SAMPLER_BENCH_REPORT_WORKERS is said now, not after the sweep
        from .bench.distributed import DistributedError, env_world, init_from_env, shutdown
        from .bench.runner import Sweep  # noqa: F401
        try:
            import sampler_bench.metrics  # noqa: F401
        except ImportError:
            pass  # said by the spec, if it asks for metrics

    check_device(s.device)  # before any model is loaded: a missing device is bad input, not failed cells
    out = out or Path("results") / s.name
    try:
        env_world()  # a broken torchrun environment is refused before anything is written
    except ValueError as e:
        raise InputError(str(e)) from None
    _writable_directory(out, "--out")
    try:
        world = init_from_env(s.device)
    except ValueError as e:
        raise InputError(str(e)) from None
    if world.distributed and s.device.startswith("cuda"):
        s = with_overrides(s, device=world.device)  # torchrun: one GPU per process, cuda:LOCAL_RANK
    try:
        _sweep(s, spec, out, force, retry_failed, no_report, device, batch_size, threads, world)
    except DistributedError as e:
        raise click.ClickException(
            f"{e}. Every rank stopped; the cells finished before are stored in {out / 'results.sqlite'}: "
            "rerun the same command to resume") from None
    finally:
        shutdown(world)


def _writable_directory(path: Path, option: str) -> None:
    """Create ``path`` (a directory) or stop with one message saying why it cannot hold the output."""
    import tempfile

    for parent in [path, *path.parents]:
        if parent.exists() and not parent.is_dir():
            where = "is" if parent == path else f"is below {str(parent)!r}, which is"
            raise InputError(f"{option} {str(path)!r} {where} a file, not a directory; give a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):  # the one sure test of writability (ACLs, read-only mounts)
            pass
    except OSError as e:
        raise InputError(f"{option} {str(path)!r} is not a writable directory: {e.strerror}") from None


def _sweep(s, spec, out, force, retry_failed, no_report, device, batch_size, threads, world):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from .bench.runner import Sweep

    # under torchrun the launch is part of how the numbers were made (wall time, samples/s)
    launcher = (f"torchrun --nnodes={os.environ.get('GROUP_WORLD_SIZE', '?')} "
                f"--nproc_per_node={os.environ.get('LOCAL_WORLD_SIZE', '?')} -m sampler_bench sweep"
                if world.distributed else "sampler-bench sweep")
    command = " ".join(
        [launcher, shlex.quote(str(spec)), "--out", shlex.quote(str(out))]
        + ["--force"] * force + ["--retry-failed"] * retry_failed
        + ([f"--device {device}"] if device else []) + ([f"--batch-size {batch_size}"] if batch_size else [])
        + ([f"--threads {threads}"] if threads else [])
    )
    if not world.is_main:  # the other ranks compute their shares silently; rank 0 reports and writes
        Sweep(s, out, force=force, retry_failed=retry_failed, command=command, world=world).run()
        return
    with console.status(f"preparing {s.name!r}: models, metrics and cells"):
        runner = Sweep(s, out, force=force, retry_failed=retry_failed, command=command, world=world)
    if world.distributed:
        console.print(f"torchrun: {world.size} processes ({world.backend}); each computes its share of every cell's samples")
    console.print(
        f"sweep [bold]{escape(s.name)}[/bold]: {len(runner.cells)} cells ({len(s.models)} model(s), "
        f"{len(s.every_sampler)} sampler configuration(s), {len(s.every_schedule)} schedule(s), NFE {', '.join(map(str, s.every_nfe))}"
        f"{f' in {len(s.blocks)} grid blocks' if len(s.blocks) > 1 else ''}), "
        f"{s.n_samples} samples each (seeds {s.seed}..{s.seed + s.n_samples - 1}), "
        f"metrics: {', '.join(m.name for m in s.metrics) or 'none'}"
    )
    for note in {n for pm in runner.models for n in pm.notes}:
        console.print(f"[yellow]note[/yellow]: {escape(note)}")
    tasks: dict = {}
    with Progress(SpinnerColumn(), TextColumn("{task.description}", style="cyan"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, transient=False) as progress:
        runner.on_event = _progress_handler(progress, tasks)
        summary = runner.run()
    console.print(
        f"[bold]{summary.total}[/bold] cells in {summary.wall_s:.1f} s: {summary.computed} computed, "
        f"{summary.reused} reused; [green]{summary.ok} ok[/green], [yellow]{summary.skipped} skipped[/yellow], "
        f"[red]{summary.failed} failed[/red]"
    )
    _print_problems(summary.problems)
    console.print(f"results: {summary.store_path}")
    if not no_report:
        try:
            paths = _write_report(summary.store_path, out)
        except Exception as e:  # the sweep's numbers are safe in the store; say so rather than dump a trace
            raise click.ClickException(
                f"the results are stored in {summary.store_path}, but writing the report failed "
                f"({type(e).__name__}: {e}); retry with `sampler-bench report {summary.store_path}`"
            ) from None
        _print_report_paths(paths)


def _print_problems(problems, limit: int = 12) -> None:
    for p in problems[:limit]:
        console.print(f"  [dim]-[/dim] {escape(p)}")
    if len(problems) > limit:
        console.print(f"  [dim]... and {len(problems) - limit} more (sampler-bench show DB --long)[/dim]")


# ---------------------------------------------------------------------------------------------
# report


@main.command()
@click.argument("db", type=click.Path(path_type=Path))
@click.option("--out", "-o", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Directory for report.md, report.html and figures [default: the store's directory].")
@friendly
def report(db, out):
    """Write a Markdown and a self-contained HTML report of the results store DB."""
    from .bench.store import ResultsStore
    from .report.drawing import default_workers

    default_workers()  # a bad $SAMPLER_BENCH_REPORT_WORKERS is said before any work

    with ResultsStore(db, read_only=True) as store:
        path = store.path
    try:
        from .report import write_report
    except ImportError as e:
        raise click.ClickException(f"the report module is not available in this installation ({e})") from None
    _writable_directory(out or path.parent, "--out" if out else "the store's directory (use --out DIR)")
    try:
        with console.status("writing the report"):
            paths = write_report(path, out or path.parent)
    except OSError as e:
        raise InputError(f"cannot write the report into {str(out or path.parent)!r}: {e.strerror or e}") from None
    _print_report_paths(paths)


# ---------------------------------------------------------------------------------------------
# check


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:.4g}"


@main.command()
@click.argument("db", type=click.Path(path_type=Path))
@click.option("--baseline", "-b", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Baseline JSON file to compare against.")
@click.option("--write-baseline", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write a baseline from DB to this file instead of checking.")
@click.option("--rel", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Default relative tolerance written with --write-baseline: the smallest move that counts "
                   "(a value with an interval regresses only when it is also significantly worse).")
@click.option("--abs", "abs_", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Default absolute tolerance written with --write-baseline.")
@click.option("--all", "show_all", is_flag=True, help="List every compared value, not only the ones that moved.")
@click.option("--any-seed", is_flag=True,
              help="Match cells whatever their seed (an unpaired comparison, e.g. of a run on other seeds).")
@friendly
def check(db, baseline, write_baseline, rel, abs_, show_all, any_seed):
    """Compare DB with a baseline: exit 0 when no value is significantly worse, 1 on any regression.

    A value with an interval regresses when it is significantly worse than the baseline's (one-sided
    test, paired on shared seeds, Holm-corrected over all values at 5%) and moved by more than the
    tolerance; values without intervals are judged by the tolerance alone."""
    from .bench import check as C
    from .bench.store import ResultsStore

    if (baseline is None) == (write_baseline is None):
        raise click.UsageError("give exactly one of --baseline FILE (check) or --write-baseline FILE (create)")
    with ResultsStore(db, read_only=True) as store:
        if write_baseline is not None:
            doc = C.write_baseline(store, write_baseline, rel=rel, abs=abs_)
            n = sum(len(c["values"]) for c in doc["cells"])
            console.print(f"wrote {write_baseline}: {len(doc['cells'])} cells, {n} values, "
                          f"default tolerance rel {rel:g}, abs {abs_:g} (edit \"tolerances\" per metric)")
            return
        result = C.check(store, C.load_baseline(baseline), any_seed=any_seed)
    moved = [c for c in result.comparisons if show_all or c.verdict != "ok" or (c.change or 0) != 0]
    order = {"missing": 0, "regressed": 1, "changed": 2, "improved": 3, "ok": 4}
    moved.sort(key=lambda c: (order[c.verdict], c.cell, c.key))
    table = Table(title=f"{len(result.comparisons)} values checked against {baseline.name}", show_lines=False)
    for col in ("cell", "value", "baseline", "current", "change", "change %", "allowed", "p(worse)", "verdict"):
        table.add_column(col, justify="right" if col not in ("cell", "value", "verdict") else "left")
    style = {"missing": "red", "regressed": "red", "changed": "red", "improved": "green", "ok": ""}
    for c in moved:
        rel_s = "–" if c.relative is None else f"{100 * c.relative:+.2f}%"
        table.add_row(escape(c.cell), c.key, _fmt(c.baseline), _fmt(c.current),
                      "–" if c.change is None else f"{c.change:+.3g}", rel_s, _fmt(c.allowed),
                      "–" if c.p_value is None else f"{c.p_value:.2g}" + (" (paired)" if c.paired else ""),
                      f"[{style[c.verdict]}]{c.verdict}[/]" if style[c.verdict] else c.verdict)
    if moved:
        console.print(table)
    for n in result.notes:
        console.print(f"[yellow]note[/yellow]: {escape(n)}")
    for c in result.failures:
        if c.verdict == "missing":
            console.print(f"[red]missing[/red]: {escape(c.cell)} {c.metric}/{c.key}: {escape(c.note)}")
    if result.passed:
        console.print(f"[green]ok[/green]: all {len(result.comparisons)} values within tolerance "
                      "(none significantly worse than the baseline)")
        return
    console.print(f"[red]FAILED[/red]: {len(result.failures)} of {len(result.comparisons)} values regressed or are missing")
    sys.exit(1)


# ---------------------------------------------------------------------------------------------
# list

LIST_SECTIONS = ("samplers", "schedules", "metrics", "features", "models", "specs")


def _options_text(options: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in options.items()) or "–"


def _add_row(table: Table, *cells) -> None:
    table.add_row(*[escape(str(c)) for c in cells])


@main.command(name="list")
@click.argument("what", required=False, type=click.Choice(LIST_SECTIONS))
def list_(what):
    """What is available: samplers, schedules, metrics, feature extractors, built-in models and specs."""
    from .catalog import load

    catalog = load()  # the shipped catalogue when it matches the sources: no torch import
    show = (what,) if what else LIST_SECTIONS
    if "samplers" in show:
        t = Table(title="samplers")
        for col in ("name", "order", "NFE/step", "stochastic", "processes"):
            t.add_column(col, no_wrap=True)  # names are never cut
        t.add_column("options (defaults)", overflow="fold")
        t.caption = ("order: theoretical global order of the default options (weak order if stochastic); * adaptive; "
                     "every sampler of the ODE in sigma also takes output = 'state' | 'denoised' (docs/geometry.md)")
        for m in catalog["samplers"]:
            order = f"{m['order']}*" if m["adaptive"] else str(m["order"])
            _add_row(t, m["name"], order, str(m["nfe_per_step"]), "yes" if m["stochastic"] else "no",
                     ", ".join(m["processes"]), _options_text(m["options"]))
        console.print(t)
    if "schedules" in show:
        t = Table(title="schedules")
        t.add_column("name")
        t.add_column("parameters")
        for m in catalog["schedules"]:
            _add_row(t, m["name"], ", ".join(m["parameters"]) or "–")
        console.print(t)
        t = Table(title="optimised schedules (found per model, sampler and budget; docs/schedule_optimisers.md)")
        for col in ("name", "parameters (defaults)", "paper", "what it does"):
            t.add_column(col, overflow="fold")
        for m in catalog["optimisers"]:
            _add_row(t, m["name"], ", ".join(m["parameters"]) or "–", m["paper"], m["description"])
        console.print(t)
    if "metrics" in show or "features" in show:
        if "metrics_unavailable" in catalog:
            console.print(f"[yellow]metrics unavailable[/yellow] ({catalog['metrics_unavailable']})")
        else:
            if "metrics" in show:
                t = Table(title="metrics")
                for col in ("name", "values", "lower is better", "needs reference endpoints", "description"):
                    t.add_column(col)
                for m in catalog["metrics"]:
                    lib = m["lower_is_better"]
                    _add_row(t, m["name"], ", ".join(m["values"]),
                             json.dumps(lib) if isinstance(lib, dict) else ("yes" if lib else "no"),
                             "yes" if m["needs_reference_endpoints"] else "no", m["description"])
                console.print(t)
            if "features" in show:
                t = Table(title="feature extractors")
                t.add_column("name")
                for name in catalog["features"]:
                    _add_row(t, name)
                console.print(t)
    if "models" in show:
        t = Table(title="built-in models")
        for col in ("name", "shape", "process", "sigma range", "description"):
            t.add_column(col)
        for m in catalog["models"]:
            _add_row(t, m["name"], "×".join(map(str, m["shape"])), m["process"],
                     f"[{m['sigma_min']:g}, {m['sigma_max']:g}]", m["description"])
        console.print(t)
    if "specs" in show:
        t = Table(title="built-in specs (sampler-bench sweep NAME)")
        t.add_column("name")
        t.add_column("description")
        for m in catalog["specs"]:
            _add_row(t, m["name"], m["description"])
        console.print(t)


# ---------------------------------------------------------------------------------------------
# show


def _short_options(options_json: str, solver: str) -> str:
    """Options that differ from the solver's defaults, for a row label."""
    import sampler_bench as sb

    try:
        opts = json.loads(options_json)
        defaults = sb.solvers.info(solver).validate({})
    except (ValueError, TypeError):
        return ""
    diff = {k: v for k, v in opts.items() if k in defaults and json.dumps(defaults[k], default=list) != json.dumps(v)}
    return ", ".join(f"{k}={v}" for k, v in sorted(diff.items()))


@main.command()
@click.argument("db", type=click.Path(path_type=Path))
@click.option("--metric", "-m", "key", default=None, help="Value to tabulate (e.g. endpoint_rmse, fd) [default: the first stored].")
@click.option("--model", default=None, help="Only this model.")
@click.option("--long", "long_", is_flag=True, help="One row per cell with its status, NFE and timings.")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Export every cell and value (long format) to CSV.")
@click.option("--parquet", "parquet_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Export every cell and value (long format) to Parquet (needs pyarrow).")
@friendly
def show(db, key, model, long_, csv_path, parquet_path):
    """The results in DB as a table: sampler × NFE for one metric value (or --long), or exported."""
    from .bench.store import ResultsStore

    with ResultsStore(db, read_only=True) as store:
        cells = store.cells()
        metrics = store.metrics()
    long_frame = cells.merge(metrics, on="cell_id", how="left")
    # the interval next to the value it qualifies: value, ci_low, ci_high, corrected
    cols = [c for c in long_frame.columns if c not in ("ci_low", "ci_high", "corrected")]
    at = cols.index("value") + 1 if "value" in cols else len(cols)
    long_frame = long_frame[cols[:at] + [c for c in ("ci_low", "ci_high", "corrected") if c in long_frame] + cols[at:]]
    if csv_path is not None or parquet_path is not None:
        for path, write in ((csv_path, long_frame.to_csv), (parquet_path, long_frame.to_parquet)):
            if path is None:
                continue
            try:
                write(path, index=False)
            except ImportError:
                raise click.ClickException(
                    "writing Parquet needs pyarrow: pip install 'sampler-bench[parquet]'"
                ) from None
            except OSError as e:
                missing = " (its directory does not exist)" if not Path(path).parent.is_dir() else ""
                raise InputError(f"cannot write {str(path)!r}: {e.strerror or e}{missing}") from None
            console.print(f"wrote {len(long_frame)} rows to {path}")
        return
    if cells.empty:
        console.print("the store holds no cells yet")
        return
    if model is not None:
        models = sorted(cells["model"].unique())
        if model not in models:
            from .options import closest

            raise click.UsageError(f"no model {model!r} in the store{closest(model, models)}; models: {', '.join(models)}")
        cells = cells[cells["model"] == model]
        metrics = metrics[metrics["cell_id"].isin(cells["cell_id"])]
    if long_:
        t = Table(title=f"{len(cells)} cells")
        cols = ("model", "solver", "schedule", "nfe_budget", "nfe_counted", "status", "wall_time_s", "denoiser_fraction", "reason")
        for c in cols:
            t.add_column(c, overflow="fold")
        for _, r in cells.iterrows():
            t.add_row(*[escape(_cell_text(r[c])) for c in cols])
        console.print(t)
        return
    keys = list(dict.fromkeys(metrics["key"]))
    if not keys:
        console.print("no metric values stored; use --long for the cells")
        return
    if key is None:
        key = "endpoint_rmse" if "endpoint_rmse" in keys else keys[0]
    elif key not in keys:
        from .options import closest

        raise click.UsageError(f"no value {key!r} in the store{closest(key, keys)}; values: {', '.join(keys)}")
    chosen = metrics[metrics["key"] == key].set_index("cell_id")
    vals = chosen["value"]
    half = (0.5 * (chosen["ci_high"] - chosen["ci_low"])) if "ci_high" in chosen else vals * float("nan")
    cells, replicas = _combine_replicates(cells, chosen)
    lower = bool(chosen["lower_is_better"].fillna(True).astype(bool).iloc[0]) if len(chosen) else True
    for mdl, group in cells.groupby("model", sort=False):
        budgets = sorted(group["nfe_budget"].dropna().unique())
        caption = ("value ± half-width of its 95% interval for the population value (the interval of a "
                   "biased estimator such as fd is centred on the bias-corrected value: --csv column corrected)")
        if any(cid in replicas for cid in group["cell_id"]):
            from .report.tables import EDM_CONVENTION

            ks = sorted({len(replicas[c]) for c in group["cell_id"] if c in replicas})
            caption += (f". Cells run on {'/'.join(map(str, ks))} disjoint seed ranges (replicates = K): mean of the K "
                        f"values ± the half-width of its {replicas.confidence:.0%} Student-t interval, then the "
                        f"{'minimum' if lower else 'maximum'} over replicates: {EDM_CONVENTION}")
        t = Table(title=f"{mdl}: {key} (sampler × NFE budget; counted NFE in brackets when it differs)",
                  caption=caption)
        t.add_column("sampler")
        for b in budgets:
            t.add_column(str(b), justify="right")
        group = group.assign(label=[
            s + (f" ({o})" if o else "") + (f" · {sch}" if group["schedule"].nunique() > 1 else "")
            for s, o, sch in zip(group["solver"],
                                 [_short_options(o, s) for o, s in zip(group["requested_options"], group["solver"])],
                                 group["schedule"])
        ])
        group = _distinguished(group)
        for label, rows in group.groupby("label", sort=False):
            out = []
            for b in budgets:
                r = rows[rows["nfe_budget"] == b]
                if r.empty:
                    out.append("")
                    continue
                r = r.iloc[-1]
                if r["status"] != "ok" or r["cell_id"] not in vals.index:
                    out.append(f"[dim]{r['status'] if r['status'] != 'ok' else '–'}[/dim]")
                    continue
                summary = replicas.summary(r["cell_id"], vals, lower)
                if summary is not None:  # replicates = K: mean ± t-interval · EDM's min
                    mean, hw, best = summary
                    text = f"{mean:.3g} ± {hw:.2g} · {'min' if lower else 'max'} {best:.3g}"
                else:
                    text = f"{vals[r['cell_id']]:.3g}"
                    hw = half[r["cell_id"]]
                    if not _na(hw):
                        text += f" ± {hw:.2g}"
                if not _na(r["nfe_counted"]) and int(r["nfe_counted"]) != int(b):
                    text += f" ({int(r['nfe_counted'])})"
                out.append(text)
            t.add_row(escape(label), *out)
        console.print(t)


class _Replicas(dict):
    """cell id of replicate 0 -> the cell ids of all K replicates (``replicates = K`` in a spec)."""

    confidence = 0.95

    def summary(self, cid, values, lower_is_better: bool):
        """(mean, t-interval half-width, best) over the replicates of ``cid``, or None."""
        from .report.tables import replicate_summary

        if cid not in self:
            return None
        got = [values[c] for c in self[cid] if c in values.index]
        return replicate_summary(got, lower_is_better, self.confidence)


def _combine_replicates(cells, chosen):
    """``cells`` without replicates 1..K-1 of a ``replicates = K`` sweep, and the :class:`_Replicas` map.

    The replicates of one cell differ only in their seed (``base_seed + k * n_samples``, recorded in
    each value's provenance under ``replicate``); they are one row of the table, as in the report."""
    from .report.tables import parse_json

    replicas = _Replicas()
    info = {}
    for cid, prov in zip(chosen.index, chosen["provenance"] if "provenance" in chosen else []):
        p = parse_json(prov)
        rep = p.get("replicate")
        if isinstance(rep, dict) and "index" in rep:
            info[cid] = (int(rep["index"]), int(rep.get("base_seed", 0)))
            replicas.confidence = float((p.get("interval") or {}).get("confidence", replicas.confidence))
    if not info:
        return cells, replicas
    ident = [c for c in ("model", "solver", "requested_options", "schedule", "schedule_params", "nfe_budget",
                         *DISTINGUISHING) if c in cells.columns and c != "seed"]
    groups: dict[tuple, list[tuple[int, str]]] = {}
    for _, r in cells[cells["cell_id"].isin(info)].iterrows():
        k, base = info[r["cell_id"]]
        key = tuple("–" if _na(r[c]) else repr(r[c]) for c in ident) + (base,)
        groups.setdefault(key, []).append((k, r["cell_id"]))
    extra = set()
    for members in groups.values():
        members.sort()
        replicas[members[0][1]] = [cid for _, cid in members]
        extra.update(cid for _, cid in members[1:])
    return cells[~cells["cell_id"].isin(extra)], replicas


#: Cell columns that can tell apart two cells of one (model, sampler, schedule, NFE), in the order shown.
DISTINGUISHING = ("n_samples", "seed", "precision", "sigma_min", "sigma_max", "ends_at_zero", "schedule_params",
                  "device", "model_hash")


def _distinguished(group):
    """``group`` with each row label extended by the columns that differ between cells sharing a label and
    budget (e.g. two sweeps of one spec with other n_samples or seed), so every stored cell gets its own
    row instead of one being picked silently; the cell id when no column tells them apart."""
    shared = group.groupby(["label", "nfe_budget"], sort=False)
    if not (shared.size() > 1).any():
        return group
    cols = [c for c in DISTINGUISHING if (shared[c].nunique(dropna=False) > 1).any()]
    extra = [", ".join(f"{c}={_cell_text(r[c])}" for c in cols) for _, r in group.iterrows()]
    group = group.assign(label=[lbl + (f" · {e}" if e else "") for lbl, e in zip(group["label"], extra)])
    if (group.groupby(["label", "nfe_budget"], sort=False).size() > 1).any():
        group = group.assign(label=[f"{lbl} · cell {cid[:8]}" for lbl, cid in zip(group["label"], group["cell_id"])])
    console.print(f"[yellow]note[/yellow]: the store holds several cells per sampler and budget; rows are told apart by "
                  f"{', '.join(cols) if cols else 'their cell id'}")
    return group


def _na(v) -> bool:
    try:
        import pandas as pd

        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def _cell_text(v) -> str:
    if _na(v):
        return "–"
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


# ---------------------------------------------------------------------------------------------
# import


@main.group(name="import")
def import_():
    """Convert an outside checkpoint into sampler-bench's format (safetensors + JSON), once."""


@import_.command(name="edm")
@click.argument("pickle_path", metavar="NETWORK.pkl", type=click.Path(path_type=Path))
@click.option("--out", "-o", "out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for NAME.safetensors + NAME.json.")
@click.option("--trust-pickle", is_flag=True,
              help="Required: unpickling runs code stored in the file (EDM's code must be on PYTHONPATH).")
@click.option("--name", default=None, help="Checkpoint name [default: the pickle's file name].")
@click.option("--module", default="training.networks", show_default=True,
              help="EDM's module that defines the network classes (imported when the checkpoint loads).")
def import_edm(pickle_path, out, trust_pickle, name, module):
    """An NVlabs/edm network pickle -> a checkpoint that loads without unpickling."""
    from .models.edm_import import import_pickle

    try:
        weights, config = import_pickle(pickle_path, out, trust_pickle=trust_pickle, name=name, module=module)
    except ValueError as e:
        raise InputError(str(e)) from None
    console.print(f"wrote [bold]{escape(str(weights))}[/] and {escape(config.name)}; use it as "
                  f"checkpoint = \"{escape(str(weights.with_suffix('')))}\" (EDM's module {module} must be importable)")


if __name__ == "__main__":  # pragma: no cover
    main()
