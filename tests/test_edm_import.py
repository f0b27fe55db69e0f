"""EDM network pickles: the converter on a stand-in pickle (tests/edm_standin, same structure as EDM's code).

Proves the denoiser is bit-exact before and after conversion, that the converted checkpoint loads
without unpickling, and that every bad input is one message with exit status 2.
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import sampler_bench as sb
from sampler_bench.cli import main

STANDIN = Path(__file__).parent / "edm_standin"


@pytest.fixture
def edm_code(monkeypatch):
    monkeypatch.syspath_prepend(str(STANDIN))
    yield
    for name in [n for n in sys.modules if n.startswith(("training", "torch_utils", "_imported_module_"))]:
        del sys.modules[name]


def _snapshot(tmp_path, label_dim=0):
    from training.networks import EDMPrecond

    torch.manual_seed(0)
    net = EDMPrecond(img_resolution=8, img_channels=3, label_dim=label_dim, sigma_data=0.5, model_channels=8)
    path = tmp_path / "network-snapshot-000000.pkl"
    with open(path, "wb") as f:
        pickle.dump({"ema": net, "augment_pipe": None, "dataset_kwargs": {}}, f)
    return path


@pytest.mark.parametrize("label_dim", [0, 10])
def test_converted_edm_network_is_bit_exact_and_loads_without_unpickling(edm_code, tmp_path, monkeypatch, label_dim):
    pkl = _snapshot(tmp_path, label_dim)
    res = CliRunner().invoke(main, ["import", "edm", str(pkl), "--out", str(tmp_path / "out"), "--trust-pickle",
                                    "--name", "tiny"])
    assert res.exit_code == 0, res.output
    with open(pkl, "rb") as f:
        before = pickle.load(f)["ema"]
    assert type(before).__module__.startswith("_imported_module_")  # rebuilt from the pickle's source, as EDM's
    loads = []
    monkeypatch.setattr(pickle, "load", lambda *a, **k: loads.append(1))  # any unpickling from here on is caught
    model = sb.load_model(tmp_path / "out" / "tiny")
    assert not loads
    assert model.shape == (3, 8, 8) and model.num_classes == label_dim
    assert (model.sigma_min, model.sigma_max) == (0.002, 80.0)  # EDM's sampler clamps [0, inf) to these
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64) * 5
    sigma = torch.tensor([80.0, 5.0, 0.3, 0.002], dtype=torch.float64)
    labels = torch.tensor([0, 3, 9, 1]) if label_dim else None
    onehot = torch.nn.functional.one_hot(labels, label_dim).float() if label_dim else None
    ref = before(x, sigma, onehot).double()
    ours = model(x, sigma, **({"class_labels": labels} if label_dim else {}))
    assert torch.equal(ours, ref)
    cfg = model.config["edm"]
    assert cfg["class_name"] == "EDMPrecond" and cfg["init_kwargs"]["model_channels"] == 8


def test_the_pickle_plugin_runs_only_when_trusted(edm_code, tmp_path):
    from sampler_bench.models.plugin import PluginError, load_plugin

    pkl = _snapshot(tmp_path)
    with pytest.raises(PluginError, match="trust_pickle = true"):
        load_plugin("sampler_bench.models.edm:from_pickle", {"path": str(pkl)})
    m = load_plugin("sampler_bench.models.edm:from_pickle", {"path": str(pkl)}, trust_pickle=True)
    assert m.weight_files[str(pkl)] and m.shape == (3, 8, 8)


@pytest.mark.parametrize("case, message", [
    ("untrusted", "pass --trust-pickle"),
    ("missing", "no such file"),
    ("not-a-pickle", "is not a readable network pickle"),
    ("no-edm-code", "put a checkout of NVlabs/edm"),
    ("not-a-network", "expected an EDM snapshot"),
])
def test_bad_edm_imports_exit_2_with_one_message(tmp_path, monkeypatch, case, message):
    path = tmp_path / "net.pkl"
    if case in ("untrusted", "no-edm-code"):
        monkeypatch.syspath_prepend(str(STANDIN))
        _snapshot(tmp_path).rename(path)
        for name in [n for n in sys.modules if n.startswith(("training", "torch_utils", "_imported_module_"))]:
            del sys.modules[name]
        if case == "no-edm-code":
            monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(STANDIN)])
    elif case == "not-a-pickle":
        path.write_bytes(b"not a pickle")
    elif case == "not-a-network":
        path.write_bytes(pickle.dumps({"weights": [1, 2]}))
    args = ["import", "edm", str(path), "--out", str(tmp_path / "out")] + ([] if case == "untrusted" else ["--trust-pickle"])
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 2, res.output
    assert message in res.output and "Traceback" not in res.output
