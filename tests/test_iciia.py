import numpy as np
import pytest
import torch

from dcx.data.fashion_mnist import load_fashion_mnist
from dcx.errors import DcxError
from dcx.methods.iciia.recipe import (ICIIA, FeatureCache, ICIIAConfig, evaluate_clients, train_backbone, train_iciia)

CFG = ICIIAConfig(backbone_samples=4000, iciia_clients=3000, iciia_epochs=4)


@pytest.fixture(scope="module")
def trained():
    train = load_fashion_mnist("train")
    data = train.subset(np.random.default_rng(0).choice(len(train), CFG.backbone_samples, replace=False))
    backbone = train_backbone(data, CFG)
    return backbone, data


def test_one_time_training_beats_the_backbone_on_class_subset_clients(trained):
    backbone, data = trained
    iciia = train_iciia(backbone, data, CFG)
    clients = evaluate_clients(backbone, iciia, load_fashion_mnist("test"), CFG, num_clients=40)
    base, ours = np.mean([c.backbone for c in clients]), np.mean([c.iciia for c in clients])
    assert ours > base + 0.02, (base, ours)


@pytest.mark.parametrize("p", [1, 4, 16])
def test_partitions_cut_projection_parameters(p):
    module = ICIIA(64, 4, p, 10)
    proj = sum(m.weight.numel() for m in (module.q, module.k, module.v, module.o))
    assert proj == 4 * 64 * 64 // p
    out = module(torch.randn(3, 64), torch.randn(3, 16, 64))
    assert out.shape == (3, 10)


def test_fifo_and_reservoir_caches():
    fifo = FeatureCache(3, 2, "fifo")
    for i in range(5):
        fifo.add(torch.full((2,), float(i)))
    assert sorted(fifo.tensor()[:, 0].tolist()) == [2.0, 3.0, 4.0]
    partial = FeatureCache(4, 1)
    partial.add(torch.ones(1))
    assert partial.tensor().shape == (4, 1)  # fixed shape for the artifact, filled rows repeated
    reservoir = FeatureCache(4, 1, "reservoir", seed=0)
    for i in range(100):
        reservoir.add(torch.full((1,), float(i)))
    assert reservoir.tensor()[:, 0].max() > 4  # later items replace early ones
    with pytest.raises(DcxError):
        FeatureCache(4, 1).tensor()
    with pytest.raises(DcxError):
        FeatureCache(4, 1, "lru")
