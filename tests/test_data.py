import numpy as np
import pytest

from dcx.data import fashion_mnist, movielens
from dcx.data.partition import class_subset_clients, dirichlet_label_skew, temporal_split
from dcx.errors import DcxError


def test_fashion_mnist_is_the_real_dataset():
    train, test = fashion_mnist.load_fashion_mnist("train"), fashion_mnist.load_fashion_mnist("test")
    assert tuple(train.images.shape) == (60000, 1, 28, 28) and len(test) == 10000
    assert np.bincount(train.labels.numpy()).tolist() == [6000] * 10
    assert 0.0 <= float(train.images.min()) and float(train.images.max()) <= 1.0


def test_missing_fashion_mnist_names_the_package(tmp_path, monkeypatch):
    monkeypatch.setenv("DCX_FASHION_MNIST_DIR", str(tmp_path))
    fashion_mnist.load_fashion_mnist.cache_clear()
    try:
        with pytest.raises(DcxError, match="dataset-fashion-mnist"):
            fashion_mnist.load_fashion_mnist("train")
    finally:
        fashion_mnist.load_fashion_mnist.cache_clear()


def test_movielens_100k_shape_and_time_order():
    ml = movielens.load_movielens()
    assert (ml.num_users, ml.num_items, len(ml.user)) == (943, 1682, 100000)
    same_user = ml.user[1:] == ml.user[:-1]
    assert np.all(ml.timestamp[1:][same_user] >= ml.timestamp[:-1][same_user])
    assert ml.item_genres.sum(1).min() >= 1  # every movie has at least one genre


def test_missing_movielens_names_the_setup(tmp_path, monkeypatch):
    monkeypatch.setenv("DCX_MOVIELENS_DIR", str(tmp_path))
    movielens.load_movielens.cache_clear()
    try:
        with pytest.raises(DcxError, match="recbole==1.2.1"):
            movielens.load_movielens()
    finally:
        movielens.load_movielens.cache_clear()


def test_dirichlet_partition_covers_every_sample_once_and_skews():
    labels = np.repeat(np.arange(10), 100)
    parts = dirichlet_label_skew(labels, 5, alpha=0.1, seed=0)
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(1000))
    dominant = [np.bincount(labels[p], minlength=10).max() / max(len(p), 1) for p in parts if len(p)]
    assert np.mean(dominant) > 0.3  # far from the IID 0.1
    assert all(np.array_equal(a, b) for a, b in zip(parts, dirichlet_label_skew(labels, 5, 0.1, seed=0)))


def test_class_subset_clients_stay_in_their_classes():
    labels = np.repeat(np.arange(10), 50)
    for classes, idx in class_subset_clients(labels, 8, 3, 20, seed=1):
        assert len(classes) == 3 and set(labels[idx]) <= set(classes)


def test_temporal_split_is_per_user_and_ordered():
    user = np.array([0] * 10 + [1] * 5)
    first, last = temporal_split(user, (0.8, 0.2))
    assert first.sum() + last.sum() == 15 and not np.any(first & last)
    assert list(np.flatnonzero(last)) == [8, 9, 14]
    with pytest.raises(DcxError):
        temporal_split(user, (0.5, 0.2))
