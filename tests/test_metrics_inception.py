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


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory):
    """A state-dict file shaped like torch-fidelity's InceptionV3 weights, random values."""
    torch.manual_seed(0)
    with mock.patch.object(FeatureExtractorInceptionV3, "load_state_dict", lambda self, *a, **k: None), \
            mock.patch("torch_fidelity.feature_extractor_inceptionv3.load_state_dict_from_url", lambda *a, **k: {}):
        net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    path = tmp_path_factory.mktemp("inception") / "inception-random.pth"
    torch.save(net.state_dict(), path)
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
