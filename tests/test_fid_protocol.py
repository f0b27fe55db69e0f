"""The field's FID protocol: EDM-format .npz statistics, image-folder references, EDM's uint8 conversion."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sampler_bench import metrics as M
from sampler_bench.metrics.reference_files import ReferenceFileError, folder_images, load_npz_stats, save_npz_stats


def _moments(x):
    x = x.double()
    return x.mean(0), torch.cov(x.T)


def test_npz_statistics_round_trip_exactly_and_give_the_same_fd(tmp_path):
    from sampler_bench.models.builtin import builtin_model

    model = builtin_model("gmm2d")
    ref = model.sample_data(4000, generator=torch.Generator().manual_seed(1))
    mean, cov = _moments(ref)
    path = save_npz_stats(tmp_path / "ref.npz", mean, cov)
    with np.load(path) as f:  # EDM's fid.py reads exactly these two arrays
        assert sorted(f.files) == ["mu", "sigma"] and f["mu"].dtype == np.float64
    stats = load_npz_stats(path)
    assert torch.equal(stats.tensors["mean"], mean) and torch.equal(stats.tensors["cov"], cov)
    samples = model.sample_data(500, generator=torch.Generator().manual_seed(2))
    from_npz = M.make("fd", model, reference_stats=str(path))
    from_data = M.make("fd", model, reference_samples=ref)
    for acc in (from_npz, from_data):
        acc.update(samples)
    assert from_npz.compute()["fd"] == pytest.approx(from_data.compute()["fd"], rel=1e-10, abs=1e-12)
    assert from_npz.provenance["reference_hash"] == stats.hash and stats.provenance["file_sha256"]


@pytest.mark.parametrize("case, message", [
    ("missing", "no such file"),
    ("garbage", "is not a readable .npz file"),
    ("keys", "expected arrays 'mu' and 'sigma'"),
    ("shapes", "expected \\[F\\] and \\[F, F\\]"),
    ("nan", "contain NaN or inf"),
    ("asym", "not symmetric"),
    ("dim", "are 3-dimensional; the feature extractor gives 2 features"),
    ("pickle", "is not a readable .npz file"),
])
def test_a_malformed_npz_is_one_clear_message(tmp_path, case, message):
    from sampler_bench.models.builtin import builtin_model

    p = tmp_path / "stats.npz"
    eye = np.eye(2)
    if case == "garbage":
        p.write_bytes(b"definitely not a zip")
    elif case == "keys":
        np.savez(p, mean=np.zeros(2), cov=eye)
    elif case == "shapes":
        np.savez(p, mu=np.zeros(2), sigma=np.zeros(3))
    elif case == "nan":
        np.savez(p, mu=np.array([0.0, np.nan]), sigma=eye)
    elif case == "asym":
        np.savez(p, mu=np.zeros(2), sigma=np.array([[1.0, 0.5], [0.0, 1.0]]))
    elif case == "dim":
        np.savez(p, mu=np.zeros(3), sigma=np.eye(3))
    elif case == "pickle":  # an object array would need allow_pickle: refused, never unpickled
        np.savez(p, mu=np.array([{"a": 1}], dtype=object), sigma=eye)
    with pytest.raises(ValueError, match=message):
        M.make("fd", builtin_model("gmm2d"), reference_stats=str(p))


def test_uint8_quantisation_is_edms_formula():
    from sampler_bench.metrics.inception import to_uint8_rgb

    x = torch.randn(16, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 0.8
    edm = (x * 127.5 + 128).clip(0, 255).to(torch.uint8)  # NVlabs/edm generate.py
    assert torch.equal(to_uint8_rgb(x), edm)
    assert torch.equal(to_uint8_rgb(x.double()), (x.double() * 127.5 + 128).clip(0, 255).to(torch.uint8))


def test_folder_images_come_back_to_their_uint8_values(tmp_path):
    from PIL import Image

    from sampler_bench.metrics.inception import to_uint8_rgb

    g = torch.Generator().manual_seed(3)
    pix = torch.randint(0, 256, (3, 6, 5, 3), generator=g, dtype=torch.uint8)
    for i in range(3):
        Image.fromarray(pix[i].numpy()).save(tmp_path / f"{i:06d}.png")
    x = folder_images(tmp_path, (3, 6, 5))
    assert x.shape == (3, 3, 6, 5) and x.min() >= -1 and x.max() <= 1
    assert torch.equal(to_uint8_rgb(x), pix.permute(0, 3, 1, 2))  # the exact pixels reach Inception
    Image.fromarray(pix[0, :4].numpy()).save(tmp_path / "odd.png")
    with pytest.raises(ReferenceFileError, match="is 5x4, the samples are 5x6"):
        folder_images(tmp_path, (3, 6, 5))
