"""Every process by name: rebuild one from the ``config()`` a checkpoint or a train spec stores."""

from __future__ import annotations

from typing import Any

from ..options import closest
from .base import Process
from .cld import CLD
from .gaussian import GaussianProcess
from .pfgmpp import PFGMPPProcess


def process_from_config(config: dict[str, Any]) -> Process:
    """Rebuild a process from its ``config()`` (as stored in a checkpoint's JSON or a train spec).

    ``{"name": "edm" | "ve" | "vp" | "pfgmpp" | "cld", ...parameters}``; PFGM++ takes ``D`` (a number >= 1,
    or ``"inf"`` for the Gaussian limit). ``"cld"`` is critically-damped Langevin diffusion
    (:class:`sampler_bench.processes.cld.CLD`, kind ``'cld'``): its models predict eps of the state
    u = (x, v) rather than a denoiser, so it is not a :class:`Process` subclass, but it has the same
    ``kind``, ``sigma_min``/``sigma_max`` (t_eps/T), ``prior`` and ``config()``.
    """
    if not isinstance(config, dict) or "name" not in config:
        raise ValueError(f"a process config must be a table with a 'name' (one of edm, ve, vp, pfgmpp), got {config!r}")
    params = {k: v for k, v in config.items() if k not in ("name", "kind")}
    name = config["name"]
    if name == "cld":
        return CLD.from_config(config)
    if name in GaussianProcess.VARIANTS:
        cls, params = GaussianProcess, {"variant": name, **params}
    elif name == "pfgmpp":
        cls = PFGMPPProcess
    else:
        known = list(GaussianProcess.VARIANTS) + ["pfgmpp", "cld"]
        raise ValueError(f"unknown process {name!r}{closest(str(name), known)}; available: {', '.join(known)}")
    try:
        return cls(**params)
    except TypeError as e:
        raise ValueError(f"process {name!r}: {e}") from None
