"""Fixtures only; shared helpers and constants live in helpers.py."""
import pytest
import torch
from helpers import TINY


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def tiny_overrides():
    return list(TINY)


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """One intra-op thread for the whole session. The suite's tensors are tiny (8×8 images, batch-1
    convolutions): threads only add overhead there, and oversubscribe a busy machine badly: with the
    other core busy, a miniature training step takes 2-6× as long on two threads as on one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
