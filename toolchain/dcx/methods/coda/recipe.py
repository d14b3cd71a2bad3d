"""CoDA: cloud-coordinated data augmentation for on-device recommendation.

Roles (docs/methods.md 1.3):
- cloud: trains a global recommender on the pool of its users' samples; for a
  device's coarse query (a histogram of its local items over item clusters: no
  item ids, no labels), retrieves candidate samples of the pool users with the
  nearest histograms and sends them down.
- device: trains a personalized *sample classifier* that separates the user's
  local samples from the retrieved ones, keeps the retrieved samples it scores
  as local-like, and fine-tunes the recommender on local + kept samples.

Setting (the paper's): the devices are *new* users whom the cloud pool does not
cover at all, each with a few local samples (its earliest interactions); the
rest of each new user's interactions are held out. The global model knows them
only through a cold-start user vector (the mean of the pool users'), on-device
training on a few samples overfits, and augmentation has something to add.
Data: MovieLens-100K.
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
from dcx.optim import SGD
from dcx.programs import DeviceProgram, freeze
from dcx.errors import DcxError
from dcx.methods import DataUsed, Predict, TrainedModules, register_recipe
from dcx.training import fit, predict, roc_auc, seed_everything, sgd_step

MIN_HELD_OUT = 20  # a new user needs at least this many interactions after its local ones


@dataclass(frozen=True)
class CoDAConfig:
    dim: int = 16  # embedding size
    hidden: int = 32
    new_users: int = 200  # users held out of the cloud pool entirely: the devices
    local_samples: int = 15  # a new user's earliest interactions, on its device; the later ones are held out
    global_epochs: int = 4
    clusters: int = 32  # item clusters of the coarse query
    neighbours: int = 10  # coarse matching: pool users whose samples are retrieved
    retrieved: int = 300  # samples sent down per device
    keep_fraction: float = 0.5  # fine filtering: share of retrieved samples kept
    classifier_steps: int = 500  # on-device SGD steps of the sample classifier
    device_steps: int = 200  # on-device SGD steps of a personalization (the same for every training set)
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
    """The cloud's pool, and the new users' local and held-out interactions."""

    ml: MovieLens
    pool: Samples  # every interaction of the users the cloud knows
    local: Samples  # each new user's earliest ``local_samples`` interactions (a device sees only its own)
    test: Samples  # each new user's later interactions, held out
    new_users: list[int]  # MovieLens user indices of the devices, in device order

    def of_user(self, part: Samples, user: int) -> Samples:
        return part.where(part.user == user)


def make_split(cfg: CoDAConfig) -> Split:
    """Hold ``new_users`` users (with enough interactions) out of the pool; the same users for every seed."""
    ml = load_movielens()
    counts = np.bincount(ml.user, minlength=ml.num_users)
    eligible = np.flatnonzero(counts >= cfg.local_samples + MIN_HELD_OUT)
    if not 1 <= cfg.new_users <= len(eligible):
        raise DcxError(f"--set new_users={cfg.new_users}: MovieLens has {len(eligible)} users with at least "
                       f"{cfg.local_samples + MIN_HELD_OUT} interactions (local_samples + {MIN_HELD_OUT}); "
                       f"choose 1..{len(eligible)}")
    new_users = np.sort(np.random.default_rng(0).choice(eligible, cfg.new_users, replace=False))
    starts = np.r_[0, np.cumsum(counts)[:-1]]  # interactions are sorted by user, then time
    position = np.arange(len(ml.user)) - starts[ml.user]
    is_new = np.isin(ml.user, new_users)
    local = is_new & (position < cfg.local_samples)
    return Split(ml, Samples.of(ml, ~is_new), Samples.of(ml, local), Samples.of(ml, is_new & ~local),
                 new_users.tolist())


# ---------------------------------------------------------------- cloud role

def train_global(split: Split, cfg: CoDAConfig, seed: int = 0) -> GlobalRecommender:
    """The global model on the pool; users the pool never saw get the cold-start vector (the mean pool user)."""
    seed_everything(seed)
    model = GlobalRecommender(split.ml.num_users, split.ml.num_items, cfg.dim, cfg.hidden)
    p = split.pool
    fit(BCELoss(model), list(model.parameters()), (p.user, p.item, p.genres, p.liked), epochs=cfg.global_epochs,
        batch_size=256, lr=3e-3, seed=seed)
    known = torch.zeros(model.user.num_embeddings, dtype=torch.bool)
    known[p.user] = True
    with torch.no_grad():
        model.user.weight[~known] = model.user.weight[known].mean(0)
    return model.eval()


def item_clusters(model: GlobalRecommender, cfg: CoDAConfig, seed: int = 0, iterations: int = 30) -> torch.Tensor:
    """The cluster of every item: spherical k-means of the global model's item embeddings (int64 [num_items])."""
    x = F.normalize(model.item.weight.detach(), dim=1)
    gen = torch.Generator().manual_seed(seed)
    centers = x[torch.randperm(len(x), generator=gen)[: cfg.clusters]].clone()
    for _ in range(iterations):
        assign = (x @ centers.T).argmax(1)
        for c in range(len(centers)):
            members = x[assign == c]
            if len(members):
                centers[c] = F.normalize(members.mean(0), dim=0)
    return (x @ centers.T).argmax(1)


