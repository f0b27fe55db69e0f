"""Image datasets read from local files: scikit-image's bundled LFW subset and image folders.

* ``lfw``: the 100 face crops (25x25 grey) of ``skimage.data.lfw_subset()`` (Labeled Faces in the
  Wild; the other 100 images of that array are non-faces and are not used), cropped to 24x24 so two
  UNet levels divide the size; the last 10 faces are held out. Needs the optional extra
  ``pip install sampler-bench[images]`` (scikit-image).
* ``folder``: every PNG/JPEG/BMP/WebP file under a directory (sorted by path), resized to a square
  ``resolution`` with Pillow; every ``test_every``-th file is held out.

Values are mapped to [-1, 1].
"""

from __future__ import annotations

from pathlib import Path

import torch

from .base import Dataset

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def lfw(test_size: int = 10) -> Dataset:
    try:
        from skimage.data import lfw_subset
    except ImportError:
        raise ValueError("the lfw dataset needs scikit-image: pip install 'sampler-bench[images]' "
                         "(or pip install scikit-image)") from None
    faces = torch.as_tensor(lfw_subset()[:100], dtype=torch.float32)[:, :24, :24].unsqueeze(1)  # [100, 1, 24, 24] in [0, 1]
    if not 1 <= test_size < faces.shape[0]:
        raise ValueError(f"lfw: test_size must be between 1 and {faces.shape[0] - 1}, got {test_size}")
    return Dataset("lfw", faces[:-test_size], faces[-test_size:], {"name": "lfw", "test_size": test_size},
                   scale=2.0, offset=-1.0, description="scikit-image LFW subset: 100 grey faces, 24x24")


def folder(path: str, resolution: int = 32, channels: int = 3, test_every: int = 10) -> Dataset:
    """Images under ``path`` as [channels, resolution, resolution] uint8, mapped to [-1, 1]."""
    from PIL import Image

    root = Path(path).expanduser()
    if not root.is_dir():
        raise ValueError(f"image folder {str(root)!r} does not exist or is not a directory")
    if channels not in (1, 3):
        raise ValueError(f"image folder: channels must be 1 or 3, got {channels}")
    if resolution < 1 or test_every < 2:
        raise ValueError("image folder: resolution must be >= 1 and test_every >= 2")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if len(files) < 2:
        raise ValueError(f"image folder {str(root)!r} holds {len(files)} images ({', '.join(IMAGE_SUFFIXES)}); need at least 2")
    mode = "L" if channels == 1 else "RGB"
    arrays = []
    for f in files:
        with Image.open(f) as im:
            im = im.convert(mode).resize((resolution, resolution), Image.Resampling.BICUBIC)
            t = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8).reshape(resolution, resolution, channels)
            arrays.append(t.permute(2, 0, 1))
    x = torch.stack(arrays)
    test = torch.arange(len(files)) % test_every == test_every - 1
    if not test.any():
        test[-1] = True
    return Dataset("folder", x[~test], x[test],
                   {"name": "folder", "path": str(root), "resolution": resolution, "channels": channels, "test_every": test_every},
                   scale=2 / 255, offset=-1.0, description=f"{len(files)} images from {root}")
