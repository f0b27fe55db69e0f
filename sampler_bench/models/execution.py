"""How a denoiser is executed on an accelerator: device, torch.compile, CUDA graphs, autocast.

:class:`ExecutedModel` wraps any model of the :class:`~sampler_bench.models.base.Model` contract and
changes only *how* its network runs, never what the solvers see:

* **device**: the network's weights are moved there (in place: the weights are shared with the
  wrapped model); inputs are moved there and the output comes back on the state's device;
* **autocast** (``"bf16"`` / ``"fp16"``): mixed precision around the *network only*. For a
  preconditioned network (EDM/VE/VP, :mod:`.precond`) the input scaling and the ``c_skip x +
  c_out F`` mixing stay in float64, as in EDM's ``training/networks.py``; the output is returned in
  the dtype of the solver's state, so the solver arithmetic stays in float64/float32 as declared;
* **compile**: ``torch.compile`` of the network (mode and backend recorded);
* **cuda_graphs**: the network is captured once per input shape into a CUDA graph and replayed
  (Nvidia's way to remove launch overhead at small batch); a sweep's batches all have the batch
  size except possibly the last, so a cell needs at most two graphs.

``provenance()`` is the dict of options in effect; the sweep stores it with every metric value.
Analytic models (exact float64 denoisers) have no network: autocast is refused for them, since it
would only round an exact answer.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from dataclasses import asdict, dataclass
from typing import Any, Callable

import torch
from torch import nn

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
#: Input shapes captured as CUDA graphs per wrapper (a cell uses one or two; more is a misuse).
MAX_GRAPHS = 8


@dataclass(frozen=True)
class ExecutionOptions:
    """Execution options of a denoiser (validated by :meth:`check`); none of them changes the model."""

    device: str = "cpu"
    compile: bool = False
    compile_mode: str = "default"
    compile_backend: str = "inductor"
    cuda_graphs: bool = False
    autocast: str | None = None

    def check(self) -> "ExecutionOptions":
        """Raise one ValueError naming the option and what is allowed; return self when all is well."""
        try:
            dev = torch.device(self.device)
        except (RuntimeError, TypeError):
            raise ValueError(f"execution: device {self.device!r} is not a torch device; use e.g. 'cpu', 'cuda', 'cuda:1'") from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"execution: device {self.device!r} was asked for but CUDA is not available here; use 'cpu'")
        if self.autocast is not None and self.autocast not in AUTOCAST_DTYPES:
            raise ValueError(f"execution: autocast {self.autocast!r} is not allowed; use one of "
                             f"{', '.join(repr(k) for k in AUTOCAST_DTYPES)} or none")
        if not isinstance(self.compile, bool) or not isinstance(self.cuda_graphs, bool):
            raise ValueError("execution: compile and cuda_graphs must be true or false")
        if self.compile_mode not in COMPILE_MODES:
            raise ValueError(f"execution: compile_mode {self.compile_mode!r} is not allowed; use one of {', '.join(COMPILE_MODES)}")
        if self.cuda_graphs and dev.type != "cuda":
            raise ValueError(f"execution: cuda_graphs needs a CUDA device, but the device is {self.device!r}; "
                             "set cuda_graphs = false or device = 'cuda'")
        if self.cuda_graphs and self.compile and self.compile_mode == "reduce-overhead":
            raise ValueError("execution: compile_mode 'reduce-overhead' already captures CUDA graphs; "
                             "set cuda_graphs = false or use compile_mode 'default'")
        return self


class _GraphedCall:
    """Replay ``fn(*tensors)`` from CUDA graphs captured once per input (shape, dtype) signature.

    Inputs are copied into static buffers, the graph replays the captured kernels, and the static
    output is cloned (the next replay overwrites it). Inference only: run under ``torch.no_grad``.
    """

    def __init__(self, fn: Callable[..., torch.Tensor]):
        self.fn = fn
        self.graphs: OrderedDict[tuple, tuple[Any, list[torch.Tensor], torch.Tensor]] = OrderedDict()

    def __call__(self, *args: torch.Tensor) -> torch.Tensor:
        key = tuple((tuple(a.shape), a.dtype, a.device) for a in args)
        if key not in self.graphs:
            if len(self.graphs) >= MAX_GRAPHS:
                self.graphs.popitem(last=False)
            self.graphs[key] = self._capture(args)
        graph, static_in, static_out = self.graphs[key]
        for buf, a in zip(static_in, args):
            buf.copy_(a)
        graph.replay()
        return static_out.clone()

    def _capture(self, args):
        static_in = [a.detach().clone() for a in args]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up outside the graph (cuDNN autotuning, lazy init)
            for _ in range(3):
                self.fn(*static_in)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = self.fn(*static_in)
        return graph, static_in, static_out


class _NetworkRunner(nn.Module):
    """The network under autocast / compile / CUDA graphs; its parameters are the network's own."""

    def __init__(self, net: Callable, options: ExecutionOptions):
        super().__init__()
        self.net = net
        self.options = options
        dev = torch.device(options.device)
        self._device_type = dev.type
        fn = net
        if options.compile:
            fn = torch.compile(net, mode=None if options.compile_mode == "default" else options.compile_mode,
                               backend=options.compile_backend)
        self._call = fn
        self._graphed = _GraphedCall(self._autocast_call) if options.cuda_graphs else None

    def _autocast_call(self, *args):
        if self.options.autocast is None:
            return self._call(*args)
        # cache_enabled=False: autocast's weight-cast cache must not outlive a CUDA graph capture
        with torch.autocast(self._device_type, dtype=AUTOCAST_DTYPES[self.options.autocast],
                            cache_enabled=not self.options.cuda_graphs):
            return self._call(*args)

    def forward(self, *args):
        if self._graphed is not None:
            return self._graphed(*args)
        return self._autocast_call(*args)