def coarse_query(items: torch.Tensor, clusters: torch.Tensor, num_clusters: int) -> torch.Tensor:
    """What a device sends up: the unit-length histogram of its local items over the item clusters."""
    return F.normalize(torch.bincount(clusters[items], minlength=num_clusters).float(), dim=0)


def pool_profiles(split: Split, clusters: torch.Tensor, num_clusters: int) -> torch.Tensor:
    """Every user's coarse query computed from their pool interactions (zero rows for users not in the pool)."""
    counts = torch.zeros(split.ml.num_users, num_clusters)
    counts.index_put_((split.pool.user, clusters[split.pool.item]), torch.ones(len(split.pool)), accumulate=True)
    return F.normalize(counts, dim=1)


def coarse_match(profiles: torch.Tensor, pool: Samples, query: torch.Tensor, cfg: CoDAConfig,
                 seed: int = 0) -> Samples:
    """Pool samples of the ``neighbours`` users whose profiles are nearest the query (cosine), at most
    ``retrieved`` of them."""
    near = torch.topk(profiles @ query, cfg.neighbours).indices
    candidates = pool.where(torch.isin(pool.user, near))
    pick = torch.randperm(len(candidates), generator=torch.Generator().manual_seed(seed))[: cfg.retrieved]
    return candidates.where(pick)


# ---------------------------------------------------------------- device role

def classifier_batches(local: Samples, retrieved: Samples, cfg: CoDAConfig,
                       seed: int = 0) -> list[tuple[torch.Tensor, ...]]:
    """``classifier_steps`` batches (item, genres, liked, is_local), half local, half retrieved (drawn with
    replacement): the classes are balanced however few local samples there are."""
    gen = torch.Generator().manual_seed(seed)
    half = cfg.batch_size // 2
    batches = []
    for _ in range(cfg.classifier_steps):
        a = local.where(torch.randint(0, len(local), (cfg.batch_size - half,), generator=gen))
        b = retrieved.where(torch.randint(0, len(retrieved), (half,), generator=gen))
        both = a.concat(b)
        batches.append((both.item.int(), both.genres, both.liked,
                        torch.cat([torch.ones(len(a)), torch.zeros(len(b))])))
    return batches


def recommender_batches(train: Samples, cfg: CoDAConfig, seed: int = 0) -> list[tuple[torch.Tensor, ...]]:
    """``device_steps`` batches (item, genres, liked) drawn with replacement from ``train``."""
    gen = torch.Generator().manual_seed(seed)
    picks = [train.where(torch.randint(0, len(train), (cfg.batch_size,), generator=gen))
             for _ in range(cfg.device_steps)]
    return [(s.item.int(), s.genres, s.liked) for s in picks]


def sgd_train(loss_module: nn.Module, batches: list[tuple[torch.Tensor, ...]], lr: float) -> None:
    """Eager on-device SGD, in place: the arithmetic of the training programs' step, batch after batch."""
    params = [p for p in loss_module.parameters() if p.requires_grad]
    for batch in batches:
        sgd_step(params, torch.autograd.grad(loss_module(*batch), params), lr)


def new_classifier(model: GlobalRecommender, cfg: CoDAConfig, seed: int = 0) -> SampleClassifier:
    """The classifier every device starts from (its MLP initialised from ``seed``)."""
    seed_everything(seed)
    return SampleClassifier(model.item, cfg.hidden)


