"""DenseNets: the standard shapes, the registry, gating and the per-sample cost model."""
import copy

import pytest
import torch
import torch.nn.functional as F
from helpers import counted_macs, materialize_dgconvs

import acs
from acs.gates import ACSGate
from acs.models.densenet import DenseNet
from acs.ops import DGConv2d


def gates_of(model):
    return [m for m in model.modules() if isinstance(m, ACSGate)]


def randomize_gates(model, bias=0.0, std=2.0):
    """Makes every gate's decision depend on the input, keeping a fraction set by ``bias``."""
    for gate in gates_of(model):
        torch.nn.init.normal_(gate.head.weight, std=std)
        torch.nn.init.constant_(gate.head.bias, bias)
    for m in model.modules():
        if isinstance(m, DGConv2d):
            m.gates.data = torch.randn(m.num_gates)
    return model


def test_registry_lists_and_rejects():
    assert {"densenet40", "densenet41_acs", "densenet_bc100"} <= set(acs.list_models())
    assert acs.list_models("densenet4*") == ["densenet40", "densenet41_acs"]
    with pytest.raises(ValueError, match="unknown model 'densenet4'.*densenet40"):
        acs.create_model("densenet4")


def test_densenet40_is_the_standard_network():
    model = acs.create_model("densenet40", num_classes=10, gate="none").eval()
    assert sum(p.numel() for p in model.parameters()) == 1_019_722
    x = torch.randn(1, 3, 32, 32)
    out = model(x)
    assert isinstance(out, acs.Output) and out.masks == []
    assert out.logits.shape == (1, 10) and out.macs.shape == (1,)
    flop_counter_macs = counted_macs(model, x)
    assert out.macs.item() == flop_counter_macs == model.dense_macs((3, 32, 32))
    assert abs(flop_counter_macs - 2.65e8) / 2.65e8 < 0.01


@pytest.mark.parametrize("name", ["densenet41_acs", "densenet_bc100"])
def test_other_densenets_count_like_flop_counter(name):
    model = acs.create_model(name, gate="none", conv="dense").eval()
    x = torch.randn(1, 3, 32, 32)
    assert model(x).macs.item() == counted_macs(model, x) == model.dense_macs((3, 32, 32))


def test_densenet41_acs_uses_dgconv_and_counts_its_groups():
    model = randomize_gates(acs.create_model("densenet41_acs", gate="none")).eval()
    dgconvs = [m for m in model.modules() if isinstance(m, DGConv2d)]
    assert len(dgconvs) == 18 and all(m.num_gates == 5 for m in dgconvs)
    x = torch.randn(1, 3, 32, 32)
    macs = model(x).macs.item()
    assert macs == counted_macs(materialize_dgconvs(copy.deepcopy(model)), x)
    assert macs < model.dense_macs((3, 32, 32)) == counted_macs(model, x)


@pytest.mark.parametrize("name", ["densenet40", "densenet41_acs", "densenet_bc100"])
def test_classes_and_input_shapes(name):
    model = acs.create_model(name, num_classes=100).eval()
    assert model(torch.randn(2, 3, 32, 32)).logits.shape == (2, 100)
    mnist = acs.create_model(name, num_classes=10, in_channels=1).eval()
    out = mnist(torch.randn(2, 1, 28, 28))
    assert out.logits.shape == (2, 10) and len(out.masks) > 0


def test_gated_masks_are_binary_and_cost_varies_per_sample():
    model = randomize_gates(acs.create_model("densenet40", gate={"name": "acs", "width": 16})).eval()
    out = model(torch.randn(6, 3, 32, 32))
    assert len(out.masks) == 36 and all(m.shape == (6, 12) for m in out.masks)
    assert all(set(m.unique().tolist()) <= {0.0, 1.0} for m in out.masks)
    assert out.macs.unique().numel() == 6


