"""The raw networks F(c_in x, c_noise) that preconditioning turns into a denoiser.

* :class:`MLP` -- residual MLP for vector data (2-D toys, Gaussian mixtures, flattened digits);
* :class:`UNet` -- a small UNet for images (digits 8x8, LFW 24x24, CIFAR-10 32x32);

both conditioned on the noise level through random Fourier features of c_noise (Tancik et al.,
arXiv 2006.10739; EDM's ``FourierEmbedding``, Karras et al., arXiv 2206.00364) followed by a small
MLP, injected as a per-channel scale and shift (FiLM). Output layers start at zero, so an untrained
network under EDM preconditioning is the denoiser c_skip x (EDM's zero-init ``Conv2d``/``Linear``).

A network is built from a JSON-able config (``build_network``), which is what a checkpoint stores.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


class FourierEmbedding(nn.Module):
    """[cos(2 pi f c), sin(2 pi f c)] for fixed random frequencies f ~ N(0, scale^2)."""

    def __init__(self, channels: int, scale: float = 16.0, seed: int = 0):
        super().__init__()
        if channels % 2:
            raise ValueError(f"the Fourier embedding needs an even number of channels, got {channels}")
        g = torch.Generator().manual_seed(seed)  # frequencies are part of the weights; fixed for reproducibility
        # on the CPU even while a config is checked on the "meta" device (the generator is a CPU one)
        self.register_buffer("freqs", torch.randn(channels // 2, generator=g, device="cpu") * scale)

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        arg = (2 * math.pi) * c.to(self.freqs.dtype)[:, None] * self.freqs[None, :]
        return torch.cat([arg.cos(), arg.sin()], dim=1)


class NoiseEmbedding(nn.Module):
    """c_noise [B] -> an embedding vector [B, emb] (Fourier features + 2-layer MLP)."""

    def __init__(self, fourier_channels: int, emb_channels: int, scale: float = 16.0):
        super().__init__()
        self.fourier = FourierEmbedding(fourier_channels, scale)
        self.mlp = nn.Sequential(nn.Linear(fourier_channels, emb_channels), nn.SiLU(), nn.Linear(emb_channels, emb_channels), nn.SiLU())

    def forward(self, c_noise: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.fourier(c_noise))


def _zero(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class _MLPBlock(nn.Module):
    def __init__(self, hidden: int, emb: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.film = nn.Linear(emb, 2 * hidden)
        self.fc1 = nn.Linear(hidden, 2 * hidden)
        self.fc2 = _zero(nn.Linear(2 * hidden, hidden))
        self.dropout = nn.Dropout(dropout)

    def forward(self, h, emb):
        scale, shift = self.film(emb).chunk(2, dim=1)
        a = self.norm(h) * (1 + scale) + shift
        return h + self.fc2(self.dropout(F.silu(self.fc1(a))))


class MLP(nn.Module):
    """Residual MLP on flattened vectors with FiLM noise conditioning."""

    def __init__(self, shape: Sequence[int], hidden: int = 256, depth: int = 4, emb_channels: int = 128,
                 fourier_channels: int = 64, fourier_scale: float = 16.0, dropout: float = 0.0):
        super().__init__()
        self.shape = tuple(int(s) for s in shape)
        dim = math.prod(self.shape)
        self.emb = NoiseEmbedding(fourier_channels, emb_channels, fourier_scale)
        self.inp = nn.Linear(dim, hidden)
        self.blocks = nn.ModuleList([_MLPBlock(hidden, emb_channels, dropout) for _ in range(depth)])
        self.out_norm = nn.LayerNorm(hidden)
        self.out = _zero(nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        emb = self.emb(c_noise)
        h = self.inp(x.reshape(x.shape[0], -1))
        for block in self.blocks:
            h = block(h, emb)
        return self.out(F.silu(self.out_norm(h))).reshape(x.shape)


def _groups(channels: int) -> int:
    for g in (32, 16, 8, 4, 2, 1):
        if channels % g == 0 and channels // g >= 2:
            return g
    return 1


class _ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, emb: int, dropout: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(cin), cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.film = nn.Linear(emb, 2 * cout)
        self.norm2 = nn.GroupNorm(_groups(cout), cout)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = _zero(nn.Conv2d(cout, cout, 3, padding=1))
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x, emb):
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.film(emb)[:, :, None, None].chunk(2, dim=1)
        h = F.silu(self.norm2(h) * (1 + scale) + shift)
        return self.skip(x) + self.conv2(self.dropout(h))


class _Attention(nn.Module):
    """Single-head self-attention over pixels (for the lowest resolutions only)."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.GroupNorm(_groups(channels), channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = _zero(nn.Conv2d(channels, channels, 1))

    def forward(self, x):
        B, C, H, W = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(B, 3, C, H * W).unbind(1)
        h = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return x + self.proj(h.transpose(1, 2).reshape(B, C, H, W))


