"""Shared training and evaluation loops used by every recipe (cloud and device roles alike)."""

from __future__ import annotations

from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn


def seed_everything(seed: int) -> torch.Generator:
    torch.manual_seed(seed)
    np.random.seed(seed)
    return torch.Generator().manual_seed(seed)


def sgd_step(params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor], lr: float) -> None:
    """The one on-device optimizer step of dcx, in place: ``p -= lr * g``.

    Reference training, the eager benchmark and the Core ML reference interpreter all call this,
    so "one SGD step" means the same arithmetic everywhere.
    """
    with torch.no_grad():
        for p, g in zip(params, grads):
            p.sub_(lr * g)


def minibatches(n: int, batch_size: int, generator: torch.Generator | None, shuffle: bool = True) -> Iterator[torch.Tensor]:
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]


def fit(
    loss_fn: Callable[..., torch.Tensor],
    params: Sequence[nn.Parameter],
    tensors: Sequence[torch.Tensor],
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    optimizer: str = "adam",
) -> list[float]:
    """Minimise ``loss_fn(*batch)`` over minibatches of ``tensors``; returns the mean loss per epoch."""
    opt = torch.optim.Adam(params, lr=lr) if optimizer == "adam" else torch.optim.SGD(params, lr=lr)
    gen = torch.Generator().manual_seed(seed)
    history = []
    for _ in range(epochs):
        total, count = 0.0, 0
        for idx in minibatches(len(tensors[0]), batch_size, gen):
            loss = loss_fn(*(t[idx] for t in tensors))
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
        history.append(total / max(count, 1))
    return history


@torch.no_grad()
def predict(model: Callable[..., torch.Tensor], *inputs: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    outs = [model(*(t[i : i + batch_size] for t in inputs)) for i in range(0, len(inputs[0]), batch_size)]
    return torch.cat(outs)


def accuracy(model: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, labels: torch.Tensor,
             batch_size: int = 1024) -> float:
    return float((predict(model, images, batch_size=batch_size).argmax(1) == labels).float().mean())


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (rank formulation, ties averaged); nan when one class is absent."""
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels).astype(bool)
    pos, neg = labels.sum(), (~labels).sum()
    if pos == 0 or neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):  # average ranks over ties
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[labels].sum() - pos * (pos + 1) / 2) / (pos * neg))
