"""CoDA as a system: a coarse query goes up, retrieved candidates and the model come down, the device filters.

Two exchanges per round:

1. ``query``. Down, once: the item-cluster table (which of ``clusters`` item
   groups each item is in). Up: the device's coarse query, the unit-length
   histogram of its local items over those clusters: no item id, no label.
2. ``augment``. Down: the candidates the cloud retrieved for that query (the
   pool samples of the users with the nearest histograms: item, genres,
   liked) and, once, the model: the programs ``coda.classifier.train`` and
   ``coda.recommender.train`` (the item table frozen inside each), the global
   recommender's trainable weights for a new user and the classifier's
   initial weights. On the device: the classifier learns local (1) vs
   retrieved (0) through its program, keeps the most local-like candidates,
   and the recommender is personalized through its program on local + kept
   (CoDA); and, for comparison only, on local samples only and on local +
   every candidate (steps that take no time on the virtual clock). Up: nothing.

Each personalization's AUC on the device's held-out interactions is the
simulator's measurement, never a message. Scoring (the classifier's scores
for filtering, the recommender's for AUC) runs the recipe's PyTorch modules
with the weights read back from the runtime: ExecuTorch training programs
have no inference method, and the exported inference programs hold their
weights as constants.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dcx.errors import DcxError
from dcx.methods.coda.recipe import (CoDAConfig, GlobalRecommender, PersonalRecommender, SampleClassifier, Samples, Split,
                              classifier_batches, coarse_match, coarse_query, filter_retrieved, item_clusters,
                              make_split, new_classifier, pool_profiles, recommender_batches, user_auc)
from dcx.methods.checkpoint import simulation_cloud_phase
from dcx.simulate.messages import Message, Reply
from dcx.simulate.methods import Method, Setup
from dcx.simulate.programs import InstalledProgram, install, load, not_device_work
from dcx.simulate.roles import DeviceSpec, LatestReports

CLASSIFIER, RECOMMENDER = "coda.classifier.train", "coda.recommender.train"
ITEM_TABLE = "model.item.weight"  # the frozen item embeddings inside both programs


@lru_cache(maxsize=2)
def split_of(cfg: CoDAConfig) -> Split:
    return make_split(cfg)


def check_devices(cfg: CoDAConfig, devices: int) -> None:
    if devices > cfg.new_users:
        raise DcxError(f"--devices {devices}: the CoDA setting has {cfg.new_users} new users (the devices, held out "
                       f"of the cloud pool); choose at most {cfg.new_users}, or train with --set new_users={devices}")


def candidates_message(s: Samples) -> dict[str, np.ndarray]:
    """Retrieved samples as they go down: item ids, multi-hot genres and labels, compactly typed."""
    return {"candidates.item": s.item.numpy().astype(np.int32), "candidates.genres": s.genres.numpy().astype(np.uint8),
            "candidates.liked": s.liked.numpy().astype(np.uint8)}


def candidates_of(down: Message) -> Samples:
    item = torch.from_numpy(down.arrays["candidates.item"].astype(np.int64))
    return Samples(torch.full_like(item, -1), item, torch.from_numpy(down.arrays["candidates.genres"]).float(),
                   torch.from_numpy(down.arrays["candidates.liked"]).float())


def trained(program: InstalledProgram, start: dict[str, np.ndarray], batches: list) -> dict[str, np.ndarray]:
    """The program's weights after SGD steps over ``batches`` from ``start`` (through the runtime)."""
    program.session.set_weights(start)
    for batch in batches:
        program.session.train_step(*(t.numpy() for t in batch))
    return program.session.get_weights()


def as_module(module: nn.Module, table: np.ndarray, weights: dict[str, np.ndarray]) -> nn.Module:
    """``module`` with the item table from the artifact and the trained weights read back from the runtime."""
    state = {k.removeprefix("model."): torch.from_numpy(np.array(v)) for k, v in weights.items()}
    module.load_state_dict({**state, "item.weight": torch.from_numpy(np.array(table))})
    return module.eval()


class Device:
    def __init__(self, spec: DeviceSpec):
        self.spec, self.store = spec, Path(spec.store)
        cfg = spec.config
        shell = GlobalRecommender(1, split_of(cfg).ml.num_items, cfg.dim, cfg.hidden)
        self.recommender, self.classifier = PersonalRecommender(shell, 0), SampleClassifier(shell.item, cfg.hidden)

    def handle(self, device: int, round_no: int, down: Message, state: Message) -> tuple[Message | None, dict]:
        cfg, split = self.spec.config, split_of(self.spec.config)
        user = split.new_users[device]
        local = split.of_user(split.local, user)
        state.arrays.update(down.with_prefix("keep:"))
        if down.kind == "query":
            clusters = torch.from_numpy(state.arrays["clusters"].astype(np.int64))
            return Message("query", {"query": coarse_query(local.item, clusters, cfg.clusters).numpy()}), {}
        install(down, state, self.store)
        rec = load(RECOMMENDER, state, self.store, self.spec.runtime)
        clf = load(CLASSIFIER, state, self.store, self.spec.runtime)
        table = rec.frozen[ITEM_TABLE]
        start = {k.removeprefix("recommender."): v for k, v in state.arrays.items() if k.startswith("recommender.")}
        clf_start = {k.removeprefix("classifier."): v for k, v in state.arrays.items() if k.startswith("classifier.")}
        retrieved, test, seed = candidates_of(down), split.of_user(split.test, user), self.spec.seed

        def auc(train: Samples | None) -> float:
            weights = start if train is None else trained(rec, start, recommender_batches(train, cfg, seed))
            return user_auc(as_module(self.recommender, table, weights), test)

        clf_weights = trained(clf, clf_start, classifier_batches(local, retrieved, cfg, seed))
        kept = filter_retrieved(as_module(self.classifier, table, clf_weights), retrieved, cfg)
        coda = auc(local.concat(kept))
        with not_device_work():  # the comparisons: personalizations a phone running CoDA would not run
            others = {"auc_global": auc(None), "auc_local_only": auc(local),
                      "auc_unfiltered": auc(local.concat(retrieved))}
        return None, {**others, "auc_coda": coda, "kept": float(len(kept)), "retrieved": float(len(retrieved))}


