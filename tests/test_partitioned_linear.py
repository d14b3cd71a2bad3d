import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from dcx.errors import DcxError
from dcx.models.partitioned_linear import PartitionedLinear, block_diagonal_weight, channel_shuffle


@pytest.mark.parametrize("p", [1, 2, 4, 8, 16])
@pytest.mark.parametrize("d_in,d_out", [(64, 64), (32, 96)])
def test_equals_dense_block_diagonal_then_shuffle(p, d_in, d_out):
    torch.manual_seed(p)
    layer = PartitionedLinear(d_in, d_out, p).double()
    x = torch.randn(7, d_in, dtype=torch.double)
    dense = x @ block_diagonal_weight(layer.weight).T + layer.bias
    expected = channel_shuffle(dense, p)
    assert torch.allclose(layer(x), expected, atol=1e-6, rtol=0)
    # the shuffle is the ShuffleNet permutation: out[j*P + q] = in[q*(d/P) + j]
    j, q = 1, p - 1
    assert torch.equal(expected[:, j * p + q], dense[:, q * (d_out // p) + j])


def test_flops_and_parameters_fall_by_p():
    x = torch.randn(32, 256)
    flops = {}
    for p in (1, 4, 16):
        layer = PartitionedLinear(256, 256, p)
        with FlopCounterMode(display=False) as fc:
            layer(x)
        flops[p] = fc.get_total_flops()
        assert layer.weight.numel() == 256 * 256 // p
    assert flops[4] == pytest.approx(flops[1] / 4, rel=0.01)
    assert flops[16] == pytest.approx(flops[1] / 16, rel=0.01)


def test_bad_shapes_are_user_errors():
    with pytest.raises(DcxError, match="divisible"):
        PartitionedLinear(30, 64, 4)
    with pytest.raises(DcxError, match="last dim 64"):
        PartitionedLinear(64, 64, 4)(torch.randn(2, 63))
