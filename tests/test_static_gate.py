"""gate=static: one learned keep decision per channel for every input, no gate cost; acs.deploy.to_thin
makes it a physically thinner ungated DenseNet, exact against the gated model and counted alike."""
import re

import pytest
import torch
from helpers import counted_macs

import acs
from acs.deploy import ThinDenseNet, to_dynamic, to_thin
from acs.deploy.export import export_onnx
from acs.gates import Gate, StaticGate, create_gate, keep_biases
from acs.models.densenet import DenseNet


def test_one_decision_for_every_sample_at_no_cost():
    gate = create_gate({"name": "static", "init_keep": 0.5}, 40, 12)
    gate.logit.data = torch.linspace(-1, 1, 12)  # the middle one is exactly 0: σ(0) is not > 0.5
    x = torch.randn(5, 40, 8, 8)
    for training in (True, False):
        mask = gate.train(training)(x).mask
        assert torch.equal(mask, (torch.linspace(-1, 1, 12) > 0).float().expand(5, -1))
    assert torch.equal(gate.kept(), torch.arange(6, 12))
    assert gate.macs((8, 8)).item() == 0 and counted_macs(gate.eval(), x) == 0
    assert torch.equal(gate.macs((8, 8), torch.ones(5, 40)), torch.zeros(5, dtype=torch.float64))


def test_init_keep_sets_every_channel_and_the_logits_learn_through_the_mask():
    assert create_gate({"name": "static", "init_keep": 0.8}, 4, 6).eval()(torch.randn(2, 4, 3, 3)).mask.all()
    assert not create_gate({"name": "static", "init_keep": 0.2}, 4, 6).eval()(torch.randn(2, 4, 3, 3)).mask.any()
    gate = StaticGate(4, 6, init_keep=0.5)
    gate(torch.randn(3, 4, 2, 2)).mask.sum().backward()  # straight-through: d mask / d logit = σ' = 1/4
    assert torch.allclose(gate.logit.grad, torch.full((6,), 3 * 0.25))
    assert keep_biases(torch.nn.Sequential(gate)) == [gate.logit]


def test_gumbel_draws_per_sample_in_training_only():
    gate = StaticGate(4, 64, init_keep=0.5, estimator="gumbel")
    x = torch.randn(8, 4, 2, 2)
    mask = gate.train()(x).mask
    assert not torch.equal(mask[0], mask[1])
    assert torch.equal(gate.eval()(x).mask, torch.zeros(8, 64))  # σ(0) = 0.5 is not kept


@pytest.mark.parametrize(
    "options, message",
    [
        ({"width": 8}, "gate 'static' has no option width"),
        ({"init_keep": 0}, "gate.init_keep must lie in (0, 1), got 0"),
    ],
)
def test_bad_options(options, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        create_gate({"name": "static", **options}, 4, 6)


def trained_like(model: DenseNet, seed: int = 0) -> DenseNet:
    """Non-trivial eval-mode BatchNorm (``relu(shift) != 0``: dropped channels fold to constants) and
    keep logits that drop about half the channels, some layers entirely."""
    torch.manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0.0, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.normal_(1.0, 0.5)
            m.bias.data.normal_(0.0, 0.5)
    gates = [m for m in model.modules() if isinstance(m, StaticGate)]
    for index, gate in enumerate(gates):
        gate.logit.data.normal_()
        if index % 5 == 2:
            gate.logit.data.fill_(-1.0)
    return model.eval()


MODELS = {
    "densenet40": lambda: acs.create_model("densenet40", gate="static"),  # 3×3 convs on the concatenation
    "bottleneck": lambda: DenseNet(6, (3, 4), 8, 2, 0.5, 10, 3, gate="static"),  # 1×1 bottleneck, compression
}


@pytest.mark.parametrize("size", [(12, 12), (9, 5)])
@pytest.mark.parametrize("name", list(MODELS))
def test_thin_model_is_the_gated_model_with_smaller_convolutions(name, size):
    model = trained_like(MODELS[name]())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(4, 3, *size) * 3
    thin = to_thin(model, (3, *size))
    with torch.no_grad():
        gated, got = model(x), thin(x)
    assert isinstance(thin, ThinDenseNet) and not any(isinstance(m, Gate) for m in thin.modules())
    assert torch.allclose(got.logits, gated.logits, atol=1e-4, rtol=0)
    # Its MACs are the gated model's, by its own shapes and by torch's FLOP counter.
    assert torch.equal(got.macs, gated.macs)
    assert counted_macs(thin, x[:1]) == gated.macs[0].item()
    kept = sum(int(mask[0].sum()) for mask in gated.masks)
    assert 0.2 < kept / sum(mask.shape[1] for mask in gated.masks) < 0.8
    dense = [c for c in thin.modules() if isinstance(c, torch.nn.Conv2d) and c.kernel_size == (3, 3)][1:]
    assert sum(c.out_channels for c in dense) == kept  # dropped channels are gone, not masked
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_a_thin_model_refuses_another_input_size():
    model = trained_like(MODELS["densenet40"]())
    thin = to_thin(model, (3, 12, 12))
    with pytest.raises(ValueError, match=r"built for inputs whose dense layers run at \(12, 12\), got \(16, 16\)"):
        thin(torch.randn(1, 3, 16, 16))


def test_what_cannot_be_thinned_says_why():
    with pytest.raises(ValueError, match="to_thin needs input-independent gates .*got ACSGate"):
        to_thin(acs.create_model("densenet40", gate={"name": "acs", "width": 8}), (3, 8, 8))
    with pytest.raises(NotImplementedError, match="plain bias-free convolutions"):
        to_thin(trained_like(acs.create_model("densenet40", gate="static", conv="dgconv")), (3, 8, 8))
    with pytest.raises(NotImplementedError, match="deploy with acs.deploy.to_thin"):
        to_dynamic(acs.create_model("densenet40", gate="static"), native=False)


def test_thin_model_exports_to_onnx(tmp_path):
    thin = to_thin(trained_like(MODELS["bottleneck"]()), (3, 8, 8))
    assert export_onnx(thin, tmp_path / "thin.onnx", (3, 8, 8)).stat().st_size > 0
