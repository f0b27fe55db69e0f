"""The FID code path: torch-fidelity's inception-v3-compat extractor behind the metrics API.

There is no network here, so the weights are a local file with the right state-dict keys and shapes
but random values (built offline from torch-fidelity's own module). That proves the code path
(conversion, local weights, hashing, streaming FD) and parity with torch-fidelity's calculate_metrics
on the same weights; parity with the *real* weights runs only where they are in the torch hub cache.
"""

from __future__ import annotations

import os
from unittest import mock

import pytest
import torch

import sampler_bench.metrics as M
from sampler_bench.compat import import_torch_fidelity
from sampler_bench.metrics import features

torch_fidelity = import_torch_fidelity()
from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3, FeatureExtractorInceptionV3  # noqa: E402

from sampler_bench.metrics.inception import to_uint8_rgb  # noqa: E402

LAYER = "64"  # the first pooled layer: the same code path at a tenth of the cost of "2048"
REAL_WEIGHTS = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(URL_INCEPTION_V3))


def _random_inception(seed: int) -> FeatureExtractorInceptionV3:
    """torch-fidelity's InceptionV3 with random weights (nothing downloaded)."""
    torch.manual_seed(seed)
    with mock.patch.object(FeatureExtractorInceptionV3, "load_state_dict", lambda self, *a, **k: None), \
            mock.patch("torch_fidelity.feature_extractor_inceptionv3.load_state_dict_from_url", lambda *a, **k: {}):
        return FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory):
    """A state-dict file shaped like torch-fidelity's InceptionV3 weights, random values."""
    path = tmp_path_factory.mktemp("inception") / "inception-random.pth"
    torch.save(_random_inception(0).state_dict(), path)
    return path


class ImageModel:
    """Grey 8x8 'images' in [-1, 1]: a model with data but no analytic law."""

    name, shape = "tiny-images", (1, 8, 8)

    def sample_data(self, n, generator=None):
        base = torch.linspace(-0.8, 0.8, 64, dtype=torch.float64).reshape(1, 1, 8, 8)
        return (base + 0.3 * torch.randn(n, 1, 8, 8, generator=generator, dtype=torch.float64)).clamp(-1, 1)

    def fingerprint(self):
        return "tiny-images-v1"


def images(n, seed):
    return ImageModel().sample_data(n, torch.Generator().manual_seed(seed))


class _Uint8Set(torch.utils.data.Dataset):
    def __init__(self, x):
        self.x = to_uint8_rgb(x)

    def __len__(self):
        return self.x.shape[0]

    def __getitem__(self, i):
        return self.x[i]


def test_uint8_conversion_is_edm_rounding_and_replicates_one_channel():
    x = torch.tensor([-1.0, -0.999, 0.0, 0.5, 1.0, 1.5, -3.0], dtype=torch.float64).reshape(1, 1, 1, 7)
    u = to_uint8_rgb(x)
    assert u.dtype == torch.uint8 and u.shape == (1, 3, 1, 7)
    assert u[0, 0, 0].tolist() == [0, 0, 128, 191, 255, 255, 0]  # floor(127.5 x + 128), clamped
    assert torch.equal(u[:, 0], u[:, 1]) and torch.equal(u[:, 0], u[:, 2])
    levels = torch.arange(256, dtype=torch.float64)
    back = to_uint8_rgb(((levels - 127.5) / 127.5).reshape(1, 1, 16, 16).float())  # also from float32
    assert torch.equal(back[0, 0].flatten().long(), levels.long())


def test_inception_fd_of_a_set_against_itself_is_zero_and_of_a_shifted_set_positive(random_weights, tmp_path):
    x = images(10, 1)
    same = M.make("fd", ImageModel(), feature_extractor="inception-v3-compat", reference_samples=x,
                  weights_path=random_weights, feature_layer=LAYER, cache_dir=tmp_path)
    shifted = M.make("fd", ImageModel(), feature_extractor="inception-v3-compat", reference_samples=x,
                     weights_path=random_weights, feature_layer=LAYER, cache_dir=tmp_path)
    for b in x.split(4):
        same.update(b)
        shifted.update((b + 0.5).clamp(-1, 1))
    fd_same, fd_shifted = same.compute()["fd"], shifted.compute()["fd"]
    assert fd_shifted > 0
    assert abs(fd_same) < 1e-6 * fd_shifted
    prov = same.provenance
    assert prov["feature_extractor"] == "inception-v3-compat" and prov["feature_layer"] == LAYER
    assert len(prov["weights_sha256"]) == 16 and prov["weights_sha256"] in prov["extractor_fingerprint"]
    assert prov["reference"]["source"] == "data tensor" and prov["reference_hash"] == shifted.provenance["reference_hash"]


