"""How samples are dealt out to clients: label skew, class subsets, per-user time splits."""

from __future__ import annotations

import numpy as np

from dcx.errors import DcxError


def dirichlet_label_skew(labels: np.ndarray, num_clients: int, alpha: float, seed: int = 0) -> list[np.ndarray]:
    """Split sample indices so each class is shared among clients by Dirichlet(alpha) proportions.

    Small alpha gives strongly skewed clients; large alpha approaches IID.
    """
    if num_clients < 1 or alpha <= 0:
        raise DcxError(f"dirichlet_label_skew: need num_clients >= 1 and alpha > 0, got {num_clients}, {alpha}")
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    parts: list[list[int]] = [[] for _ in range(num_clients)]
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        share = rng.dirichlet(np.full(num_clients, alpha))
        cuts = (np.cumsum(share)[:-1] * len(idx)).astype(int)
        for k, chunk in enumerate(np.split(idx, cuts)):
            parts[k].extend(chunk.tolist())
    return [np.sort(np.array(p, dtype=np.int64)) for p in parts]


def class_subset_clients(
    labels: np.ndarray, num_clients: int, classes_per_client: int, samples_per_client: int, seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Clients that each see a small random subset of classes: (classes, sample indices) per client."""
    labels = np.asarray(labels)
    all_classes = np.unique(labels)
    if not 1 <= classes_per_client <= len(all_classes):
        raise DcxError(f"classes_per_client must be in 1..{len(all_classes)}, got {classes_per_client}")
    rng = np.random.default_rng(seed)
    by_class = {c: np.flatnonzero(labels == c) for c in all_classes}
    clients = []
    for _ in range(num_clients):
        classes = np.sort(rng.choice(all_classes, classes_per_client, replace=False))
        pool = np.concatenate([by_class[c] for c in classes])
        clients.append((classes, rng.choice(pool, samples_per_client, replace=len(pool) < samples_per_client)))
    return clients


def temporal_split(user: np.ndarray, fractions: tuple[float, ...]) -> list[np.ndarray]:
    """Per-user split by time: each user's interactions (already sorted by time) are cut by ``fractions``.

    Returns one boolean mask per fraction, e.g. (0.6, 0.2, 0.2) -> cloud history, on-device recent, held-out latest.
    """
    if abs(sum(fractions) - 1.0) > 1e-6 or any(f <= 0 for f in fractions):
        raise DcxError(f"temporal_split fractions must be positive and sum to 1, got {fractions}")
    user = np.asarray(user)
    masks = [np.zeros(len(user), dtype=bool) for _ in fractions]
    starts = np.flatnonzero(np.r_[True, user[1:] != user[:-1]])
    ends = np.r_[starts[1:], len(user)]
    bounds = np.cumsum((0.0,) + tuple(fractions))
    for s, e in zip(starts, ends):
        n = e - s
        cut = np.round(bounds * n).astype(int)
        for k, mask in enumerate(masks):
            mask[s + cut[k] : s + cut[k + 1]] = True
    return masks
