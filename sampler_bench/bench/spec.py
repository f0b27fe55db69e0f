"""Sweep specs: a TOML file that says which samplers to benchmark, on what, at which NFE budgets.

Every key is documented in ``benchmarks/example_sweep.toml``. Parsing validates the whole spec
before any work starts: an unknown key, model, sampler, sampler option, schedule, schedule parameter
or metric stops with one :class:`SpecError` that names the place, the closest valid name and what
is allowed; a malformed TOML file reports the line and column.

A spec is expanded into *cells* by :mod:`sampler_bench.bench.cells`: one cell per
(model, sampler + options, schedule, NFE budget), each run on the same seeds with the same metrics.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import math
import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

from ..catalog_file import shipped
from ..options import MAX_NFE_BUDGET, SolverOptionError, closest

#: Largest number of samples per cell kept in the store for the report's pictures.
MAX_KEEP_SAMPLES = 256
#: Seeds are stored as SQLite INTEGERs (signed 64-bit): sample i uses seed + i, so seed + n_samples - 1
#: must fit.
MAX_SEED = 2**63 - 1
#: Noise levels a spec may ask for. Beyond 1e6 the solvers' float64 arithmetic (sigma^2, exp(-h) over
#: the whole range) loses the digits that separate the levels; below 1e-6 the float32 networks cannot
#: tell a level from 0.
SIGMA_RANGE = (1e-6, 1e6)
#: Documented bounds of schedule parameters (inclusive), checked before any grid is built; rho beyond
#: 1000 makes sigma^(1/rho) equal at every level, M beyond 1e5 makes the iDDPM table slow to build.
SCHEDULE_PARAM_RANGES: dict[str, tuple[float, float, type]] = {
    "rho": (1e-3, 1e3, float), "M": (1, 100_000, int), "C1": (1e-12, 1.0, float), "C2": (0.0, 1.0, float),
    "beta_d": (1e-6, 1e4, float), "beta_min": (-1e4, 1e4, float), "eps_s": (1e-12, 1.0, float),
}
#: Largest spec file read (a spec is a few KB of TOML).
MAX_SPEC_BYTES = 1 << 20
#: Characters allowed in a spec name: it names the output directory results/<name> when --out is omitted.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
PRECISIONS = ("float64", "float32")

TOP_KEYS = (
    "name", "description", "nfe", "n_samples", "seed", "batch_size", "device", "precision", "keep_samples",
    "all_samplers", "exclude_samplers", "reference", "execution", "model", "sampler", "schedule", "metric",
    "replicates", "confidence", "noise_generator", "grid", "threads",
)
REFERENCE_KEYS = ("rtol", "atol")
#: [execution]: how the network runs (sampler_bench.models.execution); only autocast changes the numbers
EXECUTION_KEYS = ("compile", "compile_mode", "cuda_graphs", "autocast")
MODEL_KEYS = ("builtin", "checkpoint", "python", "name", "args", "trust_pickle", "guidance", "decode")
SAMPLER_KEYS = ("name", "options")
SCHEDULE_KEYS = ("name", "params", "sigma_min", "sigma_max", "ends_at_zero")
METRIC_KEYS = ("name", "feature_extractor", "params")
#: [[grid]]: a block of its own samplers x schedules x NFE budgets, added to the spec's main grid
GRID_KEYS = ("samplers", "schedules", "nfe")


# The registries import torch and every solver, model and metric module (seconds on a small machine).
# Names are checked first against the catalogue shipped with the package when it matches the installed
# sources (sampler_bench.catalog_file), so that a misspelt name stops at once; anything a name is
# looked up for (options, parameters) comes from the live registries, imported on first use.


def solver_names() -> list[str]:
    from ..solvers.registry import available

    return available()


def solver_info(name: str):
    from ..solvers.registry import info

    return info(name)


def _schedule_builders():
    from ..solvers import schedules

    return schedules


def _optimisers():
    from ..solvers import optimised

    return optimised


def _builtin_model_names() -> list[str]:
    from ..models.builtin import available

    return available()


def _metric_names() -> list[str]:
    try:
        import sampler_bench.metrics as M
    except ImportError as e:
        raise SpecError(f"the spec asks for metrics but sampler_bench.metrics cannot be imported ({e})") from None
    return list(M.available())


_LIVE_NAMES = {  # catalogue section -> (registry module, its names)
    "samplers": ("sampler_bench.solvers.registry", solver_names),
    "schedules": ("sampler_bench.solvers.schedules", lambda: sorted(_schedule_builders().BUILDERS)),
    "optimisers": ("sampler_bench.solvers.optimised", lambda: _optimisers().available()),
    "models": ("sampler_bench.models.builtin", _builtin_model_names),
    "metrics": ("sampler_bench.metrics", _metric_names),
}


def known_names(section: str) -> list[str]:
    """The valid names of a catalogue section (samplers, schedules, models, metrics): the shipped
    catalogue's, plus the live registry's once it is imported (names a user registered at run time);
    the live registry alone when the shipped catalogue does not match the sources."""
    import sys

    module, live = _LIVE_NAMES[section]
    data = shipped()
    if data is None or section not in data:
        return live()
    names = [e["name"] for e in data[section]]
    if module in sys.modules:
        names += [n for n in live() if n not in names]
    return names


class SpecError(ValueError):
    """A sweep spec that cannot run; the message says where and what to change."""


@dataclass(frozen=True)
class ModelSpec:
    """A built-in analytic model (``builtin``), a trained checkpoint (``checkpoint`` path) or a plug-in
    factory (``python = "module:factory"`` called with ``args``; see :mod:`sampler_bench.models.plugin`).

    ``guidance``: classifier-free guidance scale of a class-conditional model (None: plain conditional
    sampling); ``decode``: "module:fn" mapping samples (e.g. latents) to what the metrics score.
    """

    builtin: str | None = None
    checkpoint: str | None = None
    name: str | None = None
    python: str | None = None
    args: dict = field(default_factory=dict, compare=True)
    trust_pickle: bool = False
    guidance: float | None = None
    decode: str | None = None

    @property
    def label(self) -> str:
        if self.name:
            base = self.name
        elif self.builtin:
            base = self.builtin
        elif self.python:
            base = self.python.split(":")[-1]
        else:
            base = Path(self.checkpoint).stem
        return base if self.guidance is None or self.name else f"{base} w={self.guidance:g}"


@dataclass(frozen=True)
class SamplerSpec:
    """A registered sampler with its options (validated; solver defaults filled in).

    ``from_all``: added by ``all_samplers = true`` rather than named; such a sampler is left out
    (with a note) for models whose process it does not apply to, while a named one makes 'skipped' cells.
    """

    name: str
    options: dict = field(default_factory=dict)
    from_all: bool = field(default=False, compare=False)


@dataclass(frozen=True)
class ScheduleSpec:
    """A schedule builder with its parameters; ``sigma_min``/``sigma_max`` default to the model's range."""

    name: str = "karras"
    params: dict = field(default_factory=dict)
    sigma_min: float | None = None
    sigma_max: float | None = None
    ends_at_zero: bool = True


