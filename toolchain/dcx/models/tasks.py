"""What a registered architecture is trained on: the shape of its inputs, its targets and its loss.

A task samples random inputs and targets at a batch size (a coverage check asks whether every format exports,
runs and trains an architecture as PyTorch does, not how well it learns, so random data serves) and wraps a
model into the scalar-loss module a training program steps (``TaskLoss``). ``model_args`` are the sizes a model's
constructor must agree with (classes, image size, vocabulary, sequence length, users and items).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class Task:
    model_inputs: ClassVar[tuple[str, ...]]  # what the model takes; the training program takes these + "label"
    outputs: ClassVar[tuple[str, ...]]

    def model_args(self) -> dict[str, int]:
        raise NotImplementedError

    def sample(self, batch: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
        """Random model inputs, then the label, for ``batch`` examples."""
        raise NotImplementedError

    def loss(self, output: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


@dataclass(frozen=True)
class ImageClassification(Task):
    image_size: int
    num_classes: int
    model_inputs: ClassVar = ("image",)
    outputs: ClassVar = ("logits",)

    def model_args(self) -> dict[str, int]:
        return {"num_classes": self.num_classes, "image_size": self.image_size}

    def sample(self, batch: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
        image = torch.randn(batch, 3, self.image_size, self.image_size, generator=generator)
        return image, torch.randint(0, self.num_classes, (batch,), generator=generator)

    def loss(self, output: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(output, label)


@dataclass(frozen=True)
class Recommendation(Task):
    """Click prediction from a user id and an item id: a logit per pair, binary cross-entropy."""

    num_users: int
    num_items: int
    model_inputs: ClassVar = ("user", "item")
    outputs: ClassVar = ("score",)

    def model_args(self) -> dict[str, int]:
        return {"num_users": self.num_users, "num_items": self.num_items}

    def sample(self, batch: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
        user = torch.randint(0, self.num_users, (batch,), generator=generator)
        item = torch.randint(0, self.num_items, (batch,), generator=generator)
        return user, item, torch.randint(0, 2, (batch,), generator=generator).float()

    def loss(self, output: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(output, label)


@dataclass(frozen=True)
class TextClassification(Task):
    vocab_size: int
    seq_len: int
    num_classes: int
    model_inputs: ClassVar = ("tokens",)
    outputs: ClassVar = ("logits",)

    def model_args(self) -> dict[str, int]:
        return {"vocab_size": self.vocab_size, "seq_len": self.seq_len, "num_classes": self.num_classes}

    def sample(self, batch: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
        tokens = torch.randint(0, self.vocab_size, (batch, self.seq_len), generator=generator)
        return tokens, torch.randint(0, self.num_classes, (batch,), generator=generator)

    def loss(self, output: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(output, label)


class TaskLoss(nn.Module):
    """``model`` and its task's loss: ``(*model inputs, label) -> scalar``, what a training program steps."""

    def __init__(self, model: nn.Module, task: Task):
        super().__init__()
        self.model, self.task = model, task

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        *x, label = inputs
        return self.task.loss(self.model(*x), label)
