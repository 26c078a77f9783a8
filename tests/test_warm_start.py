"""init_from: a new run starts from the weights of another that fit, and refuses what it cannot use."""
import json
import logging
import re

import pytest
import torch
from helpers import TINY, compose_config, run_py

import acs
from acs.training.app import execute
from acs.training.checkpoint import CheckpointError, load_checkpoint, load_matching_weights, save_checkpoint
from acs.training.config import ConfigError, validate


@pytest.fixture(scope="module")
def ungated_checkpoint(tmp_path_factory):
    """The best.pt of a one-epoch ungated miniature run: the backbone to start gated runs from."""
    run_dir = tmp_path_factory.mktemp("ungated")
    overrides = [*TINY, "gate=none", "trainer.max_epochs=1"]
    execute(compose_config(*overrides), str(run_dir), overrides)
    return run_dir / "checkpoints" / "best.pt"


def test_a_gated_model_takes_the_backbone_and_keeps_its_fresh_gates(ungated_checkpoint):
    backbone = load_checkpoint(ungated_checkpoint)["model"]
    model = acs.create_model("densenet40", num_classes=10, gate={"name": "acs", "width": 8})
    before = {k: v.clone() for k, v in model.state_dict().items()}
    start = load_matching_weights(model, ungated_checkpoint)
    after = model.state_dict()
    assert start.loaded == sorted(backbone) and start.unused == []  # every backbone tensor fits
    assert start.fresh and all(".gate." in name for name in start.fresh)
    assert all(torch.equal(after[k], backbone[k]) for k in start.loaded)
    assert all(torch.equal(after[k], before[k]) for k in start.fresh)


def test_warm_started_run_logs_what_it_loaded_and_trains_from_epoch_one(tmp_path, tiny_overrides, ungated_checkpoint,
                                                                       caplog):  # fmt: skip
    overrides = [*tiny_overrides, "trainer.max_epochs=1", f"init_from={ungated_checkpoint}"]
    with caplog.at_level(logging.INFO, logger="acs.training.runner"):
        summary = execute(compose_config(*overrides), str(tmp_path), overrides)
    assert summary["status"] == "completed"
    assert [json.loads(line)["epoch"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1]
    messages = [r.getMessage() for r in caplog.records]
    backbone = len(load_checkpoint(ungated_checkpoint)["model"])
    assert any(m.startswith(f"init_from {ungated_checkpoint}: loaded {backbone} tensors: ") for m in messages)
    assert any(re.match(r"init_from: \d+ tensors start fresh: blocks\.0\.0\.gate\.", m) for m in messages)


def test_resume_wins_over_init_from(tmp_path, tiny_overrides, ungated_checkpoint, caplog):
    """A requeued warm-started job continues from its own last.pt instead of starting again."""
    overrides = [*tiny_overrides, "trainer.max_epochs=1", f"init_from={ungated_checkpoint}"]
    execute(compose_config(*overrides), str(tmp_path), overrides)
    more = [*tiny_overrides, "trainer.max_epochs=2", f"init_from={ungated_checkpoint}", "resume=true"]
    with caplog.at_level(logging.INFO, logger="acs.training.runner"):
        execute(compose_config(*more), str(tmp_path), more)
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("resumed from") and m.endswith("after epoch 1") for m in messages)
    assert not any(m.startswith("init_from") for m in messages)


def test_a_checkpoint_that_fits_nothing_is_refused(tmp_path):
    path = tmp_path / "other.pt"
    save_checkpoint(path, {"model_name": "other", "model": {"encoder.weight": torch.zeros(3, 3)}})
    model = acs.create_model("densenet40", gate="none")
    with pytest.raises(CheckpointError, match=re.escape(f"{path} has no tensor that fits this model")):
        load_matching_weights(model, path)


def test_a_file_that_is_not_a_checkpoint_is_one_error_line(tmp_path, tiny_overrides):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint at all")
    run_dir = tmp_path / "run"
    result = run_py(*tiny_overrides, f"init_from={junk}", f"hydra.run.dir={run_dir}")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"error: cannot read checkpoint {junk}: the file is corrupt, truncated or not a PyTorch checkpoint"
    )
    assert not (run_dir / "checkpoints").exists()


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["init_from=a.pt", "ckpt_path=b.pt"], "init_from starts a new run from another run's weights, ckpt_path"),
        (["init_from=a.pt", "mode=eval", "ckpt_path=b.pt"], "init_from starts a training run, not mode=eval"),
    ],
)
def test_init_from_beside_a_resume_or_outside_training_is_a_config_error(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate(compose_config(*overrides))
