"""CoDA: cloud-coordinated data augmentation for on-device recommendation.

Roles (DESIGN.md 1.3):
- cloud: trains a global recommender on the pool of all users' samples; for a
  user, coarse-matches candidate samples (those of the nearest users by
  embedding) and sends them down.
- device: trains a personalized *sample classifier* that separates the user's
  local samples from the retrieved ones, keeps the retrieved samples it scores
  as local-like, and fine-tunes the recommender on local + kept samples.
Data: MovieLens-100K, each user's interactions split by time into cloud
history, recent on-device samples and held-out latest ones.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import partial
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dcx.data.movielens import GENRES, MovieLens, load_movielens
from dcx.data.partition import temporal_split
from dcx.programs import SGD, DeviceProgram, freeze
from dcx.errors import DcxError
from dcx.recipes import DataUsed, Predict, TrainedModules, register_recipe
from dcx.training import fit, predict, roc_auc, seed_everything


@dataclass(frozen=True)
class CoDAConfig:
    dim: int = 16  # embedding size
    hidden: int = 32
    split: tuple[float, float, float] = (0.6, 0.2, 0.2)  # cloud history, on-device recent, held-out latest
    global_epochs: int = 4
    neighbours: int = 10  # coarse matching: users whose samples are retrieved
    retrieved: int = 200  # samples sent down per user
    keep_fraction: float = 0.5  # fine filtering: share of retrieved samples kept
    classifier_epochs: int = 20
    device_epochs: int = 5
    device_lr: float = 0.05
    batch_size: int = 32


# ---------------------------------------------------------------- models

class GlobalRecommender(nn.Module):
    """CTR model: user, item and genre embeddings -> MLP -> logit of 'liked'."""

    def __init__(self, num_users: int, num_items: int, dim: int, hidden: int):
        super().__init__()
        self.user = nn.Embedding(num_users, dim)
        self.item = nn.Embedding(num_items, dim)
        self.genre = nn.Linear(len(GENRES), dim, bias=False)
        self.mlp = nn.Sequential(nn.Linear(3 * dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        for emb in (self.user, self.item):
            nn.init.normal_(emb.weight, std=0.1)

    def score(self, user_vec: torch.Tensor, item: torch.Tensor, genres: torch.Tensor) -> torch.Tensor:
        return self.mlp(torch.cat([user_vec, self.item(item), self.genre(genres)], 1)).squeeze(1)

    def forward(self, user: torch.Tensor, item: torch.Tensor, genres: torch.Tensor) -> torch.Tensor:
        return self.score(self.user(user), item, genres)


class PersonalRecommender(nn.Module):
    """The on-device model of one user: its own user vector, the frozen item table, trainable genre map and MLP."""

    def __init__(self, model: GlobalRecommender, user: int):
        super().__init__()
        self.user_vec = nn.Parameter(model.user.weight[user].detach().clone().unsqueeze(0))
        self.item = freeze(copy.deepcopy(model.item))
        self.genre = copy.deepcopy(model.genre)
        self.mlp = copy.deepcopy(model.mlp)

    def forward(self, item: torch.Tensor, genres: torch.Tensor) -> torch.Tensor:
        u = self.user_vec.expand(item.shape[0], -1)
        return self.mlp(torch.cat([u, self.item(item), self.genre(genres)], 1)).squeeze(1)


class SampleClassifier(nn.Module):
    """Local (1) vs retrieved (0) from a sample's item embedding (frozen), genres and label."""

    def __init__(self, item_table: nn.Embedding, hidden: int):
        super().__init__()
        self.item = freeze(copy.deepcopy(item_table))
        self.mlp = nn.Sequential(nn.Linear(item_table.embedding_dim + len(GENRES) + 1, hidden), nn.ReLU(),
                                 nn.Linear(hidden, 1))

    def forward(self, item: torch.Tensor, genres: torch.Tensor, liked: torch.Tensor) -> torch.Tensor:
        return self.mlp(torch.cat([self.item(item), genres, liked.unsqueeze(1)], 1)).squeeze(1)


