"""acs.deploy.to_dynamic: the executor matches the model's eval-mode logits and masks, and executes
exactly the MACs of the cost model (and of an independent FLOP counter)."""
import copy

import pytest
import torch
import torch.nn.functional as F
from helpers import counted_macs

import acs
from acs.deploy import to_dynamic
from acs.deploy.fold import conv3x3_kn2row, kn2row_weight
from acs.gates import ACSGate
from acs.models.resnext import GResNeXt
from acs.ops import DGConv2d

GATE = {"name": "acs", "width": 8}


pytestmark = pytest.mark.usefixtures("one_thread")


def randomize(model, regime="random", sort=None, size=(12, 12)):
    """Non-trivial eval-mode BatchNorm, random DGConv groupings, random gate heads, then gate biases
    for ``regime``: ``random`` (each channel kept by about half the samples), ``all_on``, or
    ``mostly_off`` (most gates keep nothing, the others about one sample in ten)."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0.0, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.normal_(1.0, 0.5)  # some negative scales too
            m.bias.data.normal_(0.0, 0.5)  # relu(shift) != 0: dead channels fold to non-zero constants
        elif isinstance(m, DGConv2d):
            m.gates.data = torch.randn(m.num_gates)
            if sort is not None:
                m.sort = sort
        elif isinstance(m, ACSGate):
            torch.nn.init.normal_(m.head.weight, std=2.0)
    if any(isinstance(m, ACSGate) for m in model.modules()):
        calibrate(model.eval(), regime, size)
    return model.eval()


def inputs(n, size, channels=3):
    """Samples that differ in scale and colour, so that even deep gates see different inputs."""
    scale = torch.exp(torch.empty(n, 1, 1, 1).uniform_(-1.0, 3.0))
    return torch.randn(n, channels, *size) * scale + torch.randn(n, channels, 1, 1) * 3.0


@torch.no_grad()
def calibrate(model, regime, size=(12, 12)):
    """Sets each gate's head bias from its logits on separate calibration samples, layer by layer
    (earlier biases change later inputs). Inputs of very different scales make the decisions vary
    per sample by margins far above float rounding, so model and executor agree on every mask."""
    def set_bias(gate, args):
        h = F.conv2d(args[0][:, :, ::2, ::2], gate.reduce.weight)
        z = F.linear(gate.conv_b(gate.bn(gate.conv_a(h)).relu()).mean((2, 3)), gate.head.weight.flatten(1))
        if regime == "all_on" or (regime == "mostly_off" and torch.rand(()) < 0.7):
            gate.head.bias.fill_(1e6 if regime == "all_on" else -1e6)
        else:
            gate.head.bias.copy_(-torch.quantile(z, 0.5 if regime == "random" else 0.9, dim=0))

    hooks = [m.register_forward_pre_hook(set_bias) for m in model.modules() if isinstance(m, ACSGate)]
    model(inputs(16, size))
    for hook in hooks:
        hook.remove()


def assert_same(model, executor, x):
    with torch.no_grad():
        expected = model(x)
    got = executor(x)
    assert isinstance(got, acs.Output)
    assert got.logits.shape == expected.logits.shape
    assert torch.allclose(got.logits, expected.logits, atol=1e-4, rtol=0), (got.logits - expected.logits).abs().max()
    assert got.macs.dtype == torch.float64 and got.macs.shape == (x.shape[0],)
    assert torch.equal(got.macs, expected.macs)
    assert len(got.masks) == len(expected.masks)
    assert all(torch.equal(a, b) for a, b in zip(got.masks, expected.masks))
    return expected


@pytest.mark.parametrize("regime", ["random", "all_on", "mostly_off"])
@pytest.mark.parametrize(
    "name, size",
    [("densenet40", (20, 20)), ("densenet40", (9, 5)), ("densenet41_acs", (16, 16)),
     ("densenet41_acs", (9, 5)), ("densenet_bc100", (12, 12))],
)
def test_gated_densenets_match_the_model(name, size, regime):
    # 9×5 input: the last block runs at 2×1, so top/bottom borders coincide or touch.
    model = randomize(acs.create_model(name, gate=GATE), regime, size=size)
    executor = to_dynamic(model)
    out = assert_same(model, executor, inputs(4, size))
    keep = torch.cat(out.masks, 1)
    if regime == "all_on":
        assert torch.all(keep == 1)
    elif regime == "mostly_off":
        assert keep.mean() < 0.2 and any(torch.all(m == 0, 1).any() for m in out.masks)
    else:
        assert 0.2 < keep.mean() < 0.8
        # Every layer's decisions vary per sample, most channels' too.
        assert all(m.std(0).amax() > 0 for m in out.masks) and keep.std(0).mean() > 0.2


@pytest.mark.parametrize("sort", [True, False])
def test_contiguous_and_interleaved_dgconv_groupings(sort):
    model = randomize(acs.create_model("densenet41_acs", gate=GATE), sort=sort)
    assert_same(model, to_dynamic(model), inputs(3, (12, 12)))


@pytest.mark.parametrize(
    "name, kwargs",
    [("densenet40", {}), ("densenet40", {"conv": "dgconv"}), ("densenet41_acs", {}), ("densenet_bc100", {})],
)
def test_ungated_densenets_match_the_model(name, kwargs):
    model = randomize(acs.create_model(name, gate="none", **kwargs))
    out = assert_same(model, to_dynamic(model), inputs(2, (10, 10)))
    assert out.masks == []


@pytest.mark.parametrize(
    "make, size",
    [(lambda: GResNeXt((1, 2, 1), 2, 4, "cifar", 10), (9, 9)),
     (lambda: GResNeXt((1, 1), 4, 4, "imagenet", 7, in_channels=1), (32, 24)),
     (lambda: acs.create_model("g_resnext29_2x64d"), (8, 8))],
)
def test_g_resnext_matches_the_model(make, size):
    model = randomize(make())
    assert any(m.groups > 1 for m in model.modules() if isinstance(m, DGConv2d))
    executor = to_dynamic(model)
    assert not any(isinstance(m, DGConv2d) for m in executor.modules())
    assert_same(model, executor, inputs(2, size, model.conv1.in_channels))
    x = inputs(1, size, model.conv1.in_channels)
    assert counted_macs(executor, x) == executor(x).macs.item()


@pytest.mark.parametrize("name", ["densenet40", "densenet41_acs", "densenet_bc100"])
@pytest.mark.parametrize("regime", ["random", "mostly_off"])
def test_executed_macs_are_what_a_flop_counter_sees(name, regime):
    model = randomize(acs.create_model(name, gate=GATE), regime)
    executor = to_dynamic(model)
    for _ in range(2):
        x = inputs(1, (9, 7))
        macs = executor(x).macs.item()
        assert macs == counted_macs(executor, x) == model(x).macs.item()


def test_eager_and_torchscript_executors_agree():
    model = randomize(acs.create_model("densenet40", gate=GATE))
    scripted, eager = to_dynamic(model), to_dynamic(model, script=False)
    assert isinstance(scripted.blocks[0], torch.jit.ScriptModule)
    assert not isinstance(eager.blocks[0], torch.jit.ScriptModule)
    x = inputs(3, (9, 9))
    a, b = scripted(x), eager(x)
    assert torch.allclose(a.logits, b.logits, atol=1e-5) and torch.equal(a.macs, b.macs)
    assert all(torch.equal(m, n) for m, n in zip(a.masks, b.masks))
    assert counted_macs(eager, x[:1]) == b.macs[0].item()


def test_a_batch_equals_its_samples_one_by_one():
    model = randomize(acs.create_model("densenet40", gate=GATE))
    executor = to_dynamic(model)
    x = inputs(5, (8, 8))
    together = executor(x)
    alone = [executor(x[i : i + 1]) for i in range(5)]
    assert torch.equal(together.logits, torch.cat([o.logits for o in alone]))
    assert torch.equal(together.macs, torch.cat([o.macs for o in alone]))
    assert together.macs.unique().numel() > 1  # the samples really took different paths
    for i, mask in enumerate(together.masks):
        assert torch.equal(mask, torch.cat([o.masks[i] for o in alone]))


def test_conversion_and_execution_leave_the_model_alone():
    model = randomize(acs.create_model("densenet41_acs", gate=GATE)).train()
    before = copy.deepcopy(model.state_dict())
    executor = to_dynamic(model)
    executor(inputs(2, (8, 8)))
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    # The executor holds copies: changing the model later does not change the executor.
    shared = {p.data_ptr() for p in model.state_dict().values()}
    assert not any(b.data_ptr() in shared for b in executor.buffers())


def test_grouped_dgconv_reading_gated_inputs_is_refused_clearly():
    model = randomize(acs.create_model("densenet40", gate=GATE, conv="dgconv"))
    with pytest.raises(NotImplementedError, match="grouped.*gated"):
        to_dynamic(model)
    with pytest.raises(TypeError, match="DenseNet and GResNeXt"):
        to_dynamic(torch.nn.Linear(2, 2))


@pytest.mark.parametrize("height, width", [(1, 1), (1, 4), (2, 2), (2, 5), (3, 3), (6, 4)])
def test_constant_channels_fold_exactly_at_the_borders(height, width):
    # Channels 1 and 3 are constant images (skipped upstream, then BN-ReLU): the executor runs the
    # conv on the other channels only and adds the constants' per-(output, kernel position) table.
    weight, value, x = torch.randn(5, 4, 3, 3), torch.randn(4), torch.randn(4, height, width)
    live, dead = torch.tensor([0, 2]), torch.tensor([1, 3])
    x[dead] = value[dead][:, None, None]
    expected = F.conv2d(x[None], weight, padding=1)[0]
    rows = kn2row_weight(weight)  # (out, 9, in)
    constant = (rows[:, :, dead] * value[dead]).sum(2)
    out, macs = conv3x3_kn2row(x[live].view(2, -1), rows[:, :, live].reshape(-1, 2), height, width, constant)
    assert torch.allclose(out.view(5, height, width), expected, atol=1e-5)
    assert macs == 5 * 2 * 9 * height * width
