"""Static baselines of the comparisons: DenseNet-40 with a fixed grouped 3×3 convolution, and
ResNeXt (fixed groups) beside G-ResNeXt, chosen from the command line and counted by the cost model."""
import pytest
import torch
from helpers import compose_config, counted_macs, materialize_dgconvs

import acs
from acs.training.builders import build_model
from acs.training.config import ConfigError, validate


def test_fixed_group_densenet40_from_the_command_line():
    cfg = compose_config("model=densenet40", "model.conv=group", "model.groups=4", "gate=none")
    validate(cfg)
    model = build_model(cfg.model, cfg.gate, 10, 3)
    convs = [layer.conv2 for block in model.blocks for layer in block]
    assert all(isinstance(c, torch.nn.Conv2d) and c.groups == 4 for c in convs)
    dense = acs.create_model("densenet40", gate="none")
    # Only the 3×3 convolutions shrink, by the group count; stem, transitions and classifier stay.
    conv_macs = sum(layer.conv2.in_channels * layer.conv2.out_channels * 9 for block in dense.blocks for layer in block)
    per_pixel = {0: 32 * 32, 1: 16 * 16, 2: 8 * 8}
    saved = sum(
        layer.conv2.in_channels * layer.conv2.out_channels * 9 * per_pixel[b] * 3 / 4
        for b, block in enumerate(dense.blocks)
        for layer in block
    )
    assert conv_macs > 0
    assert model.dense_macs((3, 32, 32)) == dense.dense_macs((3, 32, 32)) - saved
    x = torch.randn(2, 3, 16, 16)
    assert counted_macs(model, x[:1]) == model(x[:1]).macs.item()


def test_fixed_groups_with_gates_are_counted_like_a_flop_counter():
    # Every gate forced open, the gates' DGConvs as the grouped convs they stand for: the model then
    # executes exactly what the cost model counts.
    model = acs.create_model("densenet40", gate={"name": "acs", "width": 8}, conv="group", groups=2).eval()
    for module in model.modules():
        if isinstance(module, acs.gates.ACSGate):
            torch.nn.init.constant_(module.head.bias, 1e6)
    x = torch.randn(1, 3, 8, 8)
    out = model(x)
    assert all(bool((mask == 1).all()) for mask in out.masks)
    assert counted_macs(materialize_dgconvs(model), x) == out.macs.item()


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["model.conv=dense", "model.groups=4"], "groups sets the fixed group count of conv 'group'"),
        (["model.conv=group", "model.groups=5"], "conv 'group' needs a group count dividing"),
        (["model=g_resnext29_2x64d", "gate=none", "model.groups=4"], "model 'g_resnext29_2x64d' has no option groups"),
    ],
)
def test_bad_group_settings_are_config_errors(overrides, message):
    cfg = compose_config(*overrides)
    with pytest.raises(ConfigError, match=message):
        build_model(cfg.model, cfg.gate, 10, 3)


@pytest.mark.parametrize("conv, groups", [("group", 2), ("dgconv", None), ("dense", None)])
def test_resnext_fixed_learned_and_dense_groupings(conv, groups):
    cfg = compose_config("model=g_resnext29_2x64d", "gate=none", f"model.conv={conv}")
    model = build_model(cfg.model, cfg.gate, 10, 3)
    grouped = [m.conv2 for stage in (model.layer1, model.layer2, model.layer3) for m in stage]
    if groups:
        assert all(c.groups == groups for c in grouped)  # ResNeXt's cardinality, fixed
    x = torch.randn(1, 3, 8, 8)
    assert model(x).macs.item() > 0


@pytest.mark.parametrize("name", ["densenet40", "densenet41_acs", "densenet_bc100"])
def test_thinner_densenets_from_the_command_line(name):
    """``model.growth_rate`` gives the uniformly thinner static front: every layer adds k channels,
    and the cost model still counts what a flop counter sees."""
    x = torch.randn(1, 3, 8, 8)
    macs = []
    for k in (4, 8, None):
        overrides = [f"model={name}", "gate=none"] + ([f"model.growth_rate={k}"] if k else [])
        cfg = compose_config(*overrides)
        validate(cfg)
        model = materialize_dgconvs(build_model(cfg.model, cfg.gate, 10, 3)).eval()
        layers = [layer for block in model.blocks for layer in block]
        assert {layer.conv2.out_channels for layer in layers} == {k or acs.models.MODELS.options(name)["growth_rate"]}
        assert counted_macs(model, x) == model(x).macs.item()
        macs.append(model.dense_macs((3, 8, 8)))
    assert macs[0] < macs[1] < macs[2]


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["model.growth_rate=0"], "model.growth_rate must be >= 1, got 0"),
        (
            ["model=g_resnext29_2x64d", "gate=none", "model.growth_rate=8"],
            "model 'g_resnext29_2x64d' has no option growth_rate",
        ),
    ],
)
def test_bad_growth_rates_are_config_errors(overrides, message):
    cfg = compose_config(*overrides)
    with pytest.raises(ConfigError, match=message):
        build_model(cfg.model, cfg.gate, 10, 3)
