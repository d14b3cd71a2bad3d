import numpy as np
import pytest
import torch

from dcx.recipes.coda import (CoDAConfig, PersonalRecommender, classifier_holdout_auc, coarse_match, filter_retrieved,
                              make_split, train_classifier, train_global, user_auc)

CFG = CoDAConfig(global_epochs=3)


@pytest.fixture(scope="module")
def cloud():
    split = make_split(CFG)
    return split, train_global(split, CFG)


def test_split_is_temporal_per_user(cloud):
    split, _ = cloud
    assert len(split.pool) + len(split.local) + len(split.test) == 100_000
    assert len(split.test) == pytest.approx(20_000, rel=0.02)


def test_global_model_beats_chance(cloud):
    split, model = cloud
    users = torch.argsort(torch.bincount(split.test.user), descending=True)[:20].tolist()
    aucs = [user_auc(PersonalRecommender(model, u).eval(), split.of_user(split.test, u)) for u in users]
    assert np.nanmean(aucs) > 0.6


def test_sample_classifier_separates_local_from_retrieved(cloud):
    split, model = cloud
    users = torch.argsort(torch.bincount(split.local.user), descending=True)[:8].tolist()
    aucs = []
    for u in users:
        local = split.of_user(split.local, u)
        retrieved = coarse_match(model, split, u, CFG)
        assert len(retrieved) == CFG.retrieved and not bool((retrieved.user == u).any())
        aucs.append(classifier_holdout_auc(model, local, retrieved, CFG))
    assert np.mean(aucs) > 0.62, aucs


def test_filter_keeps_the_most_local_like(cloud):
    split, model = cloud
    u = int(torch.argmax(torch.bincount(split.local.user)))
    local, retrieved = split.of_user(split.local, u), coarse_match(model, split, u, CFG)
    clf = train_classifier(model, local, retrieved, CFG)
    kept = filter_retrieved(clf, retrieved, CFG)
    assert len(kept) == int(CFG.retrieved * CFG.keep_fraction)