class BCELoss(nn.Module):
    """A training program: ``BCE(model(*inputs), target)``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, *inputs_and_target: torch.Tensor) -> torch.Tensor:
        *inputs, target = inputs_and_target
        return F.binary_cross_entropy_with_logits(self.model(*inputs), target)


# ---------------------------------------------------------------- data

@dataclass
class Samples:
    """A set of interactions: (item, genres, liked) plus the user it came from."""

    user: torch.Tensor
    item: torch.Tensor
    genres: torch.Tensor
    liked: torch.Tensor

    def __len__(self) -> int:
        return len(self.item)

    @classmethod
    def of(cls, ml: MovieLens, mask: np.ndarray) -> "Samples":
        item = ml.item[mask]
        return cls(torch.from_numpy(ml.user[mask]), torch.from_numpy(item), torch.from_numpy(ml.item_genres[item]),
                   torch.from_numpy(ml.label[mask]))

    def where(self, keep: torch.Tensor | np.ndarray) -> "Samples":
        keep = torch.as_tensor(keep)
        return Samples(self.user[keep], self.item[keep], self.genres[keep], self.liked[keep])

    def concat(self, other: "Samples") -> "Samples":
        return Samples(*(torch.cat([a, b]) for a, b in
                         zip((self.user, self.item, self.genres, self.liked),
                             (other.user, other.item, other.genres, other.liked))))


@dataclass
class Split:
    ml: MovieLens
    pool: Samples  # the cloud's global pool
    local: Samples  # on-device recent samples (all users; a device sees only its own)
    test: Samples  # held-out latest interactions

    def of_user(self, part: Samples, user: int) -> Samples:
        return part.where(part.user == user)


def make_split(cfg: CoDAConfig) -> Split:
    ml = load_movielens()
    pool, local, test = temporal_split(ml.user, cfg.split)
    return Split(ml, Samples.of(ml, pool), Samples.of(ml, local), Samples.of(ml, test))


# ---------------------------------------------------------------- cloud role

def train_global(split: Split, cfg: CoDAConfig, seed: int = 0) -> GlobalRecommender:
    seed_everything(seed)
    model = GlobalRecommender(split.ml.num_users, split.ml.num_items, cfg.dim, cfg.hidden)
    p = split.pool
    fit(BCELoss(model), list(model.parameters()), (p.user, p.item, p.genres, p.liked), epochs=cfg.global_epochs,
        batch_size=256, lr=3e-3, seed=seed)
    return model.eval()


def coarse_match(model: GlobalRecommender, split: Split, user: int, cfg: CoDAConfig, seed: int = 0) -> Samples:
    """Pool samples of the user's nearest users (cosine on user embeddings), at most ``cfg.retrieved``."""
    with torch.no_grad():
        emb = F.normalize(model.user.weight, dim=1)
        sim = emb @ emb[user]
    sim[user] = -2.0
    near = torch.topk(sim, cfg.neighbours).indices
    candidates = split.pool.where(torch.isin(split.pool.user, near))
    gen = torch.Generator().manual_seed(seed + user)
    pick = torch.randperm(len(candidates), generator=gen)[: cfg.retrieved]
    return candidates.where(pick)


# ---------------------------------------------------------------- device role

def train_classifier(model: GlobalRecommender, local: Samples, retrieved: Samples, cfg: CoDAConfig,
                     seed: int = 0) -> SampleClassifier:
    """Learn the boundary of the local distribution: local = 1, retrieved = 0 (classes balanced by weighting)."""
    seed_everything(seed)
    clf = SampleClassifier(model.item, cfg.hidden)
    both = local.concat(retrieved)
    target = torch.cat([torch.ones(len(local)), torch.zeros(len(retrieved))])
    weight = torch.where(target > 0, len(both) / (2 * len(local)), len(both) / (2 * len(retrieved)))
    fit(lambda i, g, l, t, w: F.binary_cross_entropy_with_logits(clf(i, g, l), t, weight=w),
        [p for p in clf.parameters() if p.requires_grad], (both.item, both.genres, both.liked, target, weight),
        epochs=cfg.classifier_epochs, batch_size=cfg.batch_size, lr=3e-3, seed=seed)
    return clf.eval()


def classifier_scores(clf: SampleClassifier, s: Samples) -> torch.Tensor:
    return torch.sigmoid(predict(clf, s.item, s.genres, s.liked))


def classifier_holdout_auc(model: GlobalRecommender, local: Samples, retrieved: Samples, cfg: CoDAConfig,
                           seed: int = 0) -> float:
    """Train on half of each side, report the AUC of local-vs-retrieved on the other halves."""
    gen = torch.Generator().manual_seed(seed)
    pl, pr = torch.randperm(len(local), generator=gen), torch.randperm(len(retrieved), generator=gen)
    hl, hr = len(local) // 2, len(retrieved) // 2
    clf = train_classifier(model, local.where(pl[:hl]), retrieved.where(pr[:hr]), cfg, seed)
    s_local, s_retrieved = classifier_scores(clf, local.where(pl[hl:])), classifier_scores(clf, retrieved.where(pr[hr:]))
    labels = np.r_[np.ones(len(s_local)), np.zeros(len(s_retrieved))]
    return roc_auc(torch.cat([s_local, s_retrieved]).numpy(), labels)