def test_macs_fall_as_more_channels_are_skipped():
    model = acs.create_model("densenet40").eval()
    x = torch.randn(4, 3, 32, 32)
    previous = None
    for bias in [4.0, 1.0, 0.0, -1.0, -4.0]:
        torch.manual_seed(0)  # the same gate weights every time: only the bias moves
        randomize_gates(model, bias=bias, std=1.0)
        out = model(x)
        keep = torch.cat(out.masks, 1).mean().item()
        if previous is not None:
            assert keep <= previous[0] and out.macs.mean() <= previous[1]
        previous = keep, out.macs.mean()
    assert previous[0] < 0.1


def test_all_gates_open_costs_dense_plus_the_gates_own_cost():
    model = acs.create_model("densenet40").eval()
    randomize_gates(model, bias=50.0, std=0.01)
    gate_inputs = []
    hooks = [g.register_forward_hook(lambda m, i, o: gate_inputs.append((m, i[0][:1]))) for g in gates_of(model)]
    out = model(torch.randn(3, 3, 32, 32))
    for h in hooks:
        h.remove()
    assert all(torch.all(m == 1) for m in out.masks)
    gate_cost = sum(counted_macs(materialize_dgconvs(copy.deepcopy(g)), x) for g, x in gate_inputs)
    assert torch.all(out.macs == model.dense_macs((3, 32, 32)) + gate_cost)


def expected_densenet40_macs(model: DenseNet, masks, sample: int) -> float:
    """The cost model written out by hand for densenet40: conv = 9·H·W·(kept outputs)·(live inputs)."""
    total, side, masks = 27 * 16 * 32 * 32, 32, iter(masks)
    live = 16.0
    for block_index, block in enumerate(model.blocks):
        for layer in block:
            mask = next(masks)[sample]
            g = layer.gate
            h2, h4 = (side + 1) // 2, (side + 3) // 4
            total += h2 * h2 * g.reduce.out_channels * live
            total += (g.conv_a.mask().sum() + g.conv_b.mask().sum()).item() * 9 * h4 * h4
            total += g.head.in_channels * g.head.out_channels
            total += 9 * side * side * mask.sum().item() * live
            live += mask.sum().item()
        if block_index < 2:
            out_channels = model.transitions[block_index].conv.out_channels
            total += side * side * out_channels * live
            live, side = float(out_channels), side // 2
    return total + live * model.fc.out_features


def test_skipped_channels_are_not_live_inputs_downstream():
    model = randomize_gates(acs.create_model("densenet40"), bias=0.0).eval()
    out = model(torch.randn(3, 3, 32, 32))
    for sample in range(3):
        assert out.macs[sample].item() == expected_densenet40_macs(model, out.masks, sample)


def test_per_sample_macs_do_not_depend_on_the_batch():
    model = randomize_gates(acs.create_model("densenet_bc100")).eval()
    x = torch.randn(4, 3, 32, 32)
    together = model(x).macs
    alone = torch.cat([model(x[i : i + 1]).macs for i in range(4)])
    assert torch.equal(together, alone)


def test_gradients_reach_gates_gate_networks_and_convs():
    model = randomize_gates(acs.create_model("densenet41_acs"), bias=0.0, std=0.5).train()
    out = model(torch.randn(4, 3, 32, 32))
    loss = F.cross_entropy(out.logits, torch.tensor([0, 1, 2, 3])) + out.macs.mean() / model.dense_macs((3, 32, 32))
    loss.backward()
    layer = model.blocks[1][2]
    for name, param in [
        ("backbone DGConv gates", layer.conv2.gates),
        ("backbone conv weight", layer.conv2.weight),
        ("gate 1x1 conv", layer.gate.reduce.weight),
        ("gate DGConv weight", layer.gate.conv_a.weight),
        ("gate DGConv gates", layer.gate.conv_b.gates),
        ("gate head", layer.gate.head.weight),
    ]:
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_dense_macs_probe_leaves_batchnorm_statistics_alone():
    model = acs.create_model("densenet40").train()
    before = copy.deepcopy(model.state_dict())
    model.dense_macs((3, 32, 32))
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