def _network_of(model: Any) -> tuple[Any, str] | None:
    """``(holder, attribute)`` of the raw network inside a preconditioned model, or None."""
    for holder in (getattr(model, "denoiser", None), model):
        if isinstance(holder, nn.Module) and isinstance(getattr(holder, "net", None), nn.Module):
            return holder, "net"
    return None


def _with_network(model: Any, runner: nn.Module) -> Any:
    """A shallow copy of ``model`` whose precond calls ``runner`` instead of its network."""
    precond = model.denoiser if isinstance(getattr(model, "denoiser", None), nn.Module) else model
    new_precond = copy.copy(precond)
    new_precond._modules = dict(precond._modules)  # copy.copy shares the dict: do not touch the original's
    new_precond.net = runner
    if precond is model:
        return new_precond
    new_model = copy.copy(model)
    new_model.denoiser = new_precond
    return new_model


class ExecutedModel:
    """A model whose network runs with :class:`ExecutionOptions`; everything else is the wrapped model's.

    ``ExecutedModel(model, device="cuda", autocast="bf16", cuda_graphs=True)``. Calls return the
    denoiser's output on the input's device, in the input's dtype. Attributes (``prior``,
    ``sigma_min``, ``fingerprint`` ...) are the wrapped model's.
    """

    def __init__(self, model: Any, options: ExecutionOptions | None = None, **kwargs):
        if options is not None and kwargs:
            raise TypeError("give either options= or keyword options, not both")
        self.options = (options or ExecutionOptions(**kwargs)).check()
        self.model = model
        self.device = torch.device(self.options.device)
        if hasattr(model, "to") and callable(model.to):
            model = model.to(self.device) or model
        found = _network_of(model)
        wants_runner = self.options.autocast or self.options.compile or self.options.cuda_graphs
        if found is not None:
            holder, attr = found
            self.scope = "network"
            self.network_dtype = next((p.dtype for p in getattr(holder, attr).parameters()), None)
            self._inner = _with_network(model, _NetworkRunner(getattr(holder, attr), self.options)) if wants_runner else model
        else:
            from .base import AnalyticModel

            if isinstance(model, AnalyticModel) and self.options.autocast:
                raise ValueError(f"execution: autocast {self.options.autocast!r} does not apply to the analytic model "
                                 f"{model.name!r}: its denoiser is exact float64 arithmetic with no network; remove autocast")
            # An outside denoiser without a visible network: the options wrap the whole call.
            self.scope = "denoiser"
            self.network_dtype = None
            self._inner = _NetworkRunner(model, self.options) if wants_runner else model

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        s = torch.as_tensor(sigma)
        with torch.no_grad():
            out = self._inner(x.to(self.device), s.to(self.device))
        return out.to(device=x.device, dtype=x.dtype)

    def to(self, device) -> "ExecutedModel":
        """The device is an execution option: the same device returns self, another one is refused."""
        if torch.device(device) != self.device:
            raise ValueError(f"execution: this model runs on {self.device}; build ExecutedModel(model, device={str(device)!r}) "
                             "for another device")
        return self

    def __getattr__(self, name: str) -> Any:
        if name in ("model", "__setstate__", "__getstate__"):  # no recursion while unpickling / half-built
            raise AttributeError(name)
        return getattr(self.model, name)

    def provenance(self) -> dict[str, Any]:
        """The execution options in effect (stored with every metric value of a sweep cell)."""
        opts = asdict(self.options)
        out: dict[str, Any] = {
            "device": str(self.device), "compile": opts["compile"], "cuda_graphs": opts["cuda_graphs"],
            "autocast": opts["autocast"], "scope": self.scope,
            "network_dtype": str(self.network_dtype).replace("torch.", "") if self.network_dtype is not None else None,
        }
        if self.options.compile:
            out.update(compile_mode=opts["compile_mode"], compile_backend=opts["compile_backend"])
        if self.device.type == "cuda":
            out.update(device_name=torch.cuda.get_device_name(self.device),
                       tf32_matmul=torch.backends.cuda.matmul.allow_tf32, tf32_cudnn=torch.backends.cudnn.allow_tf32)
        return out

    def __repr__(self) -> str:
        return f"ExecutedModel({getattr(self.model, 'name', type(self.model).__name__)!r}, {self.provenance()})"


def execution_provenance(model: Any, device: str | torch.device) -> dict[str, Any]:
    """How ``model`` runs: an :class:`ExecutedModel`'s own provenance, else plain eager on ``device``."""
    if isinstance(model, ExecutedModel):
        return model.provenance()
    return {"device": str(torch.device(device)), "compile": False, "cuda_graphs": False, "autocast": None}
