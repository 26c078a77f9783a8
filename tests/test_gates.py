"""Gates: one interface, the ACS-GN gate's options, binary masks and its own cost."""
import copy
import re

import pytest
import torch
from helpers import counted_macs, materialize_dgconvs

from acs.gates import ACSGate, create_gate, list_gates
from acs.ops import DGConv2d


def test_registry_names_and_errors():
    assert {"acs", "none"} <= set(list_gates())
    assert create_gate("none", 16, 12) is None and create_gate(None, 16, 12) is None
    with pytest.raises(ValueError, match="unknown gate 'acz'.*did you mean acs"):
        create_gate("acz", 16, 12)


def test_options_from_a_mapping():
    gate = create_gate({"name": "acs", "width": 16, "conv": "dense", "init_keep": 0.7}, 40, 12)
    assert isinstance(gate, ACSGate)
    assert gate.reduce.out_channels == 16 and gate.head.out_channels == 12
    assert not any(isinstance(m, DGConv2d) for m in gate.modules())
    gate = create_gate({"name": "acs", "width": 24}, 40, 12)
    assert isinstance(gate.conv_a, DGConv2d) and gate.conv_a.num_gates == 3


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"width": 0}, "gate.width must be >= 1, got 0"),
        ({"init_keep": 1.0}, "gate.init_keep must lie in (0, 1), got 1.0"),
        ({"conv": "sparse"}, "gate.conv must be one of dgconv, dense, group, got 'sparse'"),
    ],
)
def test_bad_options_are_clear_errors(bad, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        create_gate({"name": "acs", **bad}, 16, 12)


def test_masks_are_exactly_binary_and_follow_init_keep():
    x = torch.randn(16, 40, 16, 16)
    rates = []
    for keep in [0.02, 0.5, 0.98]:
        mask = ACSGate(40, 12, init_keep=keep)(x).mask
        assert mask.shape == (16, 12)
        assert set(mask.unique().tolist()) <= {0.0, 1.0}
        rates.append(mask.mean().item())
    assert rates[0] < 0.1 and 0.1 < rates[1] < 0.9 and rates[2] > 0.9


def test_gradient_reaches_every_gate_parameter_through_the_mask():
    gate = ACSGate(20, 12, width=32, init_keep=0.5)
    torch.nn.init.normal_(gate.head.weight, std=1.0)
    features = torch.randn(4, 12, 1, 1)
    loss = (gate(torch.randn(4, 20, 16, 16)).mask[:, :, None, None] * features).sum()
    loss.backward()
    for name in ["reduce.weight", "conv_a.weight", "conv_b.weight", "head.weight", "head.bias", "bn.weight"]:
        grad = dict(gate.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


@pytest.mark.parametrize("name", ["acs", "ddi", "aig", "fbs"])
def test_detach_input_stops_the_gates_gradients_at_the_features_it_reads(name):
    """The same decisions either way; with detach_input the gate network still learns, but nothing
    of its loss (the compute term's, the mask's) flows back into the backbone features it reads."""
    torch.manual_seed(0)
    x = torch.randn(4, 20, 8, 8)
    gate = create_gate({"name": name}, 20, 12)
    decisions, grads = [], []
    for detach in (False, True):
        gate.detach_input = detach
        gate.zero_grad()
        features = x.clone().requires_grad_()
        torch.manual_seed(1)  # the same Gumbel noise for AIG's estimator both times
        out = gate(features)
        (out.mask.sum() + out.probs.sum()).backward()
        decisions.append(out.mask)
        grads.append(features.grad)
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in gate.parameters() if p.ndim > 1), detach
    assert torch.equal(decisions[0], decisions[1])
    assert grads[0].abs().sum() > 0 and grads[1] is None
    assert create_gate({"name": name, "detach_input": True}, 20, 12).detach_input


@pytest.mark.parametrize("conv", ["dgconv", "dense"])
@pytest.mark.parametrize("hw", [(32, 32), (15, 9)])
def test_own_macs_equal_flop_counter(conv, hw):
    gate = ACSGate(40, 12, width=32, conv=conv)
    for m in gate.modules():
        if isinstance(m, DGConv2d):
            m.gates.data = torch.randn(m.num_gates)
    x = torch.randn(1, 40, *hw)
    deployed = materialize_dgconvs(copy.deepcopy(gate)).eval()
    assert gate.macs(hw).item() == counted_macs(deployed, x)


def test_dead_input_channels_are_not_counted():
    gate = ACSGate(40, 12, width=32)
    live = torch.ones(2, 40)
    live[1, :25] = 0  # second sample: 25 channels skipped upstream
    macs = gate.macs((16, 16), live)
    assert macs[0] - macs[1] == 25 * 32 * 8 * 8  # 1×1 stride-2 reduce conv: 8×8 outputs per channel