@dataclass(frozen=True)
class MetricSpec:
    """A registered metric, its feature extractor (or None for the metric's default) and parameters."""

    name: str
    feature_extractor: str | None = None
    params: dict = field(default_factory=dict)


@dataclass(frozen=True)
class GridSpec:
    """One block of cells: every sampler x schedule x NFE budget of the block, on every model.

    The spec's top-level samplers, schedules and ``nfe`` form the main block; each ``[[grid]]`` adds one,
    so a few samplers can be paired with a few schedules without the full cross product.
    """

    samplers: tuple[SamplerSpec, ...]
    schedules: tuple[ScheduleSpec, ...]
    nfe: tuple[int, ...]


@dataclass
class Spec:
    """A validated sweep spec. ``source`` is the TOML text (stored with every sweep for provenance)."""

    name: str
    nfe: list[int]
    models: list[ModelSpec]
    samplers: list[SamplerSpec]
    schedules: list[ScheduleSpec]
    metrics: list[MetricSpec]
    description: str = ""
    n_samples: int = 1000
    seed: int = 0
    batch_size: int = 1000
    device: str = "cpu"
    precision: str = "float64"
    keep_samples: int = MAX_KEEP_SAMPLES
    #: every cell runs on this many disjoint seed ranges (replicate k: seeds seed + k*n_samples + i)
    replicates: int = 1
    #: level of every stored interval, strictly inside (0, 1)
    confidence: float = 0.95
    #: which replicate this (expanded) spec is: its seed is the spec's seed + replicate_index * n_samples
    replicate_index: int = 0
    #: what drives a stochastic sampler's noise: "philox" (counter-based, keyed on (seed, i, draw)) or
    #: "torch" (one torch.Generator per sample seeded seed + i, EDM's and k-diffusion's seeding)
    noise_generator: str = "philox"
    #: torch CPU threads of each sweep process (torch.set_num_threads); None: torch's default (one per
    #: core). Not part of a cell's identity; the sweep's stored spec text and command record it.
    threads: int | None = None
    #: tolerances of the DOP853 reference for the endpoint error ({}: chosen per model, see bench/prepare.py)
    reference: dict = field(default_factory=dict)
    #: execution options of the network ({}: plain eager float32/float64), see [execution]
    execution: dict = field(default_factory=dict)
    source: str = ""
    path: str | None = None
    #: the [[grid]] blocks, each its own samplers x schedules x NFE (see :class:`GridSpec`)
    grids: list[GridSpec] = field(default_factory=list)

    @property
    def blocks(self) -> list[GridSpec]:
        """The main grid (top-level samplers x schedules x nfe, when it has samplers) and the [[grid]] blocks."""
        main = [GridSpec(tuple(self.samplers), tuple(self.schedules), tuple(self.nfe))] if self.samplers else []
        return main + list(self.grids)

    @property
    def every_sampler(self) -> list[SamplerSpec]:
        """Every sampler configuration of any block, once each, in order."""
        return _unique(s for b in self.blocks for s in b.samplers)

    @property
    def every_schedule(self) -> list[ScheduleSpec]:
        """Every schedule of any block, once each, in order."""
        return _unique(s for b in self.blocks for s in b.schedules)

    @property
    def every_nfe(self) -> list[int]:
        """Every NFE budget of any block, sorted."""
        return sorted({n for b in self.blocks for n in b.nfe})

    @property
    def source_hash(self) -> str:
        return hashlib.sha256(self.source.encode()).hexdigest()[:16]


def _unique(items) -> list:
    out: list = []
    for item in items:
        if item not in out:
            out.append(item)
    return out


# ---------------------------------------------------------------------------------------------
# Small validators. ``where`` is a human label of the place in the file, e.g. "[[sampler]] #2".


