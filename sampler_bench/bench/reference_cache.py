"""Reference endpoints of the probability-flow ODE, computed once per sweep setting and cached on disk.

The endpoint error of a deterministic sampler compares each of its samples with the exact ODE
solution from the *same* initial noise (reference/solvers.md §9). That solution comes from the
adaptive float64 DOP853 solver registered as ``'reference'``; it is the slowest part of a sweep on
analytic models, so it is computed once per (model fingerprint, seed, sample-index range, sigma
range, ending, reference tolerances) and kept next to the results store as safetensors files,
which every cell of this sweep (and of later sweeps into the same directory) reuses.

Samples are cached in fixed chunks of sample indices ``[kC, min((k+1)C, n))``: a chunk's content
depends only on the seeds it covers, so the cache is independent of the batch size, and a
distributed runner can ask for any index range.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from ..solvers.driver import CountingDenoiser, run_solver
from ..solvers.registry import available as solver_names
from ..solvers.registry import info as solver_info

#: Samples per cached chunk (one adaptive DOP853 solve per chunk; its error control is per chunk).
DEFAULT_CHUNK = 1024


def reference_solver(process: str) -> str:
    """The adaptive yardstick registered for models of ``process``: ``'reference'`` (the sigma ODE of
    Gaussian and PFGM++ kernels), ``'cld_reference'`` (CLD's ODE in t on the state u = (x, v))."""
    names = [n for n in solver_names() if solver_info(n).adaptive and process in solver_info(n).processes]
    if not names:
        raise ValueError(f"no adaptive reference integrator is registered for {process!r} processes, "
                         "so endpoint errors cannot be measured on this model")
    return "reference" if "reference" in names else names[0]


class ReferenceCache:
    """Reference endpoints on disk under ``directory`` (in memory only when ``directory`` is None).

    ``computed`` counts the chunks this object had to integrate (tests use it to prove reuse).
    """

    def __init__(self, directory: str | os.PathLike | None, chunk: int = DEFAULT_CHUNK):
        self.directory = Path(directory) if directory is not None else None
        self.chunk = int(chunk)
        self.computed = 0
        self._memory: dict[str, torch.Tensor] = {}

    @staticmethod
    def key(model_hash: str, seed: int, sigma_min: float, sigma_max: float, ends_at_zero: bool,
            device_type: str = "cpu", options: Mapping[str, Any] | None = None, solver: str = "reference") -> str:
        """Hash of everything the reference endpoints depend on (besides the index range); the device
        type matters because per-sample generators on CUDA and on the CPU draw different noise.
        ``options``: the reference solver's options (tolerances), validated with defaults filled in;
        ``solver``: which yardstick (:func:`reference_solver` of the model's process)."""
        ref_options = solver_info(solver).validate(dict(options or {}))
        payload = {
            "model_hash": model_hash, "seed": int(seed), "sigma_min": float(sigma_min), "sigma_max": float(sigma_max),
            "ends_at_zero": bool(ends_at_zero), "reference_options": ref_options, "device_type": device_type,
            "format": 1,
        }
        if solver != "reference":  # named only when not the default, so existing cache keys stay valid
            payload["solver"] = solver
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    def endpoints(
        self,
        model: Callable,
        key: str,
        start: int,
        stop: int,
        limit: int,
        initial: Callable[[int, int], torch.Tensor],
        sigma_min: float,
        sigma_max: float,
        ends_at_zero: bool,
        on_compute: Callable[[int, int], Any] | None = None,
        options: Mapping[str, Any] | None = None,
        solver: str = "reference",
    ) -> torch.Tensor:
        """Float64 endpoints of samples ``[start, stop)`` (all below ``limit``, the sweep's sample count).

        ``initial(a, b)`` returns the float64 starting states of samples ``[a, b)`` at ``sigma_max``,
        drawn exactly as the cells draw them. ``on_compute(a, b)`` is called before a chunk is integrated.
        ``options`` are the reference solver's and ``solver`` its name (both as ``key`` was made with).
        """
        if not 0 <= start < stop <= limit:
            raise ValueError(f"bad sample range [{start}, {stop}) for {limit} samples")
        parts = []
        first, last = start // self.chunk, (stop - 1) // self.chunk
        for k in range(first, last + 1):
            a, b = k * self.chunk, min((k + 1) * self.chunk, limit)
            block = self._chunk(model, key, a, b, initial, sigma_min, sigma_max, ends_at_zero, on_compute, options,
                                solver)
            lo, hi = max(start, a) - a, min(stop, b) - a
            parts.append(block[lo:hi])
        return torch.cat(parts)

    def _path(self, key: str, a: int, b: int) -> Path | None:
        return self.directory / f"reference-{key}-{a}-{b}.safetensors" if self.directory is not None else None

    def _chunk(self, model, key, a, b, initial, sigma_min, sigma_max, ends_at_zero, on_compute, options,
               solver="reference") -> torch.Tensor:
        name = f"{key}-{a}-{b}"
        if name in self._memory:
            return self._memory[name]
        path = self._path(key, a, b)
        if path is not None and path.exists():
            from safetensors.torch import load_file

            try:
                block = load_file(str(path))["endpoints"]
                self._memory[name] = block
                return block
            except Exception:  # a truncated file from a killed run: recompute it below
                pass
        if on_compute is not None:
            on_compute(a, b)
        x = initial(a, b).to(torch.float64)
        levels = [sigma_max, sigma_min] + ([0.0] if ends_at_zero else [])
        sigmas = torch.tensor(levels, dtype=torch.float64)
        block = run_solver(solver, CountingDenoiser(model), x, sigmas, options=dict(options or {}))
        block = block.detach().to("cpu", torch.float64)
        self.computed += 1
        self._memory[name] = block
        if path is not None:
            self._write(path, block, key)
        return block

    @staticmethod
    def _write(path: Path, block: torch.Tensor, key: str) -> None:
        from safetensors.torch import save_file

        path.parent.mkdir(parents=True, exist_ok=True)
        # Write then rename: a reader (another sweep on the same directory) never sees half a file.
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        os.close(fd)
        try:
            save_file({"endpoints": block.contiguous()}, tmp, metadata={"key": key})
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
