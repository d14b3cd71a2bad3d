import numpy as np
import pytest
import torch

from dcx.methods.coda.recipe import (CoDAConfig, PersonalRecommender, classifier_scores, coarse_match, coarse_query,
                              filter_retrieved, item_clusters, make_split, pool_profiles, train_classifier,
                              train_global, user_auc)

CFG = CoDAConfig(global_epochs=3)


@pytest.fixture(scope="module")
def cloud():
    split = make_split(CFG)
    model = train_global(split, CFG)
    clusters = item_clusters(model, CFG)
    return split, model, clusters, pool_profiles(split, clusters, CFG.clusters)


def test_new_users_are_held_out_of_the_pool(cloud):
    split, *_ = cloud
    assert len(split.pool) + len(split.local) + len(split.test) == 100_000
    new = torch.tensor(split.new_users)
    assert len(new) == CFG.new_users and not torch.isin(split.pool.user, new).any()
    assert torch.isin(split.local.user, new).all() and torch.isin(split.test.user, new).all()
    ml = split.ml
    for u in split.new_users[:20]:  # local: the user's earliest interactions; held out: every later one
        times = ml.timestamp[ml.user == u]
        assert np.array_equal(split.of_user(split.local, u).item.numpy(), ml.item[ml.user == u][: CFG.local_samples])
        assert len(split.of_user(split.test, u)) == len(times) - CFG.local_samples
        assert times[CFG.local_samples - 1] <= times[CFG.local_samples:].min()


def test_new_users_start_from_the_mean_pool_user(cloud):
    split, model, *_ = cloud
    known = torch.unique(split.pool.user)
    cold = model.user.weight[known].mean(0)
    for u in split.new_users[:5]:
        torch.testing.assert_close(model.user.weight[u], cold)
    users = split.new_users[:30]
    aucs = [user_auc(PersonalRecommender(model, u).eval(), split.of_user(split.test, u)) for u in users]
    assert np.nanmean(aucs) > 0.6  # the global model ranks a new user's items better than chance


def test_coarse_query_is_a_cluster_histogram_and_matches_pool_users(cloud):
    split, model, clusters, profiles = cloud
    assert clusters.shape == (split.ml.num_items,) and int(clusters.max()) < CFG.clusters
    assert len(torch.unique(clusters)) > CFG.clusters // 2  # the k-means uses most of its clusters
    u = split.new_users[0]
    local = split.of_user(split.local, u)
    query = coarse_query(local.item, clusters, CFG.clusters)
    assert query.shape == (CFG.clusters,) and float(query.norm()) == pytest.approx(1.0)
    retrieved = coarse_match(profiles, split.pool, query, CFG)
    assert len(retrieved) == CFG.retrieved and not torch.isin(retrieved.user, torch.tensor(split.new_users)).any()
    nearest = torch.topk(profiles @ query, CFG.neighbours).indices
    assert torch.isin(retrieved.user, nearest).all()
    far = torch.topk(-(profiles @ query), CFG.neighbours).indices
    assert (profiles[nearest] @ query).min() > (profiles[far] @ query).max()


def test_sample_classifier_learns_the_local_side_and_filters(cloud):
    split, model, clusters, profiles = cloud
    u = split.new_users[0]
    local = split.of_user(split.local, u)
    retrieved = coarse_match(profiles, split.pool, coarse_query(local.item, clusters, CFG.clusters), CFG)
    clf = train_classifier(model, local, retrieved, CFG)
    assert float(classifier_scores(clf, local).mean()) > float(classifier_scores(clf, retrieved).mean())
    kept = filter_retrieved(clf, retrieved, CFG)
    assert len(kept) == int(CFG.retrieved * CFG.keep_fraction)
    assert float(classifier_scores(clf, kept).min()) >= float(classifier_scores(clf, retrieved).median())