def _line_of(text: str, key: str) -> str:
    """' (line N)' of the first line that assigns or opens ``key``, best effort for messages."""
    pattern = re.compile(rf"^\s*(\[\[?\s*{re.escape(key)}\s*\]\]?|\"?{re.escape(key)}\"?\s*=)", re.M)
    m = pattern.search(text)
    return f" (line {text.count(chr(10), 0, m.start()) + 1})" if m else ""


def _line_of_value(text: str, value: str) -> str:
    """' (line N)' of the first line holding the string ``value``, best effort for messages."""
    m = re.search(rf"[\"']{re.escape(value)}[\"']", text)
    return f" (line {text.count(chr(10), 0, m.start()) + 1})" if m else ""


def _check_keys(table: Mapping, allowed: tuple[str, ...], where: str, text: str) -> None:
    for key in table:
        if key not in allowed:
            hint = ""
            if where != "spec" and (key in TOP_KEYS or closest(key, TOP_KEYS)):
                # TOML puts every key after a [[table]] header into that table.
                hint = "; top-level keys must come before the first [[...]] table"
            raise SpecError(
                f"{where}: unknown key {key!r}{_line_of(text, key)}{closest(key, allowed)}; "
                f"allowed keys: {', '.join(allowed)}{hint}"
            )


