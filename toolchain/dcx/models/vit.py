"""A ViT-Tiny-style vision transformer (Dosovitskiy et al. 2021; DeiT-Tiny's sizes): a strided-convolution patch
embedding, a class token and learned positions, pre-norm encoder blocks of ``nn.MultiheadAttention`` and a GELU
MLP with LayerNorm, the class token's LayerNorm-ed feature into a linear head. Randomly initialised."""

from __future__ import annotations

import torch
from torch import nn

from dcx.models.registry import Architecture, Size, register
from dcx.models.tasks import ImageClassification


class PatchEmbedding(nn.Module):
    """Image -> tokens: non-overlapping patches projected by a strided convolution, a class token in front,
    learned positions added."""

    def __init__(self, image_size: int, patch: int, dim: int):
        super().__init__()
        self.project = nn.Conv2d(3, dim, patch, patch)
        self.class_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.positions = nn.Parameter(torch.randn(1, (image_size // patch) ** 2 + 1, dim) * 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.project(x).flatten(2).transpose(1, 2)
        return torch.cat([self.class_token.expand(x.shape[0], -1, -1), x], dim=1) + self.positions


class EncoderBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp), nn.GELU(), nn.Linear(mlp, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm1(x)
        x = x + self.attention(y, y, y, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class ClassTokenHead(nn.Module):
    def __init__(self, dim: int, num_classes: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.norm(x[:, 0]))


class VisionTransformer(nn.Module):
    def __init__(self, num_classes: int = 1000, image_size: int = 224, patch: int = 16, dim: int = 192,
                 depth: int = 12, heads: int = 3, mlp: int = 768):
        super().__init__()
        self.embed = PatchEmbedding(image_size, patch, dim)
        self.encoder = nn.Sequential(*(EncoderBlock(dim, heads, mlp) for _ in range(depth)))
        self.head = ClassTokenHead(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(x)))

    def blocks(self) -> list[nn.Module]:
        """Input to output, the units that fine-tuning the last k blocks trains."""
        return [self.embed, *self.encoder, self.head]


register(Architecture(
    "vit_tiny", "ViT-Tiny-style: patch-embedding conv, class token, LayerNorm, nn.MultiheadAttention, GELU MLP",
    VisionTransformer, full=Size(ImageClassification(224, 1000), batch=8),
    quick=Size(ImageClassification(32, 10), batch=4, model={"patch": 8, "dim": 32, "depth": 2, "heads": 2,
                                                            "mlp": 64})))
