import pytest
import torch


@pytest.fixture(autouse=True)
def single_thread():
    """Deterministic, and fair to a 2-core machine."""
    torch.set_num_threads(1)
    yield
