"""Fashion-MNIST from the Debian package ``dataset-fashion-mnist`` (IDX files, read offline)."""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from dcx.errors import DcxError

DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
# How a user gets it (a checkout's `make setup` does the first); `dcx info` and the errors below say it.
SETUP_HINT = ("apt-get install dataset-fashion-mnist (Debian), or set "
              "DCX_FASHION_MNIST_DIR to a folder with the four *-ubyte.gz files of Fashion-MNIST")


@dataclass(frozen=True)
class ImageSet:
    """Images as float32 [N, 1, 28, 28] in [0, 1] and int64 labels [N]."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: torch.Tensor | np.ndarray) -> "ImageSet":
        index = torch.as_tensor(index, dtype=torch.long)
        return ImageSet(self.images[index], self.labels[index])


def data_dir() -> Path:
    return Path(os.environ.get("DCX_FASHION_MNIST_DIR", DEFAULT_DIR))


def _read_idx(path: Path) -> np.ndarray:
    if not path.exists():
        raise DcxError(f"Fashion-MNIST file {path} is missing: {SETUP_HINT}")
    with gzip.open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[:2] != b"\x00\x00":
        raise DcxError(f"{path} is not an IDX file (bad magic number): reinstall dataset-fashion-mnist")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise DcxError(f"{path} is truncated ({data.size} of {int(np.prod(shape))} values): reinstall dataset-fashion-mnist")
    return data.reshape(shape)


@lru_cache(maxsize=2)
def load_fashion_mnist(split: str = "train") -> ImageSet:
    """The 60k training or 10k test images."""
    prefix = {"train": "train", "test": "t10k"}.get(split)
    if prefix is None:
        raise DcxError(f"unknown Fashion-MNIST split {split!r}: use 'train' or 'test'")
    root = data_dir()
    images = _read_idx(root / f"{prefix}-images-idx3-ubyte.gz")
    labels = _read_idx(root / f"{prefix}-labels-idx1-ubyte.gz")
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    return ImageSet(x, torch.from_numpy(labels.astype(np.int64)))


def is_available() -> bool:
    return all((data_dir() / f"{p}-images-idx3-ubyte.gz").exists() for p in ("train", "t10k"))


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def as_camera_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """Grey [N, 1, 28, 28] in [0, 1] -> what a phone's ImageNet-style model takes: RGB [N, 3, size, size],
    bilinear-resized, replicated to three channels and normalised with ImageNet's mean and std.

    Applied per batch (224x224 RGB copies of a whole split would not fit in memory)."""
    x = torch.nn.functional.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x.expand(-1, 3, -1, -1) - mean) / std
