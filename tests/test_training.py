"""Miniature real trainings through the runner: files, metrics, regularizer, resume, failures."""

import json

import pytest
import torch
from helpers import compose_config

import acs.training.runner as runner
from acs.reporting import RunLogger
from acs.training.app import execute
from acs.training.checkpoint import CheckpointError, load_checkpoint
from acs.training.engine import TrainingDiverged


def train(run_dir, *overrides):
    cfg = compose_config(*overrides)
    return execute(cfg, str(run_dir), list(overrides))


def records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_training_writes_metrics_summary_and_checkpoints(tmp_path, tiny_overrides):
    summary = train(tmp_path, *tiny_overrides, "trainer.max_epochs=3")
    lines = records(tmp_path)
    assert [r["epoch"] for r in lines] == [1, 2, 3]
    assert lines[-1]["train/loss"] < lines[0]["train/loss"]
    for key in [
        "train/acc1",
        "train/acc5",
        "train/macs",
        "train/flops",
        "train/compute_ratio",
        "test/loss",
        "test/acc1",
        "test/acc5",
        "test/macs",
        "test/flops",
        "test/compute_ratio",
        "test/keep/L00",
        "test/keep/L35",
        "lr",
    ]:
        assert key in lines[-1], key
    assert lines[-1]["test/flops"] == 2 * lines[-1]["test/macs"]
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["status"] == "completed" and on_disk["final"] == lines[-1]
    assert on_disk["best"]["metric"] == "test/acc1"
    assert on_disk["best"]["value"] == max(r["test/acc1"] for r in lines)
    assert on_disk["params"] == summary["params"] > 0 and on_disk["overrides"][0] == "dataset=synthetic"
    assert on_disk["run_time_s"] > 0
    last = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert last["epoch"] == 3 and last["model_name"] == "densenet40"
    assert load_checkpoint(tmp_path / "checkpoints" / "best.pt")["epoch"] == on_disk["best"]["epoch"]


def test_flops_regularizer_lowers_compute(tmp_path, tiny_overrides):
    common = [*tiny_overrides, "trainer.max_epochs=3", "gate.init_keep=0.51", "regularizer.minimum=0"]
    free = train(tmp_path / "free", *common, "regularizer.beta=0")
    pushed = train(tmp_path / "pushed", *common, "regularizer.beta=10")
    assert pushed["final"]["test/compute_ratio"] < free["final"]["test/compute_ratio"] - 0.05
    assert pushed["final"]["test/keep_rate"] < free["final"]["test/keep_rate"]


def test_same_seed_same_results(tmp_path, tiny_overrides):
    first = train(tmp_path / "a", *tiny_overrides)
    second = train(tmp_path / "b", *tiny_overrides)
    assert first["final"] == {**second["final"], "time_s": first["final"]["time_s"]}


def test_validation_split_selects_best_on_val(tmp_path, tiny_overrides):
    summary = train(tmp_path, *tiny_overrides, "dataset.val_split=0.25")
    assert summary["best"]["metric"] == "val/acc1"
    assert "val/acc1" in summary["final"] and "test/acc1" in summary["final"]


class StopAfter(RunLogger):
    """A logger that kills the run when epoch ``step`` is logged: after its metrics line, before
    its checkpoint, the worst moment for a crash."""

    def __init__(self, step):
        self.step = step

    def log_metrics(self, metrics, step):
        if step == self.step:
            raise KeyboardInterrupt("stopped by the test")


def test_resume_reaches_the_same_weights_and_metrics(tmp_path, tiny_overrides, monkeypatch):
    overrides = [*tiny_overrides, "trainer.max_epochs=3", "scheduler=multistep"]
    straight = tmp_path / "straight"
    train(straight, *overrides)

    broken = tmp_path / "broken"
    with monkeypatch.context() as patch:
        patch.setattr(runner, "create_logger", lambda *a, **k: StopAfter(step=2))
        with pytest.raises(KeyboardInterrupt, match="stopped by the test"):
            train(broken, *overrides)
    assert load_checkpoint(broken / "checkpoints" / "last.pt")["epoch"] == 1
    assert json.loads((broken / "summary.json").read_text())["status"] == "failed"

    train(broken, *overrides, "resume=true")
    assert [r["epoch"] for r in records(broken)] == [1, 2, 3]
    for a, b in zip(records(straight), records(broken)):
        assert {k: v for k, v in a.items() if k != "time_s"} == {k: v for k, v in b.items() if k != "time_s"}
    weights_a = load_checkpoint(straight / "checkpoints" / "last.pt")["model"]
    weights_b = load_checkpoint(broken / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)