class UNet(nn.Module):
    """A small DDPM-style UNet (Ho et al., arXiv 2006.11239) for [B, C, H, W] images.

    ``channel_mult`` sets the channels at each resolution (halved between levels), ``num_blocks`` the
    residual blocks per level, ``attn_resolutions`` the spatial sizes that get self-attention.
    Spatial sizes must be divisible by 2^(levels - 1).
    """

    def __init__(self, shape: Sequence[int], channels: int = 32, channel_mult: Sequence[int] = (1, 2, 2),
                 num_blocks: int = 1, attn_resolutions: Sequence[int] = (), emb_channels: int = 128,
                 fourier_channels: int = 64, fourier_scale: float = 16.0, dropout: float = 0.0):
        super().__init__()
        self.shape = tuple(int(s) for s in shape)
        if len(self.shape) != 3:
            raise ValueError(f"the UNet needs image data of shape [C, H, W], got {list(self.shape)}; use the MLP for vectors")
        cin, H, W = self.shape
        levels = len(channel_mult)
        if H % 2 ** (levels - 1) or W % 2 ** (levels - 1):
            raise ValueError(f"image size {H}x{W} is not divisible by 2^{levels - 1} for channel_mult {list(channel_mult)}; "
                             "use fewer levels or crop the images")
        self.emb = NoiseEmbedding(fourier_channels, emb_channels, fourier_scale)
        self.inp = nn.Conv2d(cin, channels, 3, padding=1)
        self.down = nn.ModuleList()
        skips = [channels]
        c, res = channels, H
        for lvl, mult in enumerate(channel_mult):
            for _ in range(num_blocks):
                block = nn.ModuleList([_ResBlock(c, channels * mult, emb_channels, dropout)])
                c = channels * mult
                if res in attn_resolutions:
                    block.append(_Attention(c))
                self.down.append(block)
                skips.append(c)
            if lvl < levels - 1:
                self.down.append(nn.ModuleList([nn.Conv2d(c, c, 3, stride=2, padding=1)]))
                skips.append(c)
                res //= 2
        self.mid = nn.ModuleList([_ResBlock(c, c, emb_channels, dropout), _Attention(c) if res in attn_resolutions else nn.Identity(),
                                  _ResBlock(c, c, emb_channels, dropout)])
        self.up = nn.ModuleList()
        for lvl, mult in reversed(list(enumerate(channel_mult))):
            for _ in range(num_blocks + 1):
                block = nn.ModuleList([_ResBlock(c + skips.pop(), channels * mult, emb_channels, dropout)])
                c = channels * mult
                if res in attn_resolutions:
                    block.append(_Attention(c))
                self.up.append(block)
            if lvl > 0:
                self.up.append(nn.ModuleList([nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c, c, 3, padding=1)]))
                res *= 2
        self.out_norm = nn.GroupNorm(_groups(c), c)
        self.out = _zero(nn.Conv2d(c, cin, 3, padding=1))

    @staticmethod
    def _run_block(block, h, emb):
        for layer in block:
            h = layer(h, emb) if isinstance(layer, _ResBlock) else layer(h)
        return h

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        emb = self.emb(c_noise)
        h = self.inp(x)
        hs = [h]
        for block in self.down:
            h = self._run_block(block, h, emb)
            hs.append(h)
        h = self._run_block(self.mid, h, emb)
        for block in self.up:
            if isinstance(block[0], _ResBlock):
                h = torch.cat([h, hs.pop()], dim=1)
            h = self._run_block(block, h, emb)
        return self.out(F.silu(self.out_norm(h)))