def filter_retrieved(clf: SampleClassifier, retrieved: Samples, cfg: CoDAConfig) -> Samples:
    """Keep the retrieved samples the classifier scores as most local-like."""
    scores = classifier_scores(clf, retrieved)
    keep = torch.topk(scores, max(1, int(len(retrieved) * cfg.keep_fraction))).indices
    return retrieved.where(keep)


def personalize(model: GlobalRecommender, user: int, train: Samples, cfg: CoDAConfig,
                seed: int = 0) -> PersonalRecommender:
    """On-device SGD fine-tuning of the user's recommender on ``train``."""
    personal = PersonalRecommender(model, user)
    fit(BCELoss(personal), [p for p in personal.parameters() if p.requires_grad],
        (train.item, train.genres, train.liked), epochs=cfg.device_epochs, batch_size=cfg.batch_size,
        lr=cfg.device_lr, seed=seed, optimizer="sgd")
    return personal.eval()


def user_auc(model: nn.Module, test: Samples) -> float:
    return roc_auc(predict(model, test.item, test.genres).numpy(), test.liked.numpy())


# ---------------------------------------------------------------- device programs

@register_recipe
class CoDA:
    name = "coda"
    summary = "on-device sample classifier filters cloud-retrieved samples; personalized recommender fine-tuning"
    Config = CoDAConfig
    QUICK = {"global_epochs": 1}

    def __init__(self, cfg: CoDAConfig | None = None):
        self.cfg = cfg or CoDAConfig()

    @property
    def program_names(self) -> tuple[str, ...]:
        return tuple(f"{self.name}.{p}" for p in ("classifier.train", "classifier.infer", "recommender.train",
                                                  "recommender.infer"))

    def build_modules(self, seed: int = 0) -> dict[str, nn.Module]:
        """A fresh global model of MovieLens-100K's shape (943 users, 1,682 items)."""
        seed_everything(seed)
        return {"global": GlobalRecommender(943, 1682, self.cfg.dim, self.cfg.hidden)}

    def train(self, seed: int = 0, progress: Callable[[str], None] = lambda s: None) -> TrainedModules:
        """The cloud phase: the global recommender on the pool (every user's earlier interactions)."""
        split = make_split(self.cfg)
        progress(f"training the global recommender on {len(split.pool)} pool interactions "
                 f"({self.cfg.global_epochs} epochs)")
        model = train_global(split, self.cfg, seed)
        test = split.test
        scores = predict(model, test.user, test.item, test.genres).numpy()
        users = torch.unique(test.user).tolist()
        per_user = [roc_auc(scores[(test.user == u).numpy()], test.liked[test.user == u].numpy()) for u in users]
        metrics = {"auc_test": roc_auc(scores, test.liked.numpy()),
                   "auc_test_mean_per_user": float(np.nanmean(per_user))}
        data = [DataUsed("movielens-100k", "pool", len(split.pool), "global model training (earliest 60% per user)"),
                DataUsed("movielens-100k", "test", len(test), "held-out metrics (latest 20% per user)")]
        return TrainedModules({"global": model}, metrics, data)

    def device_programs(self, seed: int = 0, modules: dict[str, nn.Module] | None = None,
                        user: int = 0) -> list[DeviceProgram]:
        """The sample classifier and the personal recommender of ``user`` (a MovieLens user index)."""
        cfg = self.cfg
        model = (modules if modules is not None else self.build_modules(seed))["global"]
        if not 0 <= user < model.user.num_embeddings:
            raise DcxError(f"--user {user}: the global model has users 0..{model.user.num_embeddings - 1}")
        seed_everything(seed)
        num_items = model.item.num_embeddings
        gen = torch.Generator().manual_seed(seed)
        b = cfg.batch_size
        item = torch.randint(0, num_items, (b,), generator=gen, dtype=torch.int32)
        genres = (torch.rand(b, len(GENRES), generator=gen) < 0.2).float()
        liked = (torch.rand(b, generator=gen) < 0.5).float()
        target = (torch.rand(b, generator=gen) < 0.5).float()
        clf = SampleClassifier(model.item, cfg.hidden)
        rec = PersonalRecommender(model, user)
        sgd = SGD(cfg.device_lr)
        batches = partial(self.user_batches, user)
        name = self.name
        return [
            DeviceProgram(f"{name}.classifier.train", "train", BCELoss(copy.deepcopy(clf)),
                          (item, genres, liked, target), ("item", "genres", "liked", "is_local"), ("loss",),
                          "sample classifier step: local (1) vs retrieved (0), item table frozen", optimizer=sgd,
                          batches=lambda steps, s: [b[:4] for b in batches(steps, s)], recipe=name),
            DeviceProgram(f"{name}.classifier.infer", "infer", freeze(copy.deepcopy(clf)), (item, genres, liked),
                          ("item", "genres", "liked"), ("logit",), "score retrieved samples as local-like",
                          recipe=name),
            DeviceProgram(f"{name}.recommender.train", "train", BCELoss(copy.deepcopy(rec)), (item, genres, liked),
                          ("item", "genres", "liked"), ("loss",),
                          f"personalized recommender step (user {user}) on local + kept samples, item table frozen",
                          optimizer=sgd, batches=lambda steps, s: [b[:3] for b in batches(steps, s)], recipe=name),
            DeviceProgram(f"{name}.recommender.infer", "infer", freeze(copy.deepcopy(rec)), (item, genres),
                          ("item", "genres"), ("logit",), f"personalized 'liked' score (user {user})", recipe=name),
        ]

    def score(self, program_name: str, predict: Predict, seed: int = 0, user: int = 0) -> dict[str, float]:
        """``coda.recommender.infer`` on the user's held-out latest interactions: AUC (batches padded to size)."""
        if program_name != f"{self.name}.recommender.infer":
            return {}
        split = make_split(self.cfg)
        test = split.of_user(split.test, user)
        b = self.cfg.batch_size
        scores = []
        for start in range(0, len(test), b):
            idx = torch.arange(start, min(start + b, len(test)))
            pad = torch.cat([idx, idx[:1].repeat(b - len(idx))])
            out = predict(test.item[pad].int().numpy(), test.genres[pad].numpy())[0]
            scores.append(np.asarray(out).reshape(-1)[: len(idx)])
        return {"auc": roc_auc(np.concatenate(scores), test.liked.numpy()), "samples": float(len(test))}

    def evaluate(self, seed: int = 0, users: int = 10) -> dict[str, float]:
        """CoDA on the most active MovieLens users: classifier separation, and per-user AUC of the baselines."""
        cfg = self.cfg
        split = make_split(cfg)
        model = train_global(split, cfg, seed)
        chosen = torch.argsort(torch.bincount(split.local.user), descending=True)[:users].tolist()
        rows: dict[str, list[float]] = {k: [] for k in ("classifier_auc", "auc_global", "auc_local_only",
                                                        "auc_augmented_unfiltered", "auc_coda")}
        for u in chosen:
            local, test = split.of_user(split.local, u), split.of_user(split.test, u)
            retrieved = coarse_match(model, split, u, cfg, seed)
            rows["classifier_auc"].append(classifier_holdout_auc(model, local, retrieved, cfg, seed))
            kept = filter_retrieved(train_classifier(model, local, retrieved, cfg, seed), retrieved, cfg)
            rows["auc_global"].append(user_auc(PersonalRecommender(model, u).eval(), test))
            rows["auc_local_only"].append(user_auc(personalize(model, u, local, cfg, seed), test))
            rows["auc_augmented_unfiltered"].append(user_auc(personalize(model, u, local.concat(retrieved), cfg, seed), test))
            rows["auc_coda"].append(user_auc(personalize(model, u, local.concat(kept), cfg, seed), test))
        return {k: float(np.nanmean(v)) for k, v in rows.items()}

    def user_batches(self, user: int, steps: int, seed: int = 0) -> list[tuple[torch.Tensor, ...]]:
        """Real MovieLens interactions of ``user``'s recent samples mixed with other users' pool samples:
        (item, genres, liked, is_local) per batch; is_local marks the user's own."""
        split = make_split(self.cfg)
        local = split.of_user(split.local, user)
        if len(local) == 0:
            raise DcxError(f"--user {user}: MovieLens user {user} has no recent on-device interactions; "
                           "choose another user")
        gen = torch.Generator().manual_seed(seed)
        others = split.pool.where(torch.randperm(len(split.pool), generator=gen)[: max(len(local), self.cfg.batch_size)])
        both = local.concat(others)
        is_local = torch.cat([torch.ones(len(local)), torch.zeros(len(others))])
        idx = [torch.randint(0, len(both), (self.cfg.batch_size,), generator=gen) for _ in range(steps)]
        return [(both.item[i].int(), both.genres[i], both.liked[i], is_local[i]) for i in idx]
