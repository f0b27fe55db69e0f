"""What samplers may assume about a process: its capabilities, state layout, time variable, schedule
defaults and yardstick, declared once by each process module (:data:`~.gaussian.GAUSSIAN`,
:data:`~.pfgmpp.PFGMPP`, :data:`~.cld.process.CLD_KIND`, :data:`~.bdm.process.BDM_KIND`,
:data:`~.yukawa.process.YUKAWA_KIND`).

A solver declares the capabilities it needs (``register(..., needs=...)``); it applies to a process
exactly when the process offers all of them. Models name their kind in ``model.process``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import torch

#: dx/dsigma = (x - D(x, sigma))/sigma with a denoiser D (every isotropic kernel indexed by sigma:
#: Gaussian, PFGM++ of any D; Karras et al. 2022 eq. 1, Xu et al. 2023 eq. 4).
PROBABILITY_FLOW_ODE = "the probability-flow ODE in sigma of a denoiser"
#: A Gaussian kernel, so score = (D - x)/sigma^2 and a reverse SDE exist (Song et al. 2021; Karras et al.
#: 2022 eq. 6). Finite-D PFGM++ kernels are heavy-tailed and have none.
GAUSSIAN_REVERSE_SDE = "a Gaussian reverse SDE in sigma"
#: The phase space u = (x, v) of critically-damped Langevin diffusion, an eps model in time t
#: (Dockhorn et al., arXiv 2112.07068; Zhang et al., arXiv 2206.05564).
CLD_PHASE_SPACE = "CLD's phase space u = (x, v) with an eps model in t"
#: Blurring diffusion: an image state whose DCT coefficients each follow their own linear SDE in t, with
#: an eps model (Hoogeboom & Salimans, arXiv 2209.05557; gDDIM, Zhang et al., arXiv 2206.05564).
BDM_FREQUENCY_SPACE = "blurring diffusion's per-frequency linear SDE in t with an eps model"
#: The screened-Poisson (Yukawa) flow in z: dx/dz = (x - D(x, z))/z *plus* the birth/death rate kappa(x, z)
#: that reweights particles (Liu et al., GenPhys, arXiv 2304.02637; docs/processes.md, "Yukawa"). Its
#: plain ODE without the weights samples the wrong law, so it does not offer PROBABILITY_FLOW_ODE.
YUKAWA_WEIGHTED_FLOW = "the Yukawa flow in z with its birth/death weights (a denoiser and a rate)"


@dataclass(frozen=True)
class ProcessKind:
    """One kind of process as samplers see it (``model.process`` names it)."""

    #: the name models and stored cells use: 'gaussian', 'pfgmpp', 'cld', 'bdm', 'yukawa'
    name: str
    #: what the process offers solvers (subsets of the capability constants above)
    capabilities: frozenset[str]
    #: what a sampler's grid holds: 'sigma' (noise level) or 't' (time)
    time_variable: str
    #: the layout of the sampler's state, in words (for messages and docs)
    state: str
    #: the adaptive solver that integrates this kind's ODE to tolerance (endpoint errors)
    reference_solver: str
    #: schedule parameters the kind needs unless a spec sets them, by schedule name
    schedule_defaults: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    #: where the data sits in the state: None when the state is the data, else the index along dim 1
    data_channel: int | None = None
    #: the prior at any noise level sigma is N(0, sigma^2 I): a sweep may start below the model's
    #: sigma_max, and a model needs no prior of its own
    gaussian_prior: bool = False
    #: why a sampler it refuses would be wrong on it, beyond the missing capability (one sentence, or ""):
    #: added to every refusal, so a sweep's skipped cells and its report say it (e.g. Yukawa's weights)
    refusal: str = ""

    def offers(self, needs) -> bool:
        """True when every capability in ``needs`` is offered."""
        return frozenset(needs) <= self.capabilities

    def data_from_state(self, states: torch.Tensor) -> torch.Tensor:
        """The generated data in a sampler's output (CLD: x = u[:, 0]; otherwise the output itself)."""
        return states if self.data_channel is None else states[:, self.data_channel]