def _int(value: Any, where: str, low: int | None = None, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(f"{where} must be an integer, got {value!r}")
    if low is not None and value < low:
        raise SpecError(f"{where} must be >= {low}, got {value}")
    if high is not None and value > high:
        raise SpecError(f"{where} must be <= {high}, got {value}")
    return value


def _float(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise SpecError(f"{where} must be a positive number, got {value!r}")
    return float(value)


def _confidence(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 < value < 1):
        raise SpecError(f"confidence must be a level strictly between 0 and 1, e.g. confidence = 0.95; got {value!r}")
    return float(value)


def _noise_generator(value: Any) -> str:
    from ..rng import NOISE_GENERATORS

    if value not in NOISE_GENERATORS:
        raise SpecError(f"noise_generator must be one of {', '.join(NOISE_GENERATORS)}, got {value!r}"
                        f"{closest(str(value), NOISE_GENERATORS)}")
    return value


def _seed(value: Any, n_samples: int) -> int:
    seed = _int(value, "seed", low=0)
    if seed + n_samples - 1 > MAX_SEED:
        raise SpecError(f"seed = {seed} is too large: sample i uses seed + i, which the results store keeps as a "
                        f"signed 64-bit integer, so seed must be <= {MAX_SEED - (n_samples - 1)} "
                        f"for n_samples = {n_samples}")
    return seed


def _sigma(value: Any, where: str) -> float:
    v = _float(value, where)
    lo, hi = SIGMA_RANGE
    if not lo <= v <= hi:
        raise SpecError(f"{where} = {value!r} is outside the supported noise levels [{lo:g}, {hi:g}]")
    return v


def _name(value: Any) -> str:
    """A spec name: one path component (it becomes results/<name>), never a path."""
    n = _str(value, "name")
    if not NAME_PATTERN.match(n) or n in (".", ".."):
        raise SpecError(
            f"name {n!r} is not a plain name: it becomes the output directory results/<name>, so it must be one "
            "path component of letters, digits, '.', '_', '+' or '-' (no '/', '..' or absolute path); "
            "use --out DIR to choose another directory")
    return n


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise SpecError(f"{where} must be a non-empty string, got {value!r}")
    return value


def _table(value: Any, where: str) -> dict:
    if not isinstance(value, dict):
        raise SpecError(f"{where} must be a table (e.g. {{ key = value }}), got {value!r}")
    return dict(value)


def _array_of_tables(doc: Mapping, key: str, text: str) -> list[dict]:
    value = doc.get(key, [])
    if isinstance(value, dict):  # [model] instead of [[model]]: accept a single table
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise SpecError(f"{key!r}{_line_of(text, key)} must be written as [[{key}]] tables")
    return value


# ---------------------------------------------------------------------------------------------


def _sampler_name(t: Mapping, where: str, text: str) -> str:
    if "name" not in t:
        raise SpecError(f"{where}: missing name = \"...\" (run `sampler-bench list` for the samplers)")
    n = _str(t["name"], f"{where} name")
    names = known_names("samplers")
    if n not in names:
        raise SpecError(
            f"{where}: unknown sampler {n!r}{_line_of_value(text, n)}{closest(n, names)}; "
            "run `sampler-bench list` to see the registered samplers"
        )
    return n


def _check_excluded(exclude: list) -> None:
    names = known_names("samplers")
    for e in exclude:
        if e not in names:
            raise SpecError(f"exclude_samplers: unknown sampler {e!r}{closest(e, names)}")


def _builtin_name(t: Mapping, where: str, text: str) -> str:
    b = _str(t["builtin"], f"{where} builtin")
    names = known_names("models")
    if b not in names:
        raise SpecError(
            f"{where}: unknown built-in model {b!r}{_line_of_value(text, b)}{closest(b, names)}; "
            f"built-in models: {', '.join(names)}"
        )
    return b


def _schedule_name(t: Mapping, where: str, text: str) -> str:
    name = _str(t.get("name", "karras"), f"{where} name")
    builders = sorted(known_names("schedules"))
    optimisers = sorted(known_names("optimisers"))
    if name not in builders and name not in optimisers:
        extra = " ('list' grids are fixed, so they cannot follow an NFE budget)" if name == "list" else ""
        raise SpecError(
            f"{where}: unknown schedule {name!r}{_line_of_value(text, name)}{closest(name, builders + optimisers)}"
            f"{extra}; available: {', '.join(builders)}; optimised: {', '.join(optimisers)}"
        )
    return name


def _metric_name(t: Mapping, where: str, text: str) -> str:
    names = known_names("metrics")
    if "name" not in t:
        raise SpecError(f"{where}: missing name = \"...\"; metrics: {', '.join(names)}")
    n = _str(t["name"], f"{where} name")
    if n not in names:
        raise SpecError(
            f"{where}: unknown metric {n!r}{_line_of_value(text, n)}{closest(n, names)}; metrics: {', '.join(names)}"
        )
    return n


def _check_names(doc: Mapping, text: str) -> None:
    """Every table's keys and every name the spec gives, before anything is looked up in a registry:
    with the shipped catalogue these checks import nothing, so a misspelt key or name stops at once."""
    for k, t in enumerate(_array_of_tables(doc, "model", text), 1):
        where = f"[[model]] #{k}"
        _check_keys(t, MODEL_KEYS, where, text)
        if "builtin" in t and "checkpoint" not in t and "python" not in t:
            _builtin_name(t, where, text)
    exclude = doc.get("exclude_samplers", [])
    if isinstance(exclude, list) and all(isinstance(e, str) for e in exclude):
        _check_excluded(exclude)
    for k, t in enumerate(_array_of_tables(doc, "sampler", text), 1):
        _check_keys(t, SAMPLER_KEYS, f"[[sampler]] #{k}", text)
        _sampler_name(t, f"[[sampler]] #{k}", text)
    for k, t in enumerate(_array_of_tables(doc, "schedule", text), 1):
        _check_keys(t, SCHEDULE_KEYS, f"[[schedule]] #{k}", text)
        _schedule_name(t, f"[[schedule]] #{k}", text)
    for k, t in enumerate(_array_of_tables(doc, "metric", text), 1):
        _check_keys(t, METRIC_KEYS, f"[[metric]] #{k}", text)
        _metric_name(t, f"[[metric]] #{k}", text)
    for k, g in enumerate(_array_of_tables(doc, "grid", text), 1):
        where = f"[[grid]] #{k}"
        _check_keys(g, GRID_KEYS, where, text)
        for key, check in (("samplers", _sampler_name), ("schedules", _schedule_name)):
            entries = g.get(key)
            if not isinstance(entries, list):
                continue  # said with an example by the full parse
            for j, e in enumerate(entries, 1):
                if isinstance(e, str):
                    e = {"name": e}
                if isinstance(e, dict) and (key == "schedules" or "name" in e):
                    check(e, f"{where} {key} entry {j}", text)


def _parse_models(doc: Mapping, text: str, base: Path | None) -> list[ModelSpec]:
    tables = _array_of_tables(doc, "model", text)
    if not tables:
        raise SpecError(
            "the spec names no model; add e.g.\n  [[model]]\n  builtin = \"gmm2d\"\n"
            f"(built-in models: {', '.join(known_names('models'))}) or checkpoint = \"path/to/checkpoint\""
        )
    out = []
    for k, t in enumerate(tables, 1):
        where = f"[[model]] #{k}"
        _check_keys(t, MODEL_KEYS, where, text)
        has_b, has_c, has_p = "builtin" in t, "checkpoint" in t, "python" in t
        if has_b + has_c + has_p != 1:
            raise SpecError(f"{where}: give exactly one of builtin = \"name\", checkpoint = \"path\" or "
                            "python = \"package.module:factory\"")
        name = _str(t["name"], f"{where} name") if "name" in t else None
        extras = _model_extras(t, where, has_p)
        if has_p:
            ref = _str(t["python"], f"{where} python")
            if ref.count(":") != 1 or not all(ref.split(":")):
                raise SpecError(f"{where}: python = {ref!r} must be written \"package.module:factory\"")
            scales = extras.pop("guidance")
            for w in scales:
                out.append(ModelSpec(python=ref, name=(f"{name} w={w:g}" if name and len(scales) > 1 else name),
                                     guidance=w, **extras))
            continue
        if extras.pop("guidance") != [None]:
            raise SpecError(f"{where}: guidance applies to class-conditional plug-in models (python = ...) only")
        if has_b:
            b = _builtin_name(t, where, text)
            out.append(ModelSpec(builtin=b, name=name, decode=extras["decode"]))
        else:
            c = Path(_str(t["checkpoint"], f"{where} checkpoint")).expanduser()
            if not c.is_absolute() and base is not None:
                c = base / c  # relative to the spec file, so specs can travel with their checkpoints
            # a checkpoint is a NAME.safetensors + NAME.json pair; any of NAME, either file or a directory names it
            if not any(Path(str(c) + ext).exists() for ext in ("", ".safetensors", ".json")):
                raise SpecError(f"{where}: checkpoint {str(c)!r} does not exist")
            out.append(ModelSpec(checkpoint=str(c), name=name, decode=extras["decode"]))
    labels = [m.label for m in out]
    dup = {x for x in labels if labels.count(x) > 1}
    if dup:
        raise SpecError(f"two [[model]] entries are both called {sorted(dup)[0]!r}; give them distinct name = \"...\"")
    return out


def _model_extras(t: Mapping, where: str, plugin: bool) -> dict:
    """args / trust_pickle / guidance (a scale or a list of scales: one model each) / decode of a [[model]]."""
    if not plugin:
        for key in ("args", "trust_pickle"):
            if key in t:
                raise SpecError(f"{where}: {key} is for plug-in models (python = \"package.module:factory\")")
    args = _table(t.get("args", {}), f"{where} args")
    trust = t.get("trust_pickle", False)
    if not isinstance(trust, bool):
        raise SpecError(f"{where} trust_pickle must be true or false, got {trust!r}")
    g = t.get("guidance")
    scales = g if isinstance(g, list) else [g]
    for w in scales:
        if w is not None and (isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w)):
            raise SpecError(f"{where} guidance must be a number or a list of numbers (the CFG scale w), got {g!r}")
    if not scales:
        raise SpecError(f"{where} guidance must not be an empty list")
    decode = t.get("decode")
    if decode is not None:
        decode = _str(decode, f"{where} decode")
        if decode.count(":") != 1 or not all(decode.split(":")):
            raise SpecError(f"{where}: decode = {decode!r} must be written \"package.module:function\"")
    return {"args": args, "trust_pickle": trust, "guidance": [None if w is None else float(w) for w in scales],
            "decode": decode}


def _parse_samplers(doc: Mapping, text: str) -> list[SamplerSpec]:
    out: list[SamplerSpec] = []
    all_samplers = doc.get("all_samplers", False)
    if not isinstance(all_samplers, bool):
        raise SpecError(f"all_samplers must be true or false, got {all_samplers!r}")
    exclude = doc.get("exclude_samplers", [])
    if not isinstance(exclude, list) or not all(isinstance(e, str) for e in exclude):
        raise SpecError("exclude_samplers must be a list of sampler names")
    _check_excluded(exclude)
    if all_samplers:
        # Adaptive solvers are swept only when they map a budget to tolerances (the yardsticks do not).
        sweepable = [n for n in solver_names()
                     if not solver_info(n).adaptive or solver_info(n).tolerance_for_nfe is not None]
        out += [SamplerSpec(n, solver_info(n).validate({}), from_all=True) for n in sweepable if n not in exclude]
    for k, t in enumerate(_array_of_tables(doc, "sampler", text), 1):
        out.append(_sampler(t, f"[[sampler]] #{k}", text))
    if not out and not doc.get("grid"):
        raise SpecError(
            "the spec names no sampler; set all_samplers = true or add [[sampler]] tables or [[grid]] blocks "
            "(run `sampler-bench list` to see the registered samplers)"
        )
    unique: list[SamplerSpec] = []
    for s in out:  # the same sampler with the same options is one cell, however it was asked for
        if s in unique:
            if not s.from_all:  # named explicitly: it keeps its 'skipped' cells where it does not apply
                unique[unique.index(s)] = s
        else:
            unique.append(s)
    return unique


def _sampler(t: Mapping, where: str, text: str) -> SamplerSpec:
    """A validated sampler from its table ``{ name = ..., options = {...} }``."""
    _check_keys(t, SAMPLER_KEYS, where, text)
    n = _sampler_name(t, where, text)
    meta = solver_info(n)
    if meta.adaptive and meta.tolerance_for_nfe is None:
        raise SpecError(
            f"{where}: {n!r} is adaptive (its NFE is set by tolerances, not a budget) and cannot be swept; "
            "it is the yardstick the endpoint error is measured against"
        )
    try:
        opts = meta.validate(_table(t.get("options", {}), f"{where} options"))
    except SolverOptionError as e:
        raise SpecError(f"{where}: {e}") from None
    return SamplerSpec(n, opts)


def _schedule_param_names(name: str) -> list[str]:
    sig = inspect.signature(_schedule_builders().BUILDERS[name])
    return [p for p in sig.parameters if p not in ("n", "sigma_min", "sigma_max", "append_zero")]


def _parse_optimised(t: Mapping, name: str, where: str) -> ScheduleSpec:
    """An optimised schedule (solvers/optimised): its parameters checked now; the model, sampler and
    budget it needs are checked when the models load (bench/cells.py)."""
    params = _table(t.get("params", {}), f"{where} params")
    try:
        _optimisers().get(name).params(params)
    except ValueError as e:
        raise SpecError(f"{where}: {e}") from None
    smin = _sigma(t["sigma_min"], f"{where} sigma_min") if "sigma_min" in t else None
    smax = _sigma(t["sigma_max"], f"{where} sigma_max") if "sigma_max" in t else None
    if smin is not None and smax is not None and smin >= smax:
        raise SpecError(f"{where}: sigma_min ({smin}) must be smaller than sigma_max ({smax})")
    ends = t.get("ends_at_zero", True)
    if not isinstance(ends, bool):
        raise SpecError(f"{where} ends_at_zero must be true or false, got {ends!r}")
    return ScheduleSpec(name, params, smin, smax, ends)


def _parse_schedules(doc: Mapping, text: str) -> list[ScheduleSpec]:
    tables = _array_of_tables(doc, "schedule", text)
    if not tables:
        return [ScheduleSpec()]
    return [_schedule(t, f"[[schedule]] #{k}", text) for k, t in enumerate(tables, 1)]


def _schedule(t: Mapping, where: str, text: str) -> ScheduleSpec:
    """A validated schedule from its table ``{ name = ..., params = {...}, sigma_min = ..., ... }``."""
    _check_keys(t, SCHEDULE_KEYS, where, text)
    name = _schedule_name(t, where, text)
    if name in known_names("optimisers"):
        return _parse_optimised(t, name, where)
    params = _table(t.get("params", {}), f"{where} params")
    allowed = _schedule_param_names(name)
    for p in params:
        if p not in allowed:
            raise SpecError(
                f"{where}: schedule {name!r} has no parameter {p!r}{closest(p, allowed)}; "
                f"its parameters: {', '.join(allowed) or 'none'}"
            )
    for p, v in params.items():
        if p in SCHEDULE_PARAM_RANGES:
            lo, hi, kind = SCHEDULE_PARAM_RANGES[p]
            ok_type = (isinstance(v, int) if kind is int else isinstance(v, (int, float))) and not isinstance(v, bool)
            # below the range the builder's own message says what is wrong ("rho must be positive");
            # M = 0 it would report as "no levels in range", hence M's lower bound here
            too_low = ok_type and math.isfinite(v) and v < lo and kind is not int
            if not too_low and (not ok_type or not math.isfinite(v) or not lo <= v <= hi):
                raise SpecError(f"{where}: schedule {name!r} parameter {p} = {v!r} must be "
                                f"{'an integer' if kind is int else 'a number'} in [{lo:g}, {hi:g}]")
    smin = _sigma(t["sigma_min"], f"{where} sigma_min") if "sigma_min" in t else None
    smax = _sigma(t["sigma_max"], f"{where} sigma_max") if "sigma_max" in t else None
    if smin is not None and smax is not None and smin >= smax:
        raise SpecError(f"{where}: sigma_min ({smin}) must be smaller than sigma_max ({smax})")
    ends = t.get("ends_at_zero", True)
    if not isinstance(ends, bool):
        raise SpecError(f"{where} ends_at_zero must be true or false, got {ends!r}")
    # The parameter values themselves: build a small grid now rather than fail mid-sweep. A range
    # end left to the model is unknown here; the model's range is checked when the models load.
    lo = smin if smin is not None else (smax / 1000 if smax is not None else 0.002)
    hi = smax if smax is not None else (smin * 1000 if smin is not None else 80.0)
    try:
        _schedule_builders().build(name, 3, lo, hi, append_zero=ends, **params)
    except ValueError as e:
        raise SpecError(f"{where}: {e}") from None
    return ScheduleSpec(name, params, smin, smax, ends)


def _nfe_list(value: Any, where: str) -> list[int]:
    """Sorted distinct NFE budgets from a non-empty list of integers."""
    if not isinstance(value, list) or not value:
        raise SpecError(f"{where} must be a non-empty list of budgets, e.g. nfe = [4, 8, 16], got {value!r}")
    label = "every NFE budget" if where == "nfe" else f"every NFE budget of {where}"
    return sorted({_int(b, label, low=1, high=MAX_NFE_BUDGET) for b in value})


def _entries(value: Any, where: str, example: str) -> list[dict]:
    """A [[grid]] list of samplers or schedules: each a name or an inline table, as tables."""
    if not isinstance(value, list) or not value:
        raise SpecError(f"{where} must be a non-empty list of names or inline tables, e.g. {example}; got {value!r}")
    out = []
    for k, v in enumerate(value, 1):
        if isinstance(v, str):
            out.append({"name": v})
        elif isinstance(v, dict):
            out.append(dict(v))
        else:
            raise SpecError(f"{where}: entry {k} must be a name or an inline table, e.g. {example}; got {v!r}")
    return out


def _parse_grids(tables: list[dict], text: str, nfe: list[int], schedules: list[ScheduleSpec]) -> list[GridSpec]:
    """The [[grid]] blocks: ``samplers`` (required), ``schedules`` (default: the spec's schedules) and
    ``nfe`` (default: the spec's budgets), each a list; entries are names or inline tables with the
    keys of [[sampler]] / [[schedule]]."""
    out = []
    for k, t in enumerate(tables, 1):
        where = f"[[grid]] #{k}"
        _check_keys(t, GRID_KEYS, where, text)
        if "samplers" not in t:
            raise SpecError(f"{where}: missing samplers = [...], e.g. samplers = [\"euler\", \"dpmpp_2m\"] "
                            "(names, or inline tables { name = \"...\", options = { ... } })")
        smp = _unique(_sampler(e, f"{where} samplers entry {j}", text) for j, e in enumerate(
            _entries(t["samplers"], f"{where} samplers", '["euler", { name = "dpmpp_2m" }]'), 1))
        sch = tuple(schedules) if "schedules" not in t else tuple(_unique(
            _schedule(e, f"{where} schedules entry {j}", text) for j, e in enumerate(
                _entries(t["schedules"], f"{where} schedules", '["beta", { name = "karras", params = { rho = 7.0 } }]'), 1)))
        budgets = tuple(_nfe_list(t["nfe"], f"{where} nfe") if "nfe" in t else nfe)
        out.append(GridSpec(tuple(smp), sch, budgets))
    return out


def _parse_metrics(doc: Mapping, text: str, n_samples: int = 2, base: Path | None = None) -> list[MetricSpec]:
    tables = _array_of_tables(doc, "metric", text)
    if not tables:
        return []
    for k, t in enumerate(tables, 1):
        _metric_name(t, f"[[metric]] #{k}", text)
    try:
        import sampler_bench.metrics as M
    except ImportError as e:
        raise SpecError(f"the spec asks for metrics but sampler_bench.metrics cannot be imported ({e})") from None

    extractors = None
    features = getattr(M, "features", None)
    if features is not None and hasattr(features, "available"):
        extractors = list(features.available())
    out = []
    for k, t in enumerate(tables, 1):
        where = f"[[metric]] #{k}"
        _check_keys(t, METRIC_KEYS, where, text)
        n = _metric_name(t, where, text)
        fx = t.get("feature_extractor")
        if fx is not None:
            fx = _str(fx, f"{where} feature_extractor")
            if extractors is not None and fx not in extractors:
                raise SpecError(
                    f"{where}: unknown feature extractor {fx!r}{closest(fx, extractors)}; "
                    f"available: {', '.join(extractors)}"
                )
        params = _table(t.get("params", {}), f"{where} params")
        for key in ("reference_stats", "reference_dir"):  # files, relative to the spec file
            if isinstance(params.get(key), str) and base is not None and not Path(params[key]).expanduser().is_absolute():
                params[key] = str(base / params[key])
        m = MetricSpec(n, fx, params)
        info = M.info(n)
        try:  # options are checked again on the model; the sample count they need is known now
            opts = info.validate({k: v for k, v in m.params.items() if k in info.params})
        except ValueError as e:
            raise SpecError(f"{where}: {e}") from None
        need = info.cls.min_samples(opts) if hasattr(info.cls, "min_samples") else 1
        if n_samples < need:
            raise SpecError(f"{where}: metric {n!r} needs at least {need} samples per cell, the spec asks for "
                            f"n_samples = {n_samples}; raise n_samples")
        if m in out:
            raise SpecError(f"{where}: metric {n!r} is listed twice with the same settings")
        out.append(m)
    return out


def _parse_reference(doc: Mapping, text: str) -> dict:
    ref = _table(doc.get("reference", {}), "reference")
    _check_keys(ref, REFERENCE_KEYS, "[reference]", text)
    out = {}
    for k, v in ref.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not (0 < v < 1):
            raise SpecError(f"[reference] {k} must be a number in (0, 1), e.g. 1e-8, got {v!r}")
        out[k] = float(v)
    return out


def _parse_execution(doc: Mapping, text: str) -> dict:
    """[execution]: compile / compile_mode / cuda_graphs / autocast ("none", "bf16", "fp16"); defaults omitted."""
    from ..models.execution import AUTOCAST_DTYPES, COMPILE_MODES

    table = _table(doc.get("execution", {}), "execution")
    _check_keys(table, EXECUTION_KEYS, "[execution]", text)
    out: dict[str, Any] = {}
    for key in ("compile", "cuda_graphs"):
        if key in table:
            if not isinstance(table[key], bool):
                raise SpecError(f"[execution] {key} must be true or false, got {table[key]!r}")
            if table[key]:
                out[key] = True
    if "compile_mode" in table:
        if table["compile_mode"] not in COMPILE_MODES:
            raise SpecError(f"[execution] compile_mode must be one of {', '.join(COMPILE_MODES)}, got {table['compile_mode']!r}")
        out["compile_mode"] = table["compile_mode"]
    if "autocast" in table:
        allowed = ("none", *AUTOCAST_DTYPES)
        if table["autocast"] not in allowed:
            raise SpecError(f"[execution] autocast must be one of {', '.join(repr(a) for a in allowed)}, "
                            f"got {table['autocast']!r}{closest(str(table['autocast']), allowed)}")
        if table["autocast"] != "none":
            out["autocast"] = table["autocast"]
    return out


def _parse_device(value: Any) -> str:
    import torch

    d = _str(value, "device")
    try:
        dev = torch.device(d)
    except (RuntimeError, ValueError):
        raise SpecError(f"device {d!r} is not a torch device; use e.g. \"cpu\", \"cuda\" or \"cuda:1\"") from None
    if dev.type not in SWEEP_DEVICE_TYPES:
        raise SpecError(f"device {d!r}: sweeps run on {', '.join(SWEEP_DEVICE_TYPES)} devices"
                        + (" ('meta' tensors hold no data, so nothing can be sampled on them)" if dev.type == "meta" else ""))
    return d


#: Device types a sweep can run on; :func:`check_device` says whether one is present on this machine.
SWEEP_DEVICE_TYPES = ("cpu", "cuda", "mps")


def check_device(device: str) -> None:
    """SpecError unless ``device`` exists on this machine (called before any model is loaded or cell is run;
    a spec is parsed before command-line overrides, so parsing itself does not ask the hardware)."""
    import torch

    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise SpecError(f"device {device!r} was asked for but CUDA is not available here; use device = \"cpu\"")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise SpecError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s) "
                            f"(cuda:0..cuda:{torch.cuda.device_count() - 1})")
    elif dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise SpecError(f"device {device!r} was asked for but Apple MPS is not available here; use device = \"cpu\"")


