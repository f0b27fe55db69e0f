"""Every process by name: rebuild one from the ``config()`` a checkpoint or a train spec stores, and
the kind (:class:`~sampler_bench.processes.kind.ProcessKind`) a model declares."""

from __future__ import annotations

from typing import Any

from ..options import closest
from .base import Process
from .bdm import BDM, BDM_KIND
from .cld import CLD, CLD_KIND
from .gaussian import GAUSSIAN, GaussianProcess
from .kind import ProcessKind
from .pfgmpp import PFGMPP, PFGMPPProcess
from .yukawa import YUKAWA_KIND, YukawaProcess

#: Every kind of process, by the name ``model.process`` gives.
KINDS: dict[str, ProcessKind] = {k.name: k for k in (GAUSSIAN, PFGMPP, CLD_KIND, BDM_KIND, YUKAWA_KIND)}


def process_kind(declared: Any) -> ProcessKind | None:
    """The kind of process ``declared`` is or follows, or None when it declares none.

    ``declared`` is a kind name ('gaussian', 'pfgmpp', 'cld'), a process object (anything with
    ``traits``), a :class:`ProcessKind`, or a model: a model's ``process_def`` (its process object)
    wins over its ``process`` name. A plain callable denoiser without a ``process`` attribute declares
    none (it is sampled as the probability-flow ODE of whatever it denoises).
    """
    if declared is None or isinstance(declared, ProcessKind):
        return declared
    if isinstance(declared, str):
        if declared not in KINDS:
            raise ValueError(f"unknown process kind {declared!r}{closest(declared, list(KINDS))}; "
                             f"a model's `process` is one of: {', '.join(KINDS)}")
        return KINDS[declared]
    traits = getattr(declared, "traits", None)
    if isinstance(traits, ProcessKind):
        return traits
    definition = getattr(declared, "process_def", None)
    if definition is not None and isinstance(getattr(definition, "traits", None), ProcessKind):
        return definition.traits
    name = getattr(declared, "process", None)
    if name is None or callable(name) and not isinstance(name, str):
        return None
    return process_kind(name)


def process_from_config(config: dict[str, Any]) -> Process:
    """Rebuild a process from its ``config()`` (as stored in a checkpoint's JSON or a train spec).

    ``{"name": "edm" | "ve" | "vp" | "pfgmpp" | "cld", ...parameters}``; PFGM++ takes ``D`` (a number >= 1,
    or ``"inf"`` for the Gaussian limit). ``"cld"`` is critically-damped Langevin diffusion
    (:class:`sampler_bench.processes.cld.CLD`, kind ``'cld'``): its models predict eps of the state
    u = (x, v) rather than a denoiser, so it is not a :class:`Process` subclass, but it has the same
    ``kind``, ``sigma_min``/``sigma_max`` (t_eps/T), ``prior`` and ``config()``. ``"bdm"`` is blurring diffusion
    (:class:`sampler_bench.processes.bdm.BDM`, kind ``'bdm'``), likewise an eps model in time t. ``"yukawa"`` is GenPhys's screened-Poisson
    process (:class:`sampler_bench.processes.yukawa.YukawaProcess`, kind ``'yukawa'``): parameters ``m`` (> 0),
    ``z_min``, ``z_max``, ``P_mean``, ``P_std``; its models also return a birth/death rate.
    """
    if not isinstance(config, dict) or "name" not in config:
        raise ValueError(f"a process config must be a table with a 'name' (one of edm, ve, vp, pfgmpp, cld, bdm, yukawa), got {config!r}")
    params = {k: v for k, v in config.items() if k not in ("name", "kind")}
    name = config["name"]
    if name == "cld":
        return CLD.from_config(config)
    if name == "bdm":
        return BDM.from_config(config)
    if name in GaussianProcess.VARIANTS:
        cls, params = GaussianProcess, {"variant": name, **params}
    elif name == "pfgmpp":
        cls = PFGMPPProcess
    elif name == "yukawa":
        cls = YukawaProcess
    else:
        known = list(GaussianProcess.VARIANTS) + ["pfgmpp", "cld", "bdm", "yukawa"]
        raise ValueError(f"unknown process {name!r}{closest(str(name), known)}; available: {', '.join(known)}")
    try:
        return cls(**params)
    except TypeError as e:
        raise ValueError(f"process {name!r}: {e}") from None