NETWORKS = {"mlp": MLP, "unet": UNet}


def build_network(config: dict[str, Any], shape: Sequence[int]) -> nn.Module:
    """A network from ``{"type": "mlp" | "unet", ...its keyword arguments}`` for data of ``shape``."""
    from ..options import closest

    if not isinstance(config, dict) or "type" not in config:
        raise ValueError(f"a network config needs a 'type' (one of {', '.join(NETWORKS)}), got {config!r}")
    kind = config["type"]
    if kind not in NETWORKS:
        raise ValueError(f"unknown network type {kind!r}{closest(str(kind), list(NETWORKS))}; available: {', '.join(NETWORKS)}")
    params = {k: (tuple(v) if isinstance(v, list) else v) for k, v in config.items() if k != "type"}
    try:
        return NETWORKS[kind](shape, **params)
    except TypeError as e:
        raise ValueError(f"network {kind!r}: {e}") from None


# ---------------------------------------------------------------------------------------------
# Critically-damped Langevin diffusion: an eps network on the phase-space state u = (x, v)
# ---------------------------------------------------------------------------------------------


def cld_network_shape(data_shape: Sequence[int]) -> tuple[int, ...]:
    """The shape the raw network of a CLD model sees: [2C, H, W] for images (the C position channels,
    then the C velocity channels, as CLD-SGM and gDDIM concatenate them), [2, *shape] for vectors."""
    shape = tuple(int(s) for s in data_shape)
    return (2 * shape[0], *shape[1:]) if len(shape) == 3 else (2, *shape)