def test_inception_fd_matches_torch_fidelity_calculate_metrics_on_the_same_weights(random_weights):
    x, y = images(10, 2), (images(10, 3) * 0.7 + 0.1)
    acc = M.make("fd", ImageModel(), feature_extractor="inception-v3-compat", reference_samples=y,
                 weights_path=random_weights, feature_layer=LAYER)
    acc.update(x)
    theirs = torch_fidelity.calculate_metrics(
        input1=_Uint8Set(x), input2=_Uint8Set(y), fid=True, feature_extractor="inception-v3-compat",
        feature_layer_fid=LAYER, feature_extractor_weights_path=str(random_weights), cuda=False, cache=False,
        save_cpu_ram=True, verbose=False, batch_size=10,
    )[torch_fidelity.KEY_METRIC_FID]
    assert acc.compute()["fd"] == pytest.approx(theirs, rel=1e-4)


def test_inception_default_layer_gives_the_2048_pool_features(random_weights):
    ex = features.get("inception-v3-compat", weights_path=random_weights)
    f = ex(images(2, 4))
    assert f.shape == (2, 2048) and f.dtype == torch.float64


class NotATensor:
    """Pickled as a class reference: torch.load(weights_only=True) refuses it."""


def test_inception_weights_must_be_a_plain_state_dict_with_the_right_keys(tmp_path):
    pickled = tmp_path / "code.pth"
    torch.save({"x": NotATensor()}, pickled)
    with pytest.raises(ValueError, match="weights_only=True"):
        features.get("inception-v3-compat", weights_path=pickled)
    wrong = tmp_path / "wrong.pth"
    torch.save({"fc.weight": torch.zeros(3, 3)}, wrong)
    with pytest.raises(ValueError, match="do not fit"):
        features.get("inception-v3-compat", weights_path=wrong)
    with pytest.raises(ValueError, match="is not a file"):
        features.get("inception-v3-compat", weights_path=tmp_path / "missing.pth")


@pytest.mark.skipif(not os.path.exists(REAL_WEIGHTS),
                    reason=f"no network here: torch-fidelity's real InceptionV3 weights are not in the torch hub "
                           f"cache ({REAL_WEIGHTS}); the code path is tested above with random weights")
def test_real_inception_weights_fid_matches_torch_fidelity():
    x, y = images(32, 5), images(32, 6) * 0.5
    acc = M.make("fd", ImageModel(), feature_extractor="inception-v3-compat", reference_samples=y)
    acc.update(x)
    assert acc.provenance["weights_sha256"].startswith("6726825d")  # torch hub names files by their sha256
    theirs = torch_fidelity.calculate_metrics(
        input1=_Uint8Set(x), input2=_Uint8Set(y), fid=True, cuda=False, cache=False, save_cpu_ram=True,
        verbose=False, batch_size=32,
    )[torch_fidelity.KEY_METRIC_FID]
    assert acc.compute()["fd"] == pytest.approx(theirs, rel=1e-3)


class _ConvBn(torch.nn.Module):
    """The conv -> bn -> relu block of torch-fidelity's InceptionV3, in miniature."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 5, 3, padding=1, bias=False)
        self.bn = torch.nn.BatchNorm2d(5, eps=0.001)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x)))


def _randomise_batch_norms(net, seed):
    """Non-trivial fixed statistics (a fresh BatchNorm2d would fold to a near-identity)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                c = m.num_features
                m.weight.copy_(0.5 + torch.rand(c, generator=g))
                m.bias.copy_(0.2 * torch.randn(c, generator=g))
                m.running_mean.copy_(0.3 * torch.randn(c, generator=g))
                m.running_var.copy_(0.3 + 2 * torch.rand(c, generator=g))
    return net.eval()