def _default_name(stem: str) -> str:
    """A spec without ``name =`` is named after its file: keep the file-name characters a name allows."""
    n = re.sub(r"[^A-Za-z0-9._+-]+", "_", stem).lstrip("._+-")
    return n or "sweep"


def parse_spec(text: str, *, name: str | None = None, path: str | Path | None = None) -> Spec:
    """Parse and validate the TOML ``text`` of a sweep spec; :class:`SpecError` on any problem."""
    where_file = f"{path}: " if path else ""
    text = text.removeprefix("\ufeff")  # a UTF-8 byte-order mark (some editors write one) is not TOML
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SpecError(f"{where_file}malformed TOML: {e}") from None
    except RecursionError:
        raise SpecError(f"{where_file}malformed TOML: arrays or tables nested too deeply") from None
    base = Path(path).resolve().parent if path else None
    try:
        _check_keys(doc, TOP_KEYS, "spec", text)
        _check_names(doc, text)
        grid_tables = _array_of_tables(doc, "grid", text)
        if "nfe" not in doc and (not grid_tables or any("nfe" not in g for g in grid_tables)):
            raise SpecError("the spec needs NFE budgets, e.g. nfe = [4, 8, 16, 32]")
        nfe = _nfe_list(doc["nfe"], "nfe") if "nfe" in doc else []
        samplers = _parse_samplers(doc, text)
        if samplers and not nfe:
            raise SpecError("the spec's [[sampler]] tables need top-level NFE budgets, e.g. nfe = [4, 8, 16, 32]")
        schedules = _parse_schedules(doc, text)
        grids = _parse_grids(grid_tables, text, nfe, schedules)
        n_samples = _int(doc.get("n_samples", 1000), "n_samples", low=1)
        precision = doc.get("precision", "float64")
        if precision not in PRECISIONS:
            raise SpecError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}{closest(str(precision), PRECISIONS)}")
        spec = Spec(
            name=_name(doc["name"]) if "name" in doc else _default_name(name or (Path(path).stem if path else "sweep")),
            description=str(doc.get("description", "")),
            nfe=nfe,
            models=_parse_models(doc, text, base),
            samplers=samplers,
            schedules=schedules,
            grids=grids,
            metrics=_parse_metrics(doc, text, n_samples, base),
            n_samples=n_samples,
            seed=_seed(doc.get("seed", 0), n_samples),
            batch_size=_int(doc.get("batch_size", min(n_samples, 1000)), "batch_size", low=1),
            device=_parse_device(doc.get("device", "cpu")),
            precision=precision,
            keep_samples=_int(doc.get("keep_samples", MAX_KEEP_SAMPLES), "keep_samples", low=0, high=MAX_KEEP_SAMPLES),
            reference=_parse_reference(doc, text),
            execution=_parse_execution(doc, text),
            replicates=_int(doc.get("replicates", 1), "replicates (disjoint seed ranges per cell)", low=1),
            confidence=_confidence(doc.get("confidence", 0.95)),
            noise_generator=_noise_generator(doc.get("noise_generator", "philox")),
            threads=_int(doc["threads"], "threads (torch CPU threads per sweep process)", low=1, high=1024)
            if "threads" in doc else None,
            source=text,
            path=str(path) if path else None,
        )
        if spec.seed + spec.replicates * spec.n_samples - 1 > MAX_SEED:
            raise SpecError(f"replicates = {spec.replicates} with n_samples = {spec.n_samples} needs seeds up to "
                            f"seed + replicates * n_samples - 1, beyond {MAX_SEED}; lower seed or replicates")
    except SpecError as e:
        raise SpecError(f"{where_file}{e}") from None
    return spec


