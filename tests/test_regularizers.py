"""The regularizer group: flops, target_rate, l1, none; their values, their config checks, and that the
compute terms move a miniature run toward their targets."""
import re

import pytest
import torch
from helpers import compose_config

from acs.models import Output
from acs.training.app import execute
from acs.training.config import ConfigError, validate
from acs.training.objective import (
    FlopsRegularizer,
    L1Regularizer,
    TargetRateRegularizer,
    build_regularizer,
)


def gated_output(rates, probs):
    """Four samples, 12 channels per layer: layer i keeps the first ``12·rates[i]`` channels."""
    masks = [(torch.arange(12) < 12 * r).float().expand(4, 12).clone().requires_grad_() for r in rates]
    probs = [torch.full((4, 12), p, requires_grad=True) for p in probs]
    return Output(torch.zeros(4, 10), torch.full((4,), 300.0, dtype=torch.float64), masks, probs)


def test_values_and_gradients():
    out = gated_output([0.5, 1.0], [0.2, 0.6])
    target_rate = TargetRateRegularizer(beta=2.0, target=0.25)(out)
    assert target_rate.item() == pytest.approx(2.0 * ((0.5 - 0.25) ** 2 + (1.0 - 0.25) ** 2) / 2)
    target_rate.backward()
    assert all(m.grad is not None and m.grad.abs().sum() > 0 for m in out.masks)
    l1 = L1Regularizer(beta=0.5)(out)
    assert l1.item() == pytest.approx(0.5 * 0.4)
    l1.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in out.probs)
    assert FlopsRegularizer(beta=1.0, minimum=20, dense_macs=1000)(out).item() == pytest.approx(0.1)
    assert all(r(out).dtype == torch.float32 for r in [L1Regularizer(1.0), TargetRateRegularizer(1.0, 0.5)])


def test_a_model_without_gates_costs_nothing():
    plain = Output(torch.zeros(4, 10), torch.full((4,), 300.0, dtype=torch.float64), [])
    assert TargetRateRegularizer(1.0, 0.5)(plain).item() == 0.0 and L1Regularizer(1.0)(plain).item() == 0.0


@pytest.mark.parametrize(
    "overrides, kind",
    [
        (["regularizer=flops"], FlopsRegularizer),
        (["regularizer=target_rate", "regularizer.target=0.3"], TargetRateRegularizer),
        (["regularizer=l1"], L1Regularizer),
        (["regularizer=none"], type(None)),
        (["regularizer=l1", "regularizer.beta=0"], type(None)),
    ],
)
def test_built_from_the_config_group(overrides, kind):
    cfg = compose_config(*overrides)
    validate(cfg)
    regularizer = build_regularizer(cfg.regularizer, dense_macs=1000)
    assert isinstance(regularizer, kind)
    if kind is TargetRateRegularizer:
        assert regularizer.target == 0.3


def test_unknown_regularizer_and_bad_target_are_errors():
    with pytest.raises(ValueError, match="unknown regularizer 'kl'; available: flops, target_rate, l1, none"):
        build_regularizer({"name": "kl", "beta": 1.0}, 1000)
    with pytest.raises(ValueError, match=r"target is a keep rate in \[0, 1\], got 1.5"):
        TargetRateRegularizer(1.0, 1.5)


@pytest.mark.parametrize(
    "override, message",
    [
        ("regularizer.target=1.5", "regularizer.target is a keep rate in [0, 1], got 1.5"),
        ("regularizer.target=-0.1", "regularizer.target is a keep rate in [0, 1], got -0.1"),
        ("regularizer.beta=-1", "regularizer.beta must be >= 0"),
        ("regularizer.name=kl", "regularizer.name='kl' is not one of: flops, target_rate, l1, none"),
    ],
)
def test_bad_regularizer_config_is_one_clear_line(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)) as error:
        validate(compose_config("regularizer=target_rate", override))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_target_rate_and_flops_move_a_miniature_run_to_their_targets(tmp_path, tiny_overrides):
    """Gates start open (keep probability 0.9: every channel kept) and both terms aim at 0.3: the keep
    rate for target_rate, the compute ratio for flops. Adam scales every parameter's step alike, so one
    epoch of a miniature run suffices; it also lets cross-entropy alone move the gates, hence the
    comparison with a run without a regularizer."""
    common = [*tiny_overrides, "trainer.max_epochs=1", "gate.init_keep=0.9", "optimizer=adamw", "optimizer.lr=0.05"]
    runs = {
        "none": ["regularizer=none"],
        "target_rate": ["regularizer=target_rate", "regularizer.target=0.3", "regularizer.beta=10"],
        "flops": ["regularizer=flops", "regularizer.minimum=30", "regularizer.beta=20"],
    }
    final = {}
    for name, regularizer in runs.items():
        overrides = [*common, *regularizer]
        final[name] = execute(compose_config(*overrides), str(tmp_path / name), overrides)["final"]
    free_keep, free_ratio = final["none"]["test/keep_rate"], final["none"]["test/compute_ratio"]
    keep, ratio = final["target_rate"]["test/keep_rate"], final["flops"]["test/compute_ratio"]
    assert free_keep > 0.55 and free_ratio > 0.55, final["none"]
    assert abs(keep - 0.3) < 0.1 and abs(keep - 0.3) < abs(free_keep - 0.3) - 0.25, (keep, free_keep)
    assert abs(ratio - 0.3) < 0.1 and abs(ratio - 0.3) < abs(free_ratio - 0.3) - 0.25, (ratio, free_ratio)
