"""The ICIIA module (docs/methods.md 1.2) and the two ways a phone runs it.

``ICIIA`` attends from a target feature h over ``[h; H]``, H the features of
the client's recent unlabelled images, with partitioned, shuffled Q/K/V/O
projections, then residual + LayerNorm and the classifier.

On the device:
- ``ICIIAOnDevice`` keeps the raw features H (n x d) and projects all of them
  through K and V for every image: O(n d^2 / P) per image.
- ``ICIIAWithKVCache`` keeps K(H) and V(H) instead. The projections act row by
  row, so ``K([h; H]) = [K(h); K(H)]``: each image's k and v are computed once,
  when it is seen, and handed to the app, which appends them to its caches. An
  image then costs O(d^2 / P) for its own projections plus O(n d) for the
  attention. Same logits.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from dcx.errors import DcxError
from dcx.models.mobilenetv2 import MobileNetV2
from dcx.models.partitioned_linear import PartitionedLinear


class ICIIA(nn.Module):
    """Multi-head attention of the target feature over ``[h; H]``, residual + LayerNorm, then the classifier."""

    def __init__(self, d: int, heads: int, partitions: int, num_classes: int):
        super().__init__()
        if d % heads:
            raise DcxError(f"ICIIA: feature_dim={d} must be divisible by heads={heads}")
        self.d, self.heads = d, heads
        self.q, self.k, self.v, self.o = (PartitionedLinear(d, d, partitions, shuffle=True) for _ in range(4))
        self.norm = nn.LayerNorm(d)
        self.classifier = nn.Linear(d, num_classes)

    @property
    def partitions(self) -> int:
        return self.q.partitions

    def attend(self, q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """Multi-head attention of queries [B, d] over keys and values [B, m, d]; returns [B, d]."""
        b, d = q.shape
        per_head = lambda t: t.reshape(b, -1, self.heads, d // self.heads).transpose(1, 2)  # noqa: E731
        scores = per_head(q) @ per_head(keys).transpose(-1, -2) / (d // self.heads) ** 0.5  # [B, heads, 1, m]
        return (torch.softmax(scores, -1) @ per_head(values)).transpose(1, 2).reshape(b, d)

    def head(self, h: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        """Residual, LayerNorm and the classifier."""
        return self.classifier(self.norm(h + self.o(attended)))

    def forward(self, h: torch.Tensor, cache: torch.Tensor) -> torch.Tensor:
        """h: [B, d] targets; cache: [B, n, d] each target's client cache of raw features."""
        keys_in = torch.cat([h.unsqueeze(1), cache], 1)  # [B, n+1, d]
        return self.head(h, self.attend(self.q(h), self.k(keys_in), self.v(keys_in)))


class ICIIAOnDevice(nn.Module):
    """Backbone + ICIIA over the client's cache of raw features; also returns h for the app's cache."""

    def __init__(self, backbone: nn.Module, iciia: ICIIA):
        super().__init__()
        self.backbone, self.iciia = backbone, iciia

    def forward(self, image: torch.Tensor, cache: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.backbone.features(image)
        logits = self.iciia(h, cache.unsqueeze(0).expand(h.shape[0], -1, -1))
        return logits, h


class ICIIAWithKVCache(nn.Module):
    """Backbone + ICIIA over cached keys and values: one image in, its logits and its own k, v out.

    Inputs: ``image`` [1, C, H, W], ``k_cache`` and ``v_cache`` [n, d] (K and V of the client's recent images'
    features). Outputs: ``logits`` [1, classes], ``k_new`` and ``v_new`` [d] (this image's), which the app appends
    to its caches (FIFO). The attention runs over ``[k_new; k_cache]`` and ``[v_new; v_cache]``, as the reference
    attends over ``[h; H]``, so the logits are the reference's.
    """

    def __init__(self, backbone: nn.Module, iciia: ICIIA):
        super().__init__()
        self.backbone, self.iciia = backbone, iciia

    def forward(self, image: torch.Tensor, k_cache: torch.Tensor,
                v_cache: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if image.shape[0] != 1:
            raise DcxError(f"ICIIAWithKVCache takes one image per call (its k, v join the cache before the next), "
                           f"got a batch of {image.shape[0]}")
        m = self.iciia
        h = self.backbone(image)  # [1, d]: the backbone here is a feature extractor
        k_new, v_new = m.k(h), m.v(h)
        attended = m.attend(m.q(h), torch.cat([k_new, k_cache]).unsqueeze(0), torch.cat([v_new, v_cache]).unsqueeze(0))
        return m.head(h, attended), k_new[0], v_new[0]

    def encode(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """K and V rows of raw features [m, d] (to fill caches from features computed elsewhere)."""
        return self.iciia.k(features), self.iciia.v(features)


class MobileNetV2Features(nn.Module):
    """MobileNetV2 up to its pooled feature h (d = 1280), the input of its classifier; RGB at any size."""

    def __init__(self, model: MobileNetV2):
        super().__init__()
        self.layers = model.features

    def features(self, image: torch.Tensor) -> torch.Tensor:
        return torch.flatten(F.adaptive_avg_pool2d(self.layers(image), 1), 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.features(image)


def forward_flops(module: nn.Module, *inputs: torch.Tensor) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(*inputs)
    return counter.get_total_flops()


def iciia_flops_overhead(model: nn.Module, backbone: nn.Module, image: torch.Tensor, modules: Sequence[ICIIA],
                         cache_sizes: Sequence[int]) -> list[dict[str, float]]:
    """FLOPs that ICIIA adds to ``model`` (the backbone with its own classifier) per image, in percent.

    One row per ICIIA module (its P) and cache size n: ``cached`` for ``ICIIAWithKVCache`` (the device's
    formulation), ``reference`` for the backbone's features then ``ICIIA.forward(h, H)``, which projects the n
    cached features again for every image. ICIIA's classifier replaces the model's (same size), so the overhead
    is the attention and its projections.
    """
    base = forward_flops(model, image)
    features = forward_flops(backbone, image)
    with torch.no_grad():
        h = backbone(image)
    rows = []
    for iciia in modules:
        for n in cache_sizes:
            kv = torch.zeros(n, iciia.d)
            cached = features + forward_flops(ICIIAWithKVCache(nn.Identity(), iciia), h, kv, kv)
            reference = features + forward_flops(iciia, h, torch.zeros(1, n, iciia.d))
            rows.append({"partitions": iciia.partitions, "cache_size": n,
                         "cached": 100.0 * (cached - base) / base, "reference": 100.0 * (reference - base) / base})
    return rows