class Cloud:
    exchanges = ("query", "augment")

    def __init__(self, setup: Setup):
        self.setup, cfg = setup, setup.recipe.cfg
        self.split, model = split_of(cfg), setup.modules["global"]
        self.clusters = item_clusters(model, cfg, setup.seed)
        self.profiles = pool_profiles(self.split, self.clusters, cfg.clusters)
        personal = PersonalRecommender(model, self.split.new_users[0])  # every new user starts from the cold vector
        clf = new_classifier(model, cfg, setup.seed)
        self.model = {**{f"keep:recommender.model.{k}": p.detach().numpy() for k, p in personal.named_parameters()
                         if p.requires_grad},
                      **{f"keep:classifier.model.{k}": p.detach().numpy() for k, p in clf.named_parameters()
                         if p.requires_grad}}
        for name in (CLASSIFIER, RECOMMENDER):
            self.model.update(setup.packages[name].arrays())
        self.has_clusters: set[int] = set()
        self.has_model: set[int] = set()
        self.queries: dict[int, np.ndarray] = {}
        self.latest = LatestReports()

    def configure(self, round_no: int, exchange: str, devices: list[int]) -> dict[int, Message]:
        if exchange == "query":
            table = {"keep:clusters": self.clusters.numpy().astype(np.int16)}
            return {k: Message("query", {} if k in self.has_clusters else table) for k in devices}
        cfg, seed = self.setup.recipe.cfg, self.setup.seed
        out = {}
        for k in devices:
            retrieved = coarse_match(self.profiles, self.split.pool, torch.from_numpy(self.queries[k]), cfg, seed)
            out[k] = Message("augment", {**candidates_message(retrieved),
                                         **({} if k in self.has_model else self.model)})
        return out

    def aggregate(self, round_no: int, exchange: str, on_time: dict[int, Reply],
                  late: dict[int, Reply]) -> dict[str, float]:
        if exchange == "query":
            self.has_clusters |= set(on_time) | set(late)
            self.queries = {k: r.message.arrays["query"] for k, r in on_time.items()}
            return {}
        self.has_model |= set(on_time) | set(late)
        self.latest.add(on_time)
        return self.summary()

    def summary(self) -> dict[str, float]:
        rows = self.latest.rows()
        if not rows:
            return {}
        mean = {k: float(np.nanmean([r[k] for r in rows]))
                for k in ("auc_global", "auc_local_only", "auc_unfiltered", "auc_coda")}
        coda = np.array([r["auc_coda"] for r in rows])
        return {**mean,
                "share_improved_over_global": float(np.mean(coda > np.array([r["auc_global"] for r in rows]))),
                "share_improved_over_local_only": float(np.mean(coda > np.array([r["auc_local_only"] for r in rows]))),
                "retrieved_per_device": float(np.mean([r["retrieved"] for r in rows])),
                "kept_per_device": float(np.mean([r["kept"] for r in rows]))}


def verdict(s: dict[str, float]) -> str:
    if "auc_coda" not in s:
        return ""
    beats = [name for name, key in (("the global model", "auc_global"), ("local-only training", "auc_local_only"))
             if s["auc_coda"] > s[key]]
    held = "reproduces" if len(beats) == 2 else "does not reproduce"
    return (f"Mean per-user AUC: CoDA {s['auc_coda']:.3f}, global {s['auc_global']:.3f}, local-only "
            f"{s['auc_local_only']:.3f}, unfiltered augmentation {s['auc_unfiltered']:.3f}. CoDA beats "
            f"{' and '.join(beats) if beats else 'neither'}; the claim (beating both) {held}. CoDA improves "
            f"{s['share_improved_over_global']:.0%} of users over the global model.")


METHOD = Method(
    name="coda", rounds=(1, 1), devices=(200, 20), overrides=lambda n: {}, check_devices=check_devices,
    programs=lambda setup: [p for p in setup.recipe.device_programs(setup.seed, setup.modules)
                            if p.name in (CLASSIFIER, RECOMMENDER)],
    cloud_role=Cloud, device_role=Device, baselines=lambda setup: {}, headline="auc_coda", verdict=verdict, cloud_phase=simulation_cloud_phase)
