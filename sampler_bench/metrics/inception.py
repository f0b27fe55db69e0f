"""FID features: torch-fidelity's ``inception-v3-compat`` extractor behind the FeatureExtractor contract.

The network, its TF-1.x-compatible bilinear resize to 299x299 and its weights are torch-fidelity's
(the TF Inception of Heusel et al. 2017, arXiv:1706.08500, ported and tested against TF by
torch-fidelity). What this module adds is the conversion a sampler's output needs and the provenance:

* samples in [-1, 1] become uint8 with ``floor(127.5 x + 128)`` clamped to [0, 255], i.e.
  ``round(255 (x + 1) / 2)`` -- the conversion of EDM's ``generate.py`` (the ``127.5 x + 128`` variant;
  ``(x + 1)/2 * 255`` truncated would darken every pixel by half a level);
* ``quantize_uint8=False`` skips that rounding: the network gets ``127.5 (x + 1)`` clamped to [0, 255]
  as floats (the affine map the rounding approximates; equal to the uint8 path on inputs that lie on
  the uint8 grid). The default, on, is the protocol of EDM and clean-fid, whose published FIDs are of
  quantised images; the choice is part of the fingerprint and the provenance;
* one-channel images are replicated to three channels; the resize is done by the extractor;
* ``weights_path`` loads local weights (offline clusters); without it torch-fidelity downloads its
  release weights once into torch's hub cache. A local file must load with
  ``torch.load(weights_only=True)`` before torch-fidelity (which unpickles freely) is given it.
* the weights' sha256 goes into the fingerprint, so reference statistics are keyed by the exact weights;
* ``inference="folded"`` (the default) runs an inference copy of the same network: each convolution's
  batch normalisation (eval mode, fixed statistics) folded into the convolution's weights and bias in
  float64, NHWC (``channels_last``) layout, ``torch.inference_mode``. It is the same function of the
  input; only float32 rounding differs (features agree with torch-fidelity's module to ~1e-6 relative,
  the size of the differences a change of batch size or thread count makes), and it is ~1.6x faster
  on a CPU (benchmarks/RESULTS.md). ``inference="torch-fidelity"`` runs torch-fidelity's module as is.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path

import torch

from ..compat import import_torch_fidelity
from .extractor import FeatureExtractor, image_shape_problem

LAYERS = ("64", "192", "768", "2048", "logits_unbiased", "logits")
INFERENCE_MODES = ("folded", "torch-fidelity")
_FILE_HASHES: dict[tuple[str, float, int], str] = {}


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes (first 16 hex digits), memoised by (path, mtime, size)."""
    st = os.stat(path)
    key = (str(Path(path).resolve()), st.st_mtime, st.st_size)
    if key not in _FILE_HASHES:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
        _FILE_HASHES[key] = h.hexdigest()[:16]
    return _FILE_HASHES[key]


def to_uint8_rgb(x: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] floats in [-1, 1] (C = 1 or 3) -> [B, 3, H, W] uint8 as torch-fidelity expects."""
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"inception-v3-compat needs images [B, 1 or 3, H, W] in [-1, 1], got shape {tuple(x.shape)}")
    u8 = (x.to(torch.float64) * 127.5 + 128).clamp(0, 255).to(torch.uint8)  # to(uint8) truncates: floor
    return u8.expand(-1, 3, -1, -1).contiguous() if u8.shape[1] == 1 else u8


def to_unquantised_rgb(x: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] floats in [-1, 1] -> [B, 3, H, W] float32 ``127.5 (x + 1)`` clamped to [0, 255], not rounded."""
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"inception-v3-compat needs images [B, 1 or 3, H, W] in [-1, 1], got shape {tuple(x.shape)}")
    v = ((x.to(torch.float64) + 1.0) * 127.5).clamp(0, 255).to(torch.float32)
    return v.expand(-1, 3, -1, -1).contiguous() if v.shape[1] == 1 else v


@contextlib.contextmanager
def _float_input_accepted():
    """torch-fidelity's InceptionV3 asserts uint8 input, then converts it to float as its first step; for
    unquantised features let float input through that one assertion (every other check stays)."""
    import torch_fidelity.feature_extractor_inceptionv3 as tf_inception

    strict = tf_inception.vassert

    def relaxed(condition, message):
        if "dtype=torch.uint8" not in message:
            strict(condition, message)

    tf_inception.vassert = relaxed
    try:
        yield
    finally:
        tf_inception.vassert = strict


def fold_batch_norms(net: torch.nn.Module) -> int:
    """Fold every ``conv -> bn`` pair of ``net`` (modules with a bias-free ``conv`` and an eval-mode
    ``bn``, as torch-fidelity's ``BasicConv2d``) into one biased convolution, in place; returns how many.

    With fixed statistics, ``bn(conv(x)) = s * (W * x) + (beta - s * mean)`` where
    ``s = gamma / sqrt(var + eps)`` per output channel, i.e. a convolution with weights ``s W`` and bias
    ``beta - s mean``. Computed in float64 and rounded once to the network's dtype.
    """
    folded = 0
    for module in net.modules():
        conv, bn = getattr(module, "conv", None), getattr(module, "bn", None)
        if not (isinstance(conv, torch.nn.Conv2d) and isinstance(bn, torch.nn.BatchNorm2d)) or conv.bias is not None:
            continue
        if bn.training or bn.running_mean is None:
            raise ValueError("fold_batch_norms needs batch norms in eval mode with running statistics")
        scale = bn.weight.detach().double() / torch.sqrt(bn.running_var.double() + bn.eps)
        dtype, device = conv.weight.dtype, conv.weight.device
        fused = torch.nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                                conv.dilation, conv.groups, bias=True, padding_mode=conv.padding_mode,
                                device=device, dtype=dtype)
        with torch.no_grad():
            fused.weight.copy_((conv.weight.detach().double() * scale[:, None, None, None]).to(dtype))
            fused.bias.copy_((bn.bias.detach().double() - bn.running_mean.double() * scale).to(dtype))
        module.conv, module.bn = fused, torch.nn.Identity()
        folded += 1
    return folded