def test_folding_batch_norm_into_the_convolution_is_the_same_function():
    from sampler_bench.metrics.inception import fold_batch_norms

    net = _randomise_batch_norms(_ConvBn().double(), 0)
    x = torch.randn(4, 3, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    before = net(x)
    assert fold_batch_norms(net) == 1
    assert isinstance(net.bn, torch.nn.Identity) and net.conv.bias is not None
    torch.testing.assert_close(net(x), before, rtol=1e-12, atol=1e-12)  # exact algebra, float64 round-off
    assert fold_batch_norms(net) == 0  # nothing left to fold
    with pytest.raises(ValueError, match="eval mode"):
        fold_batch_norms(_ConvBn().train())


@pytest.fixture(scope="module")
def weights_with_batch_norm_statistics(tmp_path_factory):
    """Random InceptionV3 weights whose batch norms have non-trivial statistics."""
    net = _randomise_batch_norms(_random_inception(1), 2)
    path = tmp_path_factory.mktemp("inception-bn") / "inception-random-bn.pth"
    torch.save(net.state_dict(), path)
    return path


def test_folded_inference_gives_torch_fidelitys_fid_features(weights_with_batch_norm_statistics):
    """The default inference copy (batch norms folded, channels_last) computes torch-fidelity's features
    through every layer up to the 2048 pool, to float32 round-off."""
    from sampler_bench.metrics.inception import InceptionV3Compat

    x = images(2, 7)
    folded = InceptionV3Compat(weights_path=weights_with_batch_norm_statistics)
    as_is = InceptionV3Compat(weights_path=weights_with_batch_norm_statistics, inference="torch-fidelity")
    assert folded.inference == "folded" and not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.net.modules())
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in as_is.net.modules()) == 94
    theirs = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"],
                                         feature_extractor_weights_path=str(weights_with_batch_norm_statistics))
    with torch.no_grad():
        reference = theirs.eval()(to_uint8_rgb(x))[0].double()
    f_folded, f_as_is = folded(x), as_is(x)
    assert reference.abs().max() > 0 and reference.std() > 1e-3 * reference.abs().max()  # not a degenerate net
    torch.testing.assert_close(f_as_is, reference, rtol=0, atol=0)
    torch.testing.assert_close(f_folded, reference, rtol=1e-5, atol=1e-5 * float(reference.abs().max()))
    assert folded.fingerprint == as_is.fingerprint  # same function of the input: same reference statistics
    assert folded.provenance()["inference"] == "folded" and as_is.provenance()["inference"] == "torch-fidelity"


def test_unknown_inception_inference_mode_is_refused(random_weights):
    with pytest.raises(ValueError, match="inference 'fast' is not one of folded, torch-fidelity"):
        features.get("inception-v3-compat", weights_path=random_weights, inference="fast")


def test_uint8_quantisation_is_an_option_recorded_and_validated(random_weights):
    """quantize_uint8 (default on, EDM / clean-fid): off, the network sees 127.5 (x + 1) unrounded. On
    inputs on the uint8 grid the two agree; elsewhere they differ; the fingerprint and provenance say which."""
    import copy

    on = features.get("inception-v3-compat", weights_path=random_weights, feature_layer=LAYER)
    # the same network without quantisation (building a second one costs seconds; the constructor only
    # validates and stores the flag, checked below through features.get)
    off = copy.copy(on)
    off.quantize_uint8 = False
    assert on.quantize_uint8 and not off.quantize_uint8
    assert on.provenance()["quantize_uint8"] is True and off.provenance()["quantize_uint8"] is False
    assert "floor(127.5*x + 128)" in on.provenance()["uint8_conversion"]
    assert off.provenance()["uint8_conversion"].startswith("none")
    assert off.fingerprint == on.fingerprint + ":unquantised"
    levels = torch.randint(0, 256, (2, 3, 8, 8), generator=torch.Generator().manual_seed(3)).double()
    on_grid = (levels - 127.5) / 127.5  # exactly the values uint8 k stands for
    off_grid = on_grid + 0.3 / 127.5  # a third of a level up: rounding moves every pixel
    f_on, f_off = (ex.extract(torch.cat([on_grid, off_grid])) for ex in (on, off))
    torch.testing.assert_close(f_off[:2], f_on[:2], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(f_off[2:], f_on[2:], rtol=1e-5, atol=1e-6)
    assert torch.equal(f_on[2:], f_on[:2])  # quantised: the same uint8 images
    # torch-fidelity's own uint8 check is back in force after an unquantised call
    with pytest.raises(Exception, match="uint8"):
        on.net(on_grid.float())
    with pytest.raises(ValueError, match="quantize_uint8 must be true .* or false, got 'no'"):
        features.get("inception-v3-compat", weights_path=random_weights, quantize_uint8="no")
