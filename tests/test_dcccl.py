import torch

from dcx.methods.dcccl.submodels import SummedLogits
from dcx.methods.dcccl.submodels import split_convnet as split_by_width
from dcx.methods.dcccl.submodels import zero_convnet_cross_group_weights as zero_cross_group_weights
from dcx.models.convnet import ConvNet
from dcx.methods import get_recipe
from dcx.methods.dcccl.recipe import (ControlledLoss, DCCCLConfig, device_update, distill_mimic, fedavg, make_mimic,
                               make_scenario, make_submodels, mimic_error, train_cloud)
from dcx.training import accuracy

CFG = DCCCLConfig(cloud_samples=2000, device_samples=300, cloud_epochs=2, distill_epochs=3, device_epochs=4)


def test_width_split_is_exact_when_cross_group_weights_are_zero():
    torch.manual_seed(0)
    base = ConvNet((32, 64), 128)
    x = torch.rand(8, 1, 28, 28)
    zero_cross_group_weights(base, 1 / 8)
    large, small = split_by_width(base, 1 / 8)
    assert small.channels == (4, 8) and small.hidden == 16 and large.channels == (28, 56)
    assert torch.allclose(SummedLogits(large, small)(x), base(x), atol=1e-5)


def test_width_split_of_a_dense_model_differs():
    torch.manual_seed(0)
    base = ConvNet((32, 64), 128)
    x = torch.rand(8, 1, 28, 28)
    large, small = split_by_width(base, 1 / 8)
    assert not torch.allclose(SummedLogits(large, small)(x), base(x), atol=1e-3)  # cross weights were dropped


def test_heterogeneous_mode_uses_imagenet_mobilenet_v2():
    large, small = make_submodels(DCCCLConfig(heterogeneous=True))
    x = torch.rand(2, 1, 28, 28)
    assert SummedLogits(large.eval(), small)(x).shape == (2, 10)
    assert sum(p.numel() for p in large.parameters()) > 2_000_000 > 100 * sum(p.numel() for p in small.parameters())


def test_mimic_is_frozen_and_only_small_submodel_trains():
    program = get_recipe("dcccl").device_programs()[0]
    assert program.name == "dcccl.train"
    assert all(n.startswith("small.") for n in program.trainable)
    assert all(n.startswith("mimic.") for n in program.frozen) and program.frozen


def test_controlled_device_step_raises_served_accuracy_and_mimic_approaches_large():
    scenario = make_scenario(CFG, seed=0)
    large, small = make_submodels(CFG, seed=0)
    train_cloud(large, small, scenario.cloud, CFG)
    mimic = make_mimic(CFG)
    before = mimic_error(mimic, large, scenario.cloud.images)
    errors = distill_mimic(mimic, large, scenario.cloud, CFG)
    assert errors[-1] < errors[0] < before and errors[-1] < 0.5 * errors[0]

    gains = []
    small_before = {k: v.clone() for k, v in small.state_dict().items()}
    for k, (data, test) in enumerate(zip(scenario.devices, scenario.device_tests)):
        acc_before = accuracy(SummedLogits(large, small), test.images, test.labels)
        small_k = device_update(mimic, small, data, CFG, seed=k)
        gains.append(accuracy(SummedLogits(large, small_k), test.images, test.labels) - acc_before)
    assert min(gains) > 0.02, gains
    assert all(torch.equal(small_before[k], v) for k, v in small.state_dict().items())  # devices train copies


def test_fedavg_weights_by_sample_count():
    a, b = {"w": torch.zeros(2)}, {"w": torch.ones(2)}
    assert torch.allclose(fedavg([a, b], [1, 3])["w"], torch.full((2,), 0.75))


def test_controlled_loss_gradient_reaches_only_small():
    mimic, small = make_mimic(CFG), make_submodels(CFG)[1]
    loss = ControlledLoss(mimic, small)(torch.rand(4, 1, 28, 28), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    assert all(p.grad is None for p in mimic.parameters())
    assert all(p.grad is not None for p in small.parameters())


def test_heterogeneous_mode_end_to_end():
    """L = ImageNet MobileNetV2, S = a small CNN of another backbone: the controlled step still helps."""
    recipe = get_recipe("dcccl")
    recipe.cfg = DCCCLConfig(heterogeneous=True, cloud_samples=1000, device_samples=200, cloud_epochs=1,
                             distill_epochs=3, device_epochs=3)
    m = recipe.evaluate()
    assert m["mimic_mse_last_epoch"] < m["mimic_mse_first_epoch"]
    assert m["acc_controlled_per_device"] > m["acc_cloud_only"] + 0.03


def test_baselines_order_as_in_the_paper():
    """Controlled devices beat cloud-only; device-only S is far behind; central training is the bound."""
    recipe = get_recipe("dcccl")
    recipe.cfg = CFG
    for seed in (0, 1):
        m = recipe.evaluate(seed)
        assert m["acc_controlled_per_device"] > m["acc_cloud_only"] + 0.02, m
        assert m["acc_device_only_small"] < m["acc_controlled_per_device"] - 0.1, m
        assert m["acc_central_upper_bound"] > m["acc_cloud_only"] + 0.05, m