class CLDEpsNetwork(nn.Module):
    """eps_theta(u, t) of a CLD model (Dockhorn et al., arXiv 2112.07068; gDDIM, arXiv 2206.05564).

    Maps the state ``u`` [B, 2, *data_shape] and times ``t`` [B] to the R_t-parameterised noise
    prediction of the same shape (score = -R_t^{-T} eps, the target of ``CLD.hsm_loss``). It is EDM's
    preconditioning (Karras et al., arXiv 2206.00364, §B.6) carried over to the CLD kernel, per (x, v)
    pair of each data coordinate:

    * skip: the exact eps of Gaussian data N(0, sigma_data^2 I), R_t^T C_t^{-1} u with
      C_t = sigma_data^2 a a^T + Sigma_t and a = Psi(t, 0)[:, 0] (EDM's c_skip is the same optimal linear
      predictor). Near T the data have decayed, C_t ~ Sigma_t and the skip is the whole answer
      R_t^{-1} u; the reverse CLD ODE needs it there to cancel its drift F u (eigenvalue
      -beta sqrt(M^-1) = -8 for gDDIM's defaults), which amplifies any error in the score by ~e^8
      over [0, T]. Without it a small network's 5-10 % error there makes samples diverge. gDDIM's
      ``mixed_score`` (CLD-SGM's) adds only the velocity part of this term, at equilibrium.
    * c_in: each half of ``u`` divided by its marginal standard deviation at t under that Gaussian
      model, sqrt(C_t[k, k]) (k = x, v), so the network's input has unit scale at every t;
    * c_noise = ln(t) / 4 (gDDIM feeds 999 t to a DDPM sinusoidal embedding; the Fourier embedding
      here wants an O(1) input that resolves small t);
    * the network's output is added to the skip unscaled (c_out = 1: eps has unit variance).
    """

    def __init__(self, net: nn.Module, cld, data_shape: Sequence[int], sigma_data: float = 0.5, skip: bool = True):
        super().__init__()
        if not sigma_data > 0:
            raise ValueError(f"sigma_data must be positive, got {sigma_data!r}")
        self.net = net
        self.cld = cld
        self.data_shape = tuple(int(s) for s in data_shape)
        self.sigma_data = float(sigma_data)
        self.skip = bool(skip)

    def coefficients(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(c_in [B, 2], skip matrices R_t^T C_t^{-1} [B, 2, 2]) in float64, from the closed forms."""
        from ..processes.cld import inv2

        tt = t.detach().to("cpu", torch.float64).numpy()
        a = self.cld.psi(tt, 0.0)[..., :, 0]  # [B, 2]: the data's gain into x and into v
        c = self.sigma_data**2 * a[..., :, None] * a[..., None, :] + self.cld.cov(tt)
        c_in = c[..., [0, 1], [0, 1]] ** -0.5
        skip = np.swapaxes(self.cld.R(tt), -1, -2) @ inv2(c)
        return torch.from_numpy(c_in), torch.from_numpy(skip)

    def forward(self, u: torch.Tensor, t) -> torch.Tensor:
        from ..processes.cld import apply2

        if u.ndim < 2 or tuple(u.shape[1:]) != (2, *self.data_shape):
            raise ValueError(f"a CLD network takes states [B, 2, {', '.join(map(str, self.data_shape))}], "
                             f"got {tuple(u.shape)}")
        t = torch.as_tensor(t, device=u.device)
        t = (t.expand(u.shape[0]) if t.ndim == 0 else t.reshape(-1)).to(torch.float64)
        c_in, skip = (c.to(u.device) for c in self.coefficients(t))
        u64 = u.to(torch.float64)
        dt = _net_dtype(self.net)
        h = (c_in.reshape(u.shape[0], 2, *([1] * len(self.data_shape))) * u64)
        out = self.net(h.reshape(u.shape[0], *cld_network_shape(self.data_shape)).to(dt), (torch.log(t) / 4).to(dt))
        out = out.reshape(u.shape).to(torch.float64)
        if self.skip:
            out = out + apply2(skip, u64)
        return out.to(u.dtype)

    def config(self) -> dict[str, Any]:
        """The ``precond`` entry of a CLD checkpoint's config."""
        return {"type": "cld", "sigma_data": self.sigma_data, "skip": self.skip}


def _net_dtype(net: nn.Module) -> torch.dtype:
    p = next(net.parameters(), None)
    return p.dtype if p is not None else torch.float32


def build_cld_network(network: dict[str, Any], precond: dict[str, Any], cld, data_shape: Sequence[int]) -> CLDEpsNetwork:
    """A :class:`CLDEpsNetwork` from a checkpoint's ``network`` and ``precond`` ({"type": "cld", ...}) entries."""
    extra = sorted(set(precond) - {"type", "sigma_data", "skip"})
    if (precond or {}).get("type", "cld") != "cld" or extra:
        raise ValueError(f"a CLD model takes precond = {{type = 'cld', sigma_data = ..., skip = true}}, got {precond!r}")
    net = build_network(network, cld_network_shape(data_shape))
    return CLDEpsNetwork(net, cld, data_shape, precond.get("sigma_data", 0.5), precond.get("skip", True))


# ---------------------------------------------------------------------------------------------
# Blurring diffusion: an eps network on the image state, preconditioned per DCT frequency
# ---------------------------------------------------------------------------------------------


class BDMEpsNetwork(nn.Module):
    """eps_theta(z, t) of a blurring-diffusion model (Hoogeboom & Salimans, arXiv 2209.05557).

    EDM's preconditioning (Karras et al., arXiv 2206.00364, §B.6) carried over to the BDM kernel, which
    is diagonal in the DCT basis: per DCT coefficient, with v_t = a_t^2 sigma_data^2 + sigma_t^2 the
    marginal variance of Gaussian data N(0, sigma_data^2 I),

    * skip: the exact eps of that Gaussian data, V diag(sigma_t / v_t) V^T z (EDM's c_skip is the same
      optimal linear predictor); near t_start it is nearly the whole answer z / sigma_t;
    * c_in: every DCT coefficient divided by sqrt(v_t) (the blurred high frequencies are much smaller
      than the low ones at mid t: without this the network would see them at a vanishing scale);
    * c_out: the network's output is scaled per coefficient by a_t sigma_data / sqrt(v_t) before it is
      added to the skip. This is EDM's c_out for the x_0 prediction x_0 = (u - sigma eps) / a carried over
      to eps: a frequency whose signal is buried (a_t sigma_data << sigma_t: the blurred high frequencies,
      where a_t is near d_min alpha_t) gets the Gaussian skip and only a small correction. Without it an
      eps error delta there becomes an x_0 error (sigma/a) delta ~ 10^3 delta, and gDDIM's step
      (a_s/a_t) u + ... across the blur transition carries it into the sample (measured: FD > 10^5 at
      10 NFE on digits with c_out = 1, see checkpoints/README.md);
    * c_noise = ln(t) / 4 (gDDIM feeds 999 t to a sinusoidal embedding; the Fourier embedding wants an
      O(1) input that resolves small t).
    """

    def __init__(self, net: nn.Module, bdm, data_shape: Sequence[int], sigma_data: float = 0.5, skip: bool = True):
        super().__init__()
        if not sigma_data > 0:
            raise ValueError(f"sigma_data must be positive, got {sigma_data!r}")
        self.net = net
        self.bdm = bdm
        self.data_shape = tuple(int(s) for s in data_shape)
        if len(self.data_shape) != 3:
            raise ValueError(f"a BDM model generates images [C, H, W]; got data shape {self.data_shape}")
        self.sigma_data = float(sigma_data)
        self.skip = bool(skip)

    def coefficients(self, t: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(c_in, skip, c_out) per sample and frequency, [B, H, W] each (float64 numpy)."""
        tt = t.detach().to("cpu", torch.float64).numpy()
        a = self.bdm.a(tt, self.data_shape[1:])
        sig = self.bdm.sigma(tt)[:, None, None]
        var = self.sigma_data**2 * a**2 + sig**2
        return var**-0.5, sig / var, a * self.sigma_data * var**-0.5

    def forward(self, z: torch.Tensor, t) -> torch.Tensor:
        if z.ndim != 4 or tuple(z.shape[1:]) != self.data_shape:
            raise ValueError(f"a BDM network takes states [B, {', '.join(map(str, self.data_shape))}], got {tuple(z.shape)}")
        t = torch.as_tensor(t, device=z.device)
        t = (t.expand(z.shape[0]) if t.ndim == 0 else t.reshape(-1)).to(torch.float64)
        c_in, skip, c_out = self.coefficients(t)
        z64 = z.to(torch.float64)
        dt = _net_dtype(self.net)
        out = self.net(self.bdm.apply(c_in, z64).to(dt), (torch.log(t) / 4).to(dt)).to(torch.float64)
        out = self.bdm.apply(c_out, out)
        if self.skip:
            out = out + self.bdm.apply(skip, z64)
        return out.to(z.dtype)

    def config(self) -> dict[str, Any]:
        """The ``precond`` entry of a BDM checkpoint's config."""
        return {"type": "bdm", "sigma_data": self.sigma_data, "skip": self.skip}


def build_bdm_network(network: dict[str, Any], precond: dict[str, Any], bdm, data_shape: Sequence[int]) -> BDMEpsNetwork:
    """A :class:`BDMEpsNetwork` from a checkpoint's ``network`` and ``precond`` ({"type": "bdm", ...}) entries."""
    extra = sorted(set(precond) - {"type", "sigma_data", "skip"})
    if (precond or {}).get("type", "bdm") != "bdm" or extra:
        raise ValueError(f"a BDM model takes precond = {{type = 'bdm', sigma_data = ..., skip = true}}, got {precond!r}")
    net = build_network(network, data_shape)
    return BDMEpsNetwork(net, bdm, data_shape, precond.get("sigma_data", 0.5), precond.get("skip", True))


# ---------------------------------------------------------------------------------------------
# Yukawa (GenPhys): a denoiser plus a birth/death-rate head, both conditioned on z
# ---------------------------------------------------------------------------------------------


class _RateHead(nn.Module):
    """A small residual MLP from (c_in x, c_noise) to one number per sample (zero-initialised output)."""

    def __init__(self, dim: int, hidden: int, depth: int, emb_channels: int, fourier_channels: int):
        super().__init__()
        self.emb = NoiseEmbedding(fourier_channels, emb_channels)
        self.inp = nn.Linear(dim, hidden)
        self.blocks = nn.ModuleList([_MLPBlock(hidden, emb_channels, 0.0) for _ in range(depth)])
        self.out_norm = nn.LayerNorm(hidden)
        self.out = _zero(nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        emb = self.emb(c_noise)
        h = self.inp(x.reshape(x.shape[0], -1))
        for block in self.blocks:
            h = block(h, emb)
        return self.out(F.silu(self.out_norm(h)))[:, 0]


class YukawaNetwork(nn.Module):
    """D_theta(x, z) and kappa_theta(x, z) of a Yukawa model (GenPhys, Liu et al., arXiv 2304.02637).

    * the denoiser is EDM's preconditioning (Karras et al., arXiv 2206.00364, Table 1) on the kernel's
      scale sigma(z) = z / sqrt(1 + m z) (``YukawaProcess.precond_sigma``: sqrt(z/m) at large m z, PFGM++'s
      sigma = z at small m z), around the given network: c_skip x + c_out F(c_in x, ln(sigma)/4);
    * the rate head predicts kappa/m = 1 + G(c_in x, ln(sigma)/4) (G starts at 0: kappa = m, its mean over
      the data's marginal), regressed on h/m (``YukawaProcess.rate_target``).

    ``forward(x, z)`` returns D (the denoiser contract); ``forward(x, z, with_rate=True)`` (also
    ``forward_with_rate``) both, from one call (a keyword of ``forward``, so DistributedDataParallel sees it).
    """

    def __init__(self, net: nn.Module, process, data_shape: Sequence[int], sigma_data: float = 0.5,
                 rate_hidden: int = 128, rate_depth: int = 2):
        super().__init__()
        from .precond import EDMPrecond

        self.precond = EDMPrecond(net, sigma_data)
        self.process = process
        self.data_shape = tuple(int(s) for s in data_shape)
        self.sigma_data = float(sigma_data)
        self.rate_hidden, self.rate_depth = int(rate_hidden), int(rate_depth)
        self.rate = _RateHead(math.prod(self.data_shape), self.rate_hidden, self.rate_depth, 64, 32)

    def _z(self, z, x: torch.Tensor) -> torch.Tensor:
        z = torch.as_tensor(z, device=x.device)
        return (z.expand(x.shape[0]) if z.ndim == 0 else z.reshape(-1)).to(torch.float64)

    def forward(self, x: torch.Tensor, z, with_rate: bool = False):
        s = self.process.precond_sigma(self._z(z, x))
        D = self.precond(x, s)
        if not with_rate:
            return D
        c_in = (1.0 / torch.sqrt(s**2 + self.sigma_data**2)).reshape(-1, *([1] * (x.ndim - 1)))
        dt = _net_dtype(self.rate)
        g = self.rate((c_in * x.to(torch.float64)).to(dt), (torch.log(s) / 4).to(dt)).to(torch.float64)
        return D, (self.process.m * (1.0 + g)).to(x.dtype)

    def forward_with_rate(self, x: torch.Tensor, z) -> tuple[torch.Tensor, torch.Tensor]:
        return self(x, z, with_rate=True)

    def config(self) -> dict[str, Any]:
        """The ``precond`` entry of a Yukawa checkpoint's config."""
        return {"type": "yukawa", "sigma_data": self.sigma_data, "rate_hidden": self.rate_hidden,
                "rate_depth": self.rate_depth}


def build_yukawa_network(network: dict[str, Any], precond: dict[str, Any], process, data_shape: Sequence[int]) -> YukawaNetwork:
    """A :class:`YukawaNetwork` from a checkpoint's ``network`` and ``precond`` ({"type": "yukawa", ...}) entries."""
    allowed = {"type", "sigma_data", "rate_hidden", "rate_depth"}
    extra = sorted(set(precond or {}) - allowed)
    if (precond or {}).get("type", "yukawa") != "yukawa" or extra:
        raise ValueError(f"a Yukawa model takes precond = {{type = 'yukawa', sigma_data = ..., rate_hidden = 128, "
                         f"rate_depth = 2}}, got {precond!r}")
    net = build_network(network, data_shape)
    return YukawaNetwork(net, process, data_shape, precond.get("sigma_data", 0.5), precond.get("rate_hidden", 128),
                         precond.get("rate_depth", 2))