def with_overrides(spec: Spec, *, device: str | None = None, batch_size: int | None = None,
                   threads: int | None = None) -> Spec:
    """A copy of ``spec`` run on another device, batch size or thread count (command-line overrides), validated."""
    out = dataclasses.replace(spec)
    try:
        if device is not None:
            out.device = _parse_device(device)
        if batch_size is not None:
            out.batch_size = _int(batch_size, "batch_size", low=1)
        if threads is not None:
            out.threads = _int(threads, "--threads", low=1, high=1024)
    except SpecError as e:
        raise SpecError(f"command-line override: {e}") from None
    return out


def builtin_specs() -> list[str]:
    """Names of the specs shipped with the package (``sampler_bench/specs/*.toml``)."""
    root = resources.files("sampler_bench") / "specs"
    try:
        return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".toml"))
    except (FileNotFoundError, NotADirectoryError):
        return []


def read_spec_text(p: Path) -> str:
    """The text of spec file ``p``; SpecError for a directory, a FIFO/device, an unreadable, binary or
    non-UTF-8 file (a UTF-8 byte-order mark is accepted)."""
    import os
    import stat

    try:
        mode = os.stat(p).st_mode
    except OSError as e:
        raise SpecError(f"spec file {str(p)!r} cannot be read: {e.strerror}") from None
    if stat.S_ISDIR(mode):
        raise SpecError(f"spec {str(p)!r} is a directory; give a sweep spec file (.toml) or a built-in spec name")
    if not stat.S_ISREG(mode):
        raise SpecError(f"spec {str(p)!r} is not a regular file (a pipe or device?); give a sweep spec file (.toml)")
    try:
        with open(p, "rb") as f:
            data = f.read(MAX_SPEC_BYTES + 1)
    except OSError as e:
        raise SpecError(f"spec file {str(p)!r} cannot be read: {e.strerror}") from None
    if len(data) > MAX_SPEC_BYTES:
        raise SpecError(f"spec file {str(p)!r} is larger than {MAX_SPEC_BYTES // 1024} KiB; a sweep spec is a small TOML file")
    if b"\0" in data:
        raise SpecError(f"spec file {str(p)!r} is a binary file, not a TOML sweep spec")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise SpecError(f"spec file {str(p)!r} is not UTF-8 text (byte {e.start}); save it as UTF-8") from None


def load_spec(ref: str | Path) -> Spec:
    """Load a spec from a file path, or a built-in spec by name (e.g. ``"quickstart"``)."""
    p = Path(ref).expanduser()
    if p.exists() or p.is_symlink():
        return parse_spec(read_spec_text(p), path=p)
    name = str(ref)
    if name in builtin_specs():
        text = (resources.files("sampler_bench") / "specs" / f"{name}.toml").read_text()
        return parse_spec(text, name=name)
    if p.suffix == ".toml" or "/" in name:
        raise SpecError(f"spec file {name!r} does not exist")
    raise SpecError(
        f"{name!r} is neither a spec file nor a built-in spec{closest(name, builtin_specs())}; "
        f"built-in specs: {', '.join(builtin_specs()) or 'none'}"
    )
