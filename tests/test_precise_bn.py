"""Evaluation follows training: BatchNorm statistics recomputed with the current weights.

The cause pinned here: evaluation normalises with the running averages that training accumulated
while the weights moved, and in a short run at a high learning rate those lag the weights, so a
gated DenseNet scored far below its training accuracy. ``trainer.precise_bn_batches`` recomputes
them before every evaluation.
"""
import json

import torch
from helpers import compose_config

import acs
from acs.training import runner
from acs.training.app import execute
from acs.training.engine import recalibrate_batchnorm


def _stale_model():
    """A gated DenseNet whose weights moved after its running statistics were gathered."""
    model = acs.create_model("densenet40", num_classes=10, in_channels=1, gate={"name": "acs", "width": 8})
    x = torch.randn(16, 1, 8, 8)
    with torch.no_grad():
        model.train()(x)  # statistics of these weights...
        for name, param in model.named_parameters():
            if "gate" not in name and param.ndim == 4:
                param.mul_(1.5)  # ...then a large step, as at lr 0.1 early in training
    return model, x


def test_stale_running_statistics_break_evaluation_and_recalibration_mends_it():
    model, x = _stale_model()
    with torch.no_grad():
        trained = model.train()(x)
        stale = model.eval()(x)
    scale = trained.logits.abs().max()
    # The cause: with the lagging averages, evaluation computes another function than training did.
    assert (stale.logits - trained.logits).abs().max() > 0.5 * scale

    recalibrate_batchnorm(model, [(x, None)], batches=1, device=torch.device("cpu"))
    assert not model.training  # the model's mode is kept
    with torch.no_grad():
        evaluated = model(x)
    assert all(torch.equal(a, b) for a, b in zip(evaluated.masks, trained.masks))
    # Equal up to BatchNorm's unbiased running variance (n/(n−1) over ≥ 16·2·2 values per channel).
    assert (evaluated.logits - trained.logits).abs().max() < 0.05 * scale


def test_the_runner_recalibrates_before_each_evaluation(tmp_path, tiny_overrides, monkeypatch):
    calls = []
    real = runner.recalibrate_batchnorm

    def recording(model, loader, batches, device):
        calls.append(batches)
        real(model, loader, batches, device)

    monkeypatch.setattr(runner, "recalibrate_batchnorm", recording)
    overrides = [*tiny_overrides, "trainer.precise_bn_batches=2"]
    summary = execute(compose_config(*overrides), str(tmp_path), overrides)
    assert summary["status"] == "completed" and calls == [2, 2]  # one per epoch, before its evaluation
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