class InceptionV3Compat(FeatureExtractor):
    """torch-fidelity's ``inception-v3-compat`` (default layer ``"2048"``: the FID pool features)."""

    name = "inception-v3-compat"
    description = "torch-fidelity's TF-compatible InceptionV3 (FID features; images in [-1, 1], 1 or 3 channels)"

    def __init__(self, weights_path: str | os.PathLike | None = None, feature_layer: str = "2048",
                 batch_size: int = 64, device: str | torch.device = "cpu", inference: str = "folded",
                 quantize_uint8: bool = True):
        super().__init__(device)
        if not isinstance(quantize_uint8, bool):
            raise ValueError(f"inception-v3-compat: quantize_uint8 must be true (round samples to uint8 before "
                             f"Inception, as EDM and clean-fid) or false, got {quantize_uint8!r}")
        self.quantize_uint8 = quantize_uint8
        if inference not in INFERENCE_MODES:
            raise ValueError(f"inception-v3-compat: inference {inference!r} is not one of {', '.join(INFERENCE_MODES)}")
        if feature_layer not in LAYERS:
            raise ValueError(f"inception-v3-compat: feature_layer {feature_layer!r} is not one of {', '.join(LAYERS)}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"inception-v3-compat: batch_size must be a positive integer, got {batch_size!r}")
        tf = import_torch_fidelity()
        from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3, FeatureExtractorInceptionV3

        if weights_path is not None:
            weights_path = Path(weights_path).expanduser()
            if not weights_path.is_file():
                raise ValueError(f"inception-v3-compat: weights_path {str(weights_path)!r} is not a file; "
                                 "give the torch-fidelity InceptionV3 .pth (weights-inception-2015-12-05-6726825d.pth)")
            try:  # refuse pickled code: a file that loads as plain tensors is safe to hand to torch-fidelity
                torch.load(weights_path, map_location="cpu", weights_only=True)
            except Exception as err:
                raise ValueError(f"inception-v3-compat: {weights_path} does not load with "
                                 f"torch.load(weights_only=True) ({type(err).__name__}); give a plain state-dict file") from None
        try:
            net = FeatureExtractorInceptionV3(self.name, [feature_layer], feature_extractor_weights_path=
                                              None if weights_path is None else str(weights_path), verbose=False)
        except RuntimeError as err:  # wrong keys / shapes in a local file
            raise ValueError(f"inception-v3-compat: weights do not fit torch-fidelity's InceptionV3: {str(err)[:300]}") from None
        except OSError as err:  # no network and nothing in the hub cache
            raise ValueError(f"inception-v3-compat: could not download the InceptionV3 weights ({err}); "
                             f"on an offline machine fetch {URL_INCEPTION_V3} elsewhere and pass weights_path=") from None
        if weights_path is None:
            weights_path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(URL_INCEPTION_V3)
        self.weights_path = str(weights_path)
        self.weights_sha256 = file_sha256(weights_path)
        self.feature_layer = feature_layer
        self.batch_size = batch_size
        self.torch_fidelity_version = tf.__version__
        self.inference = inference
        net = net.eval().to(self.device)
        if inference == "folded":
            fold_batch_norms(net)
            if any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules()):  # a layout we do not know
                raise ValueError("inception-v3-compat: a batch norm of this torch-fidelity version could not be folded; "
                                 "use inference='torch-fidelity'")
            net = net.to(memory_format=torch.channels_last)
        self.net = net

    def extract(self, x: torch.Tensor) -> torch.Tensor:
        if self.quantize_uint8:
            images, accept = to_uint8_rgb(x), contextlib.nullcontext()
        else:
            images, accept = to_unquantised_rgb(x), _float_input_accepted()
        with torch.inference_mode(), accept:
            out = [self.net(chunk)[0].to(torch.float64) for chunk in images.split(self.batch_size)]
        return torch.cat(out) if out else torch.zeros(0, 0, dtype=torch.float64)

    def check_input(self, shape) -> str | None:
        return image_shape_problem(shape)

    @property
    def fingerprint(self) -> str:
        # unquantised features are another function of the samples: their reference statistics must not mix
        return f"{self.name}:{self.feature_layer}:{self.weights_sha256}" + ("" if self.quantize_uint8 else ":unquantised")

    def provenance(self) -> dict:
        return {"feature_extractor": self.name, "extractor_fingerprint": self.fingerprint,
                "feature_layer": self.feature_layer, "weights_sha256": self.weights_sha256,
                "weights_file": os.path.basename(self.weights_path), "torch_fidelity": self.torch_fidelity_version,
                "quantize_uint8": self.quantize_uint8,
                "uint8_conversion": ("floor(127.5*x + 128) clamped to [0, 255]" if self.quantize_uint8 else
                                     "none: 127.5*(x + 1) clamped to [0, 255] as float32")
                + "; 1 channel replicated to 3",
                "inference": self.inference,
                # cuDNN's TF32 convolutions (torch's default) move features by ~1e-4 relative vs float32
                **({"cudnn_allow_tf32": torch.backends.cudnn.allow_tf32} if self.device.type == "cuda" else {})}
