"""A small CNN classifier of the 8x8 digits whose penultimate layer is the "digits-classifier" feature
space, so sweeps can report a Fréchet distance on digits (the FID recipe of Heusel et al., arXiv
1706.08500, with a domain classifier in place of Inception, as in the "FD with a dataset-specific
network" practice of e.g. Stein et al., arXiv 2306.04675).

It is trained on the digits *training* split only (with +-1 pixel shifts), its weights are committed
as ``sampler_bench/assets/digits_classifier.safetensors`` (with the held-out accuracy in the file's
metadata) and loaded lazily, when a sweep first asks for the extractor. Retrain with::

    python -m sampler_bench.data.digits_classifier            # writes the asset, prints the accuracy
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

NAME = "digits-classifier"
ASSET = "digits_classifier.safetensors"
FEATURES = 64


class DigitsClassifier(nn.Module):
    """conv 32 -> conv 64 (stride 2) -> conv 64 -> linear 64 (features) -> linear 10."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, stride=2, padding=1)
        self.conv3 = nn.Conv2d(64, 64, 3, padding=1)
        self.fc = nn.Linear(64 * 4 * 4, FEATURES)
        self.head = nn.Linear(FEATURES, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 1, 8, 8] or [B, 64] in [-1, 1] -> [B, 64] penultimate activations."""
        x = x.reshape(x.shape[0], 1, 8, 8).to(self.fc.weight.dtype)
        h = F.silu(self.conv1(x))
        h = F.silu(self.conv2(h))
        h = F.silu(self.conv3(h))
        return F.silu(self.fc(h.flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def asset_path() -> Path:
    return Path(str(resources.files("sampler_bench") / "assets" / ASSET))


def load_classifier(path: str | None = None) -> DigitsClassifier:
    """The committed classifier (or the one at ``path``), in eval mode."""
    from safetensors.torch import load_file

    p = Path(path) if path else asset_path()
    if not p.exists():
        raise ValueError(f"digits classifier weights not found at {p}; run `python -m sampler_bench.data.digits_classifier`")
    net = DigitsClassifier()
    net.load_state_dict(load_file(str(p)))
    return net.eval()


def metadata(path: str | None = None) -> dict:
    """The training record stored with the weights (held-out accuracy, steps, seed)."""
    from safetensors import safe_open

    with safe_open(str(path or asset_path()), "pt") as f:
        return json.loads((f.metadata() or {}).get("record", "{}"))


def _extractor(path: str | None = None):
    net = load_classifier(path)
    return net.features


def accuracy(net: DigitsClassifier, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((net(x).argmax(1) == y).float().mean())


def _shift(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random +-1 pixel translations (background value -1), one per image."""
    padded = F.pad(x, (1, 1, 1, 1), value=-1.0)
    dx = torch.randint(0, 3, (x.shape[0],), generator=g).tolist()
    dy = torch.randint(0, 3, (x.shape[0],), generator=g).tolist()
    return torch.stack([padded[i, :, dy[i]:dy[i] + 8, dx[i]:dx[i] + 8] for i in range(x.shape[0])])


def train_classifier(steps: int = 3000, batch: int = 128, lr: float = 2e-3, seed: int = 0) -> tuple[DigitsClassifier, dict]:
    """Train on the digits training split; returns the net and its record (held-out accuracy)."""
    from .digits import digits

    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    data = digits()
    x, y = data.train(), data.train_labels
    net = DigitsClassifier()
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    net.train()
    for _ in range(steps):
        idx = torch.randint(x.shape[0], (batch,), generator=g)
        loss = F.cross_entropy(net(_shift(x[idx], g)), y[idx], label_smoothing=0.05)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    net.eval()
    record = {"test_accuracy": accuracy(net, data.test(), data.test_labels), "train_accuracy": accuracy(net, x, y),
              "n_train": int(x.shape[0]), "n_test": int(data.test_raw.shape[0]), "steps": steps, "batch": batch,
              "lr": lr, "seed": seed, "torch": torch.__version__}
    return net, record


def save_classifier(net: DigitsClassifier, record: dict, path: str | Path) -> None:
    from safetensors.torch import save_file

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path), metadata={"record": json.dumps(record)})


if __name__ == "__main__":  # pragma: no cover - retraining the committed asset
    import time

    t0 = time.time()
    net, rec = train_classifier()
    rec["train_seconds"] = round(time.time() - t0, 1)
    save_classifier(net, rec, asset_path())
    print(json.dumps(rec, indent=2))
