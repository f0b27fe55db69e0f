"""Datasets: fixed splits, value ranges, exact laws of the toys, file readers, the digits classifier."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from sampler_bench.data import available, load_dataset
from sampler_bench.data.cifar10 import FOLDER, TEST_BATCH, TRAIN_BATCHES, read_batch


def test_digits_split_is_fixed_disjoint_and_covers_every_class():
    d = load_dataset("digits")
    assert len(d) == 1498 and d.test_raw.shape[0] == 299 and d.shape == (1, 8, 8)
    for labels in (d.train_labels, d.test_labels):
        assert set(labels.tolist()) == set(range(10))
    x = torch.cat([d.train(), d.test()])
    assert x.min() == -1.0 and x.max() == 1.0
    # the same images in the same order every time (the split depends on position only)
    again = load_dataset({"name": "digits"})
    torch.testing.assert_close(again.test(), d.test(), rtol=0, atol=0)
    # no held-out image is also a training image
    dist = torch.cdist(d.test().flatten(1), d.train().flatten(1))
    assert (dist.min(1).values > 0).float().mean() > 0.99
    assert load_dataset({"name": "digits", "flatten": True}).shape == (64,)


def test_sigma_data_is_the_standard_deviation_of_the_training_values():
    d = load_dataset("digits")
    assert d.sigma_data == pytest.approx(float(d.train().to(torch.float64).std(unbiased=False)), rel=1e-9)


@pytest.mark.parametrize("name", ["ring", "moons", "swissroll", "checkerboard"])
def test_toy_datasets_are_deterministic_2d_sets_of_unit_scale(name):
    a, b = load_dataset({"name": name, "n_train": 2000, "n_test": 500}), load_dataset({"name": name, "n_train": 2000, "n_test": 500})
    assert a.shape == (2,) and len(a) == 2000 and a.test_raw.shape[0] == 500
    torch.testing.assert_close(a.train(), b.train(), rtol=0, atol=0)
    assert 0.3 < a.sigma_data < 3.0
    assert not torch.equal(a.train(), load_dataset({"name": name, "n_train": 2000, "n_test": 500, "seed": 1}).train())


def test_checkerboard_mass_lies_on_the_black_squares_only():
    x = load_dataset({"name": "checkerboard", "n_train": 4000, "n_test": 10}).train().to(torch.float64)
    parity = (torch.floor(x[:, 0]) + torch.floor(x[:, 1])) % 2
    assert (parity == 0).all() and (x.abs() <= 2).all()


def test_ring_and_gmm_samples_follow_their_exact_mixture():
    for cfg in ({"name": "ring", "n_train": 20000, "n_test": 10}, {"name": "gmm", "dim": 5, "components": 3, "n_train": 20000, "n_test": 10}):
        d = load_dataset(cfg)
        law = d.distribution
        x = d.train().to(torch.float64)
        torch.testing.assert_close(x.mean(0), law.mean, atol=0.05, rtol=0)
        torch.testing.assert_close(torch.cov(x.T), law.covariance, atol=0.08, rtol=0.05)


def test_lfw_faces_are_24x24_grey_images_in_unit_range():
    pytest.importorskip("skimage", reason="scikit-image is optional (pip install 'sampler-bench[images]')")
    d = load_dataset("lfw")
    assert d.shape == (1, 24, 24) and len(d) == 90 and d.test_raw.shape[0] == 10
    assert d.train().min() >= -1 and d.train().max() <= 1


def test_image_folder_is_read_sorted_resized_and_split(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(12):
        sub = tmp_path / ("a" if i < 6 else "b")
        sub.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(sub / f"{i:02d}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    d = load_dataset({"name": "folder", "path": str(tmp_path), "resolution": 16, "channels": 1, "test_every": 4})
    assert d.shape == (1, 16, 16) and len(d) == 9 and d.test_raw.shape[0] == 3
    assert d.train().min() >= -1 and d.train().max() <= 1


def test_image_folder_errors_say_what_is_wrong(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_dataset({"name": "folder", "path": str(tmp_path / "nope")})
    with pytest.raises(ValueError, match="holds 0 images"):
        load_dataset({"name": "folder", "path": str(tmp_path)})


def _write_batch(path, n, seed):
    rng = np.random.default_rng(seed)
    d = {b"batch_label": b"test", b"labels": rng.integers(0, 10, n).tolist(),
         b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"filenames": [b"x.png"] * n}
    path.write_bytes(pickle.dumps(d, protocol=2))
    return d


def test_cifar10_reads_the_standard_python_batches(tmp_path):
    folder = tmp_path / FOLDER
    folder.mkdir()
    batches = [_write_batch(folder / name, 4, i) for i, name in enumerate(TRAIN_BATCHES)]
    test = _write_batch(folder / TEST_BATCH, 3, 9)
    d = load_dataset({"name": "cifar10", "root": str(tmp_path)})
    assert d.shape == (3, 32, 32) and len(d) == 20 and d.test_raw.shape[0] == 3
    # channel-major layout of the format: the first 1024 bytes are the red plane
    first = torch.as_tensor(batches[0][b"data"][0].astype(np.float32))
    torch.testing.assert_close(d.train(torch.tensor([0]))[0, 0].flatten(), first[:1024] * 2 / 255 - 1)
    assert d.test_labels.tolist() == test[b"labels"]


def test_cifar10_batch_reader_runs_no_code_from_the_file(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    p = tmp_path / "data_batch_1"
    p.write_bytes(pickle.dumps({b"data": Evil(), b"labels": []}))
    with pytest.raises(ValueError, match="refusing to load builtins.print"):
        read_batch(p)


def test_missing_cifar10_says_how_to_get_it(tmp_path):
    with pytest.raises(ValueError, match="download=true"):
        load_dataset({"name": "cifar10", "root": str(tmp_path)})


@pytest.mark.parametrize("config, message", [
    ({"name": "digit"}, "did you mean 'digits'"),
    ({"name": "ring", "n_samples": 3}, "has no parameter 'n_samples'"),
    ({"dataset": "ring"}, "needs a 'name'"),
])
def test_bad_dataset_config_raises_one_readable_value_error(config, message):
    with pytest.raises(ValueError, match=message):
        load_dataset(config)


def test_every_registered_dataset_is_documented():
    import sampler_bench.data as data

    for name in available():
        assert name in data.__doc__


# --- the digits feature extractor -----------------------------------------------------------------

def test_digits_classifier_is_accurate_on_held_out_digits():
    from sampler_bench.data.digits_classifier import accuracy, load_classifier, metadata

    d = load_dataset("digits")
    acc = accuracy(load_classifier(), d.test(), d.test_labels)
    assert acc >= 0.97
    assert metadata()["test_accuracy"] == pytest.approx(acc, abs=1 / 299)  # the committed record is what it does


def test_digits_classifier_is_a_registered_feature_extractor_for_both_layouts():
    from sampler_bench.metrics import features

    ex = features.get("digits-classifier")
    d = load_dataset("digits")
    f = ex(d.test()[:5])
    assert f.shape == (5, 64) and f.dtype == torch.float64
    torch.testing.assert_close(ex(d.test()[:5].reshape(5, 64)), f)
    assert ex.fingerprint.startswith("digits-classifier:")
