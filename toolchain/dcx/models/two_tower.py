"""A two-tower recommender (YouTube/DSSM-style retrieval): a user tower and an item tower, each an embedding
table and an MLP, scored by the dot product of the two vectors (a logit, trained with binary cross-entropy).
Randomly initialised."""

from __future__ import annotations

import torch
from torch import nn

from dcx.models.registry import Architecture, Size, register
from dcx.models.tasks import Recommendation


class Tower(nn.Module):
    def __init__(self, rows: int, dim: int, hidden: int, out: int):
        super().__init__()
        self.embedding = nn.Embedding(rows, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, out))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.embedding(ids))


class TwoTower(nn.Module):
    def __init__(self, num_users: int, num_items: int, dim: int = 64, hidden: int = 128, out: int = 64):
        super().__init__()
        self.user = Tower(num_users, dim, hidden, out)
        self.item = Tower(num_items, dim, hidden, out)

    def forward(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        return (self.user(user) * self.item(item)).sum(-1)

    def blocks(self) -> list[nn.Module]:
        """Input to output, the units that fine-tuning the last k blocks trains: each depth of both towers."""
        return [nn.ModuleList([self.user.embedding, self.item.embedding]),
                *(nn.ModuleList([u, i]) for u, i in zip(self.user.mlp, self.item.mlp) if isinstance(u, nn.Linear))]


register(Architecture(
    "two_tower", "Two-tower recommender: user and item embeddings + MLPs, dot-product score, BCE loss", TwoTower,
    full=Size(Recommendation(num_users=20_000, num_items=50_000), batch=64),
    quick=Size(Recommendation(num_users=50, num_items=80), batch=4, model={"dim": 8, "hidden": 16, "out": 8})))
