import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"

# A miniature but real training: densenet40 with narrow gates on tiny synthetic images, on the CPU.
TINY = [
    "dataset=synthetic",
    "dataset.options.image_size=8",
    "dataset.options.train_size=96",
    "dataset.options.test_size=64",
    "trainer=cpu",
    "trainer.max_epochs=2",
    "trainer.progress=false",
    "logger=none",
    "gate.width=8",
    "scheduler=constant",
]


def compose_config(*overrides: str):
    """The config run.py would see for these command-line overrides."""
    from hydra import compose, initialize_config_dir

    from acs.training.config import register_schema

    register_schema()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


@pytest.fixture
def tiny_overrides():
    return list(TINY)


@pytest.fixture(scope="module")
def one_thread():
    """For modules of tiny batch-1 convolutions: threads only add overhead there, and oversubscribe
    a busy machine badly."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