def test_non_finite_loss_stops_with_last_good_checkpoint(tmp_path, tiny_overrides, monkeypatch):
    real = runner.run_epoch
    calls = {"train": 0}

    def poisoned(model, loader, split, *args, **kwargs):
        if split == "train":
            calls["train"] += 1
            if calls["train"] == 2:
                torch.nn.init.constant_(next(model.parameters()), float("nan"))
        return real(model, loader, split, *args, **kwargs)

    monkeypatch.setattr(runner, "run_epoch", poisoned)
    with pytest.raises(TrainingDiverged, match="train loss became nan"):
        train(tmp_path, *tiny_overrides)
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["epoch"] == 1
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "failed" and "TrainingDiverged" in summary["error"]


def test_eval_mode_reproduces_the_checkpoint_metrics(tmp_path, tiny_overrides):
    summary = train(tmp_path / "train", *tiny_overrides)
    best = tmp_path / "train" / "checkpoints" / "best.pt"
    # Model, gate and data come from the checkpoint: the command line needs only the path.
    result = execute(
        compose_config("mode=eval", f"ckpt_path={best}", "logger=none", "trainer=cpu"),
        str(tmp_path / "eval"),
        ["mode=eval"],
    )
    for key in ["test/acc1", "test/acc5", "test/macs", "test/compute_ratio"]:
        assert result["final"][key] == pytest.approx(summary["best"]["metrics"][key], rel=1e-9)


def test_checkpoint_of_another_model_is_a_clear_error(tmp_path, tiny_overrides):
    train(tmp_path / "a", *tiny_overrides, "trainer.max_epochs=1")
    ckpt = tmp_path / "a" / "checkpoints" / "last.pt"
    with pytest.raises(CheckpointError, match="holds a 'densenet40' model, but this run builds 'densenet_bc100'"):
        train(tmp_path / "b", *tiny_overrides, "model=densenet_bc100", f"ckpt_path={ckpt}")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(ckpt.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="corrupt, truncated or not a PyTorch checkpoint"):
        train(tmp_path / "c", *tiny_overrides, f"ckpt_path={corrupt}")


def test_optimizer_state_of_another_layout_is_a_clear_error(tmp_path, tiny_overrides):
    train(tmp_path, *tiny_overrides, "trainer.max_epochs=1")
    last = tmp_path / "checkpoints" / "last.pt"
    state = load_checkpoint(last)
    # As a checkpoint written before the keep biases had a parameter group of their own.
    *others, keep = state["optimizer"]["param_groups"]
    others[0]["params"] = others[0]["params"] + keep["params"]
    state["optimizer"]["param_groups"] = others
    torch.save(state, last)
    before = last.read_bytes()
    with pytest.raises(CheckpointError, match="optimizer state does not fit this run's optimizer"):
        train(tmp_path, *tiny_overrides, "trainer.max_epochs=2", "resume=true")
    assert last.read_bytes() == before
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "completed"


def test_models_without_gates_need_gate_none(tmp_path, tiny_overrides):
    from acs.training.config import ConfigError

    with pytest.raises(ConfigError, match="has no per-sample gates; run it with gate=none"):
        train(tmp_path, *tiny_overrides, "model=g_resnext29_2x64d")


@pytest.mark.slow
def test_compiled_training_matches_eager_training(tmp_path, tiny_overrides):
    # torch.compile (inductor, which needs a C++ compiler on CPU) changes speed, not results.
    common = [*tiny_overrides, "trainer.max_epochs=1"]
    eager = train(tmp_path / "eager", *common)
    compiled = train(tmp_path / "compiled", *common, "trainer.compile=true")
    for key in ("train/loss", "test/acc1", "test/compute_ratio"):
        assert compiled["final"][key] == pytest.approx(eager["final"][key], rel=1e-3, abs=1e-3)
