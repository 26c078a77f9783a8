"""The optimizer's parameter groups: DGConv2d's grouping gates and the gates' keep biases apart from
everything else."""

import pytest
import torch
from helpers import compose_config

from acs.gates import keep_biases
from acs.ops import DGConv2d
from acs.training.builders import build_model
from acs.training.optim import build_optimizer, build_scheduler


def gated_densenet(*overrides):
    cfg = compose_config("gate.width=8", *overrides)
    torch.manual_seed(0)
    return cfg, build_model(cfg.model, cfg.gate, num_classes=10, in_channels=3)


def grouping_gates(model):
    return [m.gates for m in model.modules() if isinstance(m, DGConv2d)]


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_grouping_gates_get_their_own_lr_and_weight_decay(optimizer):
    cfg, model = gated_densenet(
        f"optimizer={optimizer}", "optimizer.grouping_lr_scale=0.1", "optimizer.grouping_weight_decay=0"
    )
    opt = build_optimizer(cfg.optimizer, model)
    rest, grouping, keep = opt.param_groups
    assert {id(p) for p in grouping["params"]} == {id(p) for p in grouping_gates(model)} != set()
    assert {id(p) for p in keep["params"]} == {id(p) for p in keep_biases(model)} != set()
    assert sorted(map(id, rest["params"] + grouping["params"] + keep["params"])) == sorted(map(id, model.parameters()))
    assert grouping["lr"] == pytest.approx(0.1 * rest["lr"]) and grouping["weight_decay"] == 0.0
    assert rest["weight_decay"] == cfg.optimizer.weight_decay > 0
    scheduler = build_scheduler(compose_config("scheduler=cosine").scheduler, opt, max_epochs=4)
    opt.step()  # no gradients yet: only keeps the scheduler's order check quiet
    scheduler.step()
    assert grouping["lr"] == pytest.approx(0.1 * rest["lr"]) and rest["lr"] < cfg.optimizer.lr


def test_grouping_weight_decay_follows_weight_decay_unless_set():
    cfg, model = gated_densenet("optimizer.weight_decay=0.003")
    assert build_optimizer(cfg.optimizer, model).param_groups[1]["weight_decay"] == 0.003


@pytest.mark.parametrize("gate", ["acs", "ddi", "aig", "static"])
def test_keep_biases_get_their_own_lr_and_weight_decay(gate):
    cfg = compose_config(f"gate={gate}", "optimizer.keep_bias_lr_scale=300", "optimizer.keep_bias_weight_decay=0")
    model = build_model(cfg.model, cfg.gate, num_classes=10, in_channels=3)
    keep = build_optimizer(cfg.optimizer, model).param_groups[-1]
    biases = keep_biases(model)
    assert len(biases) == 36 and all(b.shape[0] in (12, 24) for b in biases)  # one per gated layer: k, or aig's 2k
    assert {id(p) for p in keep["params"]} == {id(p) for p in biases}
    assert keep["lr"] == pytest.approx(300 * cfg.optimizer.lr) and keep["weight_decay"] == 0.0


def test_fbs_has_no_keep_bias_and_keep_bias_decay_follows_weight_decay():
    cfg = compose_config("gate=fbs")
    assert not keep_biases(build_model(cfg.model, cfg.gate, num_classes=10, in_channels=3))
    cfg, model = gated_densenet("optimizer.weight_decay=0.003")
    assert build_optimizer(cfg.optimizer, model).param_groups[2]["weight_decay"] == 0.003


def test_models_without_dgconv_have_one_group():
    cfg = compose_config("gate=none")
    model = build_model(cfg.model, cfg.gate, num_classes=10, in_channels=3)
    assert not grouping_gates(model) and len(build_optimizer(cfg.optimizer, model).param_groups) == 1


@pytest.mark.parametrize("scale, moves", [(0.0, False), (1.0, True)])
def test_grouping_lr_scale_zero_freezes_the_grouping(scale, moves):
    cfg, model = gated_densenet(f"optimizer.grouping_lr_scale={scale}", "optimizer.grouping_weight_decay=0")
    before = [g.detach().clone() for g in grouping_gates(model)]
    weights = [p.detach().clone() for p in model.parameters()]
    opt = build_optimizer(cfg.optimizer, model)
    model.train()
    out = model(torch.randn(4, 3, 8, 8))
    (torch.nn.functional.cross_entropy(out.logits, torch.arange(4)) + out.macs.mean() * 1e-6).backward()
    assert all(g.grad is not None and g.grad.abs().sum() > 0 for g in grouping_gates(model))
    opt.step()
    assert any(not torch.equal(w, p) for w, p in zip(weights, model.parameters()))
    assert any(not torch.equal(b, g) for b, g in zip(before, grouping_gates(model))) == moves
