"""A GRU text classifier: token embedding, a one-layer ``nn.GRU`` over the sequence, a linear head on the last
hidden state (cross-entropy). Randomly initialised."""

from __future__ import annotations

import torch
from torch import nn

from dcx.models.registry import Architecture, Size, register
from dcx.models.tasks import TextClassification


class GRUClassifier(nn.Module):
    def __init__(self, vocab_size: int, num_classes: int, dim: int = 128, hidden: int = 256):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, dim)
        self.gru = nn.GRU(dim, hidden, batch_first=True)
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        _, last = self.gru(self.embedding(tokens))
        return self.head(last[-1])

    def blocks(self) -> list[nn.Module]:
        """Input to output, the units that fine-tuning the last k blocks trains."""
        return [self.embedding, self.gru, self.head]


register(Architecture(
    "gru_text", "GRU text classifier: embedding, nn.GRU, linear head, cross-entropy", GRUClassifier,
    full=Size(TextClassification(vocab_size=20_000, seq_len=64, num_classes=4), batch=16),
    quick=Size(TextClassification(vocab_size=100, seq_len=8, num_classes=4), batch=4,
               model={"dim": 16, "hidden": 16})))