def train_classifier(model: GlobalRecommender, local: Samples, retrieved: Samples, cfg: CoDAConfig,
                     seed: int = 0) -> SampleClassifier:
    """Learn the boundary of the local distribution: local = 1, retrieved = 0, on balanced batches."""
    clf = new_classifier(model, cfg, seed)
    sgd_train(BCELoss(clf), classifier_batches(local, retrieved, cfg, seed), cfg.device_lr)
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
    """On-device SGD fine-tuning of the user's recommender: ``device_steps`` batches of ``train``."""
    personal = PersonalRecommender(model, user)
    sgd_train(BCELoss(personal), recommender_batches(train, cfg, seed), cfg.device_lr)
    return personal.eval()


def user_auc(model: nn.Module, test: Samples) -> float:
    return roc_auc(predict(model, test.item, test.genres).numpy(), test.liked.numpy())


# ---------------------------------------------------------------- device programs

@register_recipe
class CoDA:
    name = "coda"
    summary = "on-device sample classifier filters cloud-retrieved samples; personalized recommender fine-tuning"
    Config = CoDAConfig
    QUICK = {"global_epochs": 2}

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
        """The cloud phase: the global recommender on the pool (every interaction of the users it knows)."""
        split = make_split(self.cfg)
        progress(f"training the global recommender on {len(split.pool)} pool interactions "
                 f"({self.cfg.global_epochs} epochs)")
        model = train_global(split, self.cfg, seed)
        test = split.test
        scores = predict(model, test.user, test.item, test.genres).numpy()
        per_user = [roc_auc(scores[(test.user == u).numpy()], test.liked[test.user == u].numpy())
                    for u in split.new_users]
        metrics = {"auc_new_users": roc_auc(scores, test.liked.numpy()),
                   "auc_new_users_mean_per_user": float(np.nanmean(per_user))}
        data = [DataUsed("movielens-100k", "pool", len(split.pool),
                         f"global model training (every user but the {len(split.new_users)} new ones)"),
                DataUsed("movielens-100k", "test", len(test), "held-out metrics (the new users' later interactions)")]
        return TrainedModules({"global": model}, metrics, data)

    def device_programs(self, seed: int = 0, modules: dict[str, nn.Module] | None = None,
                        user: int | None = None) -> list[DeviceProgram]:
        """The sample classifier and the personal recommender of ``user`` (a MovieLens user index; by default the
        first new user)."""
        cfg = self.cfg
        model = (modules if modules is not None else self.build_modules(seed))["global"]
        if user is not None and not 0 <= user < model.user.num_embeddings:
            raise DcxError(f"--user {user}: the global model has users 0..{model.user.num_embeddings - 1}")
        user = make_split(cfg).new_users[0] if user is None else user
        num_items = model.item.num_embeddings
        gen = torch.Generator().manual_seed(seed)
        b = cfg.batch_size
        item = torch.randint(0, num_items, (b,), generator=gen, dtype=torch.int32)
        genres = (torch.rand(b, len(GENRES), generator=gen) < 0.2).float()
        liked = (torch.rand(b, generator=gen) < 0.5).float()
        target = (torch.rand(b, generator=gen) < 0.5).float()
        clf = new_classifier(model, cfg, seed)
        rec = PersonalRecommender(model, user)
        sgd = SGD(cfg.device_lr)
        batches = partial(self.user_batches, user)
        name = self.name
        return [
            DeviceProgram(f"{name}.classifier.train", "train", BCELoss(copy.deepcopy(clf)).eval(),
                          (item, genres, liked, target), ("item", "genres", "liked", "is_local"), ("loss",),
                          "sample classifier step: local (1) vs retrieved (0), item table frozen", optimizer=sgd,
                          batches=lambda steps, s: [b[:4] for b in batches(steps, s)], recipe=name),
            DeviceProgram(f"{name}.classifier.infer", "infer", freeze(copy.deepcopy(clf)), (item, genres, liked),
                          ("item", "genres", "liked"), ("logit",), "score retrieved samples as local-like",
                          recipe=name),
            DeviceProgram(f"{name}.recommender.train", "train", BCELoss(copy.deepcopy(rec)).eval(), (item, genres, liked),
                          ("item", "genres", "liked"), ("loss",),
                          f"personalized recommender step (user {user}) on local + kept samples, item table frozen",
                          optimizer=sgd, batches=lambda steps, s: [b[:3] for b in batches(steps, s)], recipe=name),
            DeviceProgram(f"{name}.recommender.infer", "infer", freeze(copy.deepcopy(rec)), (item, genres),
                          ("item", "genres"), ("logit",), f"personalized 'liked' score (user {user})", recipe=name),
        ]

    def score(self, program_name: str, predict: Predict, seed: int = 0, user: int | None = None) -> dict[str, float]:
        """``coda.recommender.infer`` on a new user's held-out interactions: AUC (batches padded to size)."""
        if program_name != f"{self.name}.recommender.infer":
            return {}
        split = make_split(self.cfg)
        test = split.of_user(split.test, split.new_users[0] if user is None else user)
        if len(test) == 0:
            raise DcxError(f"--user {user}: not one of the new users, who have held-out interactions; choose one of "
                           f"{', '.join(map(str, split.new_users[:5]))}, ...")
        b = self.cfg.batch_size
        scores = []
        for start in range(0, len(test), b):
            idx = torch.arange(start, min(start + b, len(test)))
            pad = torch.cat([idx, idx[:1].repeat(b - len(idx))])
            out = predict(test.item[pad].int().numpy(), test.genres[pad].numpy())[0]
            scores.append(np.asarray(out).reshape(-1)[: len(idx)])
        return {"auc": roc_auc(np.concatenate(scores), test.liked.numpy()), "samples": float(len(test))}

    def evaluate(self, seed: int = 0, users: int = 10) -> dict[str, float]:
        """CoDA for the first ``users`` new users: classifier separation, per-user AUC of the baselines, and the
        share of users whose AUC CoDA improves over the global model."""
        cfg = self.cfg
        split = make_split(cfg)
        model = train_global(split, cfg, seed)
        clusters = item_clusters(model, cfg, seed)
        profiles = pool_profiles(split, clusters, cfg.clusters)
        rows: dict[str, list[float]] = {k: [] for k in ("classifier_auc", "auc_global", "auc_local_only",
                                                        "auc_augmented_unfiltered", "auc_coda")}
        for u in split.new_users[:users]:
            local, test = split.of_user(split.local, u), split.of_user(split.test, u)
            retrieved = coarse_match(profiles, split.pool, coarse_query(local.item, clusters, cfg.clusters), cfg, seed)
            rows["classifier_auc"].append(classifier_holdout_auc(model, local, retrieved, cfg, seed))
            kept = filter_retrieved(train_classifier(model, local, retrieved, cfg, seed), retrieved, cfg)
            rows["auc_global"].append(user_auc(PersonalRecommender(model, u).eval(), test))
            rows["auc_local_only"].append(user_auc(personalize(model, u, local, cfg, seed), test))
            rows["auc_augmented_unfiltered"].append(user_auc(personalize(model, u, local.concat(retrieved), cfg, seed), test))
            rows["auc_coda"].append(user_auc(personalize(model, u, local.concat(kept), cfg, seed), test))
        result = {k: float(np.nanmean(v)) for k, v in rows.items()}
        result["share_improved_over_global"] = float(np.mean(np.array(rows["auc_coda"]) > np.array(rows["auc_global"])))
        return result

    def user_batches(self, user: int, steps: int, seed: int = 0) -> list[tuple[torch.Tensor, ...]]:
        """Real MovieLens interactions of ``user`` (its local ones if a new user, else its pool ones) mixed with
        other users' pool samples: (item, genres, liked, is_local) per batch; is_local marks the user's own."""
        split = make_split(self.cfg)
        own = split.of_user(split.local, user)
        own = own if len(own) else split.of_user(split.pool, user)
        if len(own) == 0:
            raise DcxError(f"--user {user}: MovieLens user {user} has no interactions; choose another user")
        gen = torch.Generator().manual_seed(seed)
        others = split.pool.where(split.pool.user != user)
        others = others.where(torch.randperm(len(others), generator=gen)[: max(len(own), self.cfg.batch_size)])
        both = own.concat(others)
        is_local = torch.cat([torch.ones(len(own)), torch.zeros(len(others))])
        idx = [torch.randint(0, len(both), (self.cfg.batch_size,), generator=gen) for _ in range(steps)]
        return [(both.item[i].int(), both.genres[i], both.liked[i], is_local[i]) for i in idx]
