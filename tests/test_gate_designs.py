"""The compared gate designs (acs, acs with dense or fixed-group convs, ddi, aig, fbs, static) and the binary
estimators: every combination with every regularizer trains, masks are binary, costs match an independent counter."""
import copy
import math
import re

import pytest
import torch
from helpers import TINY, compose_config, counted_macs, materialize_dgconvs

import acs
from acs.cost import MacMeter
from acs.gates import AIGGate, FBSGate, Gate, create_gate, summarize
from acs.models.densenet import DenseNet
from acs.ops import DGConv2d, binary_keep
from acs.training.builders import build_data, build_model, seed_everything
from acs.training.config import ConfigError, validate
from acs.training.engine import StepContext, run_epoch
from acs.training.objective import build_regularizer
from acs.training.optim import build_optimizer

# Gate variants with the estimators each accepts (fbs is deterministic and takes none).
GATES = {
    "acs": (["gate=acs", "gate.width=8"], ["ste", "gumbel"]),
    "acs_dense": (["gate=acs", "gate.width=8", "gate.conv=dense"], ["ste", "gumbel"]),
    "acs_group": (["gate=acs", "gate.width=8", "gate.conv=group", "gate.groups=4"], ["ste", "gumbel"]),
    "ddi": (["gate=ddi", "gate.width=8"], ["ste", "gumbel"]),
    "aig": (["gate=aig", "gate.width=8"], ["gumbel", "ste"]),
    "fbs": (["gate=fbs", "gate.density=0.5"], [None]),
    "static": (["gate=static"], ["ste", "gumbel"]),
}
REGULARIZERS = ["flops", "target_rate", "l1", "none"]
COMBINATIONS = [(gate, est, reg) for gate, (_, ests) in GATES.items() for est in ests for reg in REGULARIZERS]
SPECS = {
    "acs": {"name": "acs", "width": 16},
    "acs_dense": {"name": "acs", "width": 16, "conv": "dense"},
    "acs_group": {"name": "acs", "width": 16, "conv": "group", "groups": 4},
    "ddi": {"name": "ddi", "width": 16},
    "aig": {"name": "aig", "width": 16},
    "fbs": {"name": "fbs", "density": 0.5},
    "static": {"name": "static"},
}


def miniature(gate: str, estimator, reg: str):
    """Config as the command line composes it, then the model after one tiny training epoch."""
    overrides = [o for o in TINY if not o.startswith("gate.")] + GATES[gate][0]
    overrides += ["dataset.options.train_size=32", "dataset.batch_size=16", f"regularizer={reg}"]
    if estimator is not None:
        overrides += [f"gate.estimator={estimator}", "gate.temperature=0.5"]
    cfg = compose_config(*overrides)
    validate(cfg)
    seed_everything(cfg.seed, cfg.trainer.deterministic)
    loaders = build_data(cfg.dataset, cfg.seed)
    model = build_model(cfg.model, cfg.gate, loaders.num_classes, loaders.in_channels)
    dense = model.dense_macs(loaders.input_size)
    regularizer = build_regularizer(cfg.regularizer, dense)
    assert (regularizer is None) == (reg == "none")
    ctx = StepContext(torch.device("cpu"), loss=cfg.loss, regularizer=regularizer, progress=False)
    metrics = run_epoch(model, loaders.train, "train", dense, ctx, build_optimizer(cfg.optimizer, model))
    return model, loaders, metrics


@pytest.mark.parametrize("gate, estimator, reg", COMBINATIONS, ids=[f"{g}-{e}-{r}" for g, e, r in COMBINATIONS])
def test_every_gate_estimator_and_regularizer_trains(gate, estimator, reg):
    model, loaders, metrics = miniature(gate, estimator, reg)
    assert math.isfinite(metrics["train/loss"]) and 0 < metrics["train/compute_ratio"]
    # The last step's gradients (the optimizer does not clear them) reach every gate parameter.
    grads = {}
    for name, param in model.named_parameters():
        if ".gate." in name:
            assert param.grad is not None and torch.isfinite(param.grad).all(), name
            key = name.split(".gate.")[1]
            grads[key] = grads.get(key, 0.0) + param.grad.abs().sum().item()
    assert grads and all(total > 0 for total in grads.values()), grads
    images, _ = next(iter(loaders.train))
    for training in (True, False):
        model.train(training)
        out = model(images)
        assert len(out.masks) == len(out.probs) == 36
        for mask, probs in zip(out.masks, out.probs):
            assert set(mask.unique().tolist()) <= {0.0, 1.0}
            assert probs.shape == mask.shape and bool((probs >= 0).all())


@pytest.mark.parametrize("hw", [(32, 32), (15, 9)])
@pytest.mark.parametrize("gate", list(SPECS))
def test_own_macs_equal_flop_counter(gate, hw):
    module = create_gate(SPECS[gate], 40, 12)
    for m in module.modules():
        if isinstance(m, DGConv2d):
            m.gates.data = torch.randn(m.num_gates)
    deployed = materialize_dgconvs(copy.deepcopy(module)).eval()
    assert module.macs(hw).item() == counted_macs(deployed, torch.randn(2, 40, *hw))


@pytest.mark.parametrize("gate", [name for name in SPECS if name != "static"])  # static reads no input
def test_dead_inputs_cost_like_absent_ones(gate):
    """25 of 40 input channels skipped upstream cost exactly what a gate reading 15 channels costs."""
    full, narrow = create_gate(SPECS[gate], 40, 12), create_gate(SPECS[gate], 15, 12)
    for a, b in zip(full.modules(), narrow.modules()):
        if isinstance(a, DGConv2d):
            b.gates.data.copy_(a.gates)
    live = torch.ones(2, 40)
    live[1, :25] = 0
    macs = full.macs((16, 16), live)
    assert macs[0].item() == full.macs((16, 16)).item()
    assert macs[1].item() == narrow.macs((16, 16)).item() < macs[0].item()


def test_gumbel_estimator_keeps_with_the_sigmoid_probability_and_is_deterministic_at_eval():
    logits = torch.linspace(-2, 2, 9).expand(20000, 9).clone().requires_grad_()
    mask, probs = binary_keep(logits, "gumbel", 0.5, training=True)
    assert set(mask.unique().tolist()) == {0.0, 1.0}
    assert (mask.mean(0) - logits[0].sigmoid()).abs().max() < 0.02
    assert torch.equal(probs, logits.sigmoid())
    mask.sum().backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    evaluated, _ = binary_keep(logits, "gumbel", 0.5, training=False)
    assert torch.equal(evaluated, binary_keep(logits, "ste", 1.0, training=True)[0])
    assert torch.equal(evaluated[0], (logits[0] > 0).float())


def test_aig_is_argmax_of_its_logit_pair_at_eval_and_sampled_in_training():
    gate = AIGGate(20, 12, width=16, init_keep=0.5)
    x = torch.randn(8, 20, 6, 6)
    gate.eval()
    pair = gate.pair(gate.bn(gate.squeeze(x.mean((2, 3)))).relu()).view(8, 12, 2)
    assert torch.equal(gate(x).mask, (pair[..., 1] > pair[..., 0]).float())
    assert torch.allclose(gate(x).probs, pair.softmax(-1)[..., 1], atol=1e-6)
    gate.train()
    assert not torch.equal(gate(x).mask, gate(x).mask)  # Gumbel noise in training
    assert gate(x[:1]).mask.shape == (1, 12)  # a one-sample batch falls back to running BN statistics


def test_fbs_keeps_the_top_density_share_and_scales_the_layer_by_saliency():
    x = torch.randn(5, 16, 8, 8)
    for density, kept in [(1 / 3, 4), (0.5, 6), (0.01, 1), (1.0, 12)]:
        out = FBSGate(16, 12, density=density)(x)
        assert torch.equal(out.mask.sum(1), torch.full((5,), float(kept)))
        assert torch.equal(out.scale, out.probs * out.mask) and bool((out.probs >= 0).all())
        chosen = out.probs.topk(kept, 1).values.min(1).values
        assert bool((out.probs * (1 - out.mask) <= chosen[:, None]).all())  # no dropped channel beats a kept one
    model = acs.create_model("densenet40", gate={"name": "fbs", "density": 0.25})
    layer = model.blocks[0][0]
    h, decision, _ = layer(x, None, MacMeter(5))
    expected = layer.conv2(layer.norm1(x).relu()) * (decision.mask * decision.probs)[:, :, None, None]
    assert torch.equal(h, expected) and torch.equal(decision.mask.sum(1), torch.full((5,), 3.0))


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"name": "acs", "estimator": "reinforce"}, "gate.estimator must be one of ste, gumbel, got 'reinforce'"),
        ({"name": "ddi", "temperature": 0.0}, "gate.temperature must be > 0, got 0.0"),
        ({"name": "aig", "temperature": -1.0}, "gate.temperature must be > 0"),
        ({"name": "fbs", "density": 0.0}, "gate.density must lie in (0, 1], got 0.0"),
        ({"name": "fbs", "density": 1.5}, "gate.density must lie in (0, 1], got 1.5"),
        ({"name": "fbs", "estimator": "gumbel"}, "gate 'fbs' has no option estimator; its options: density"),
        ({"name": "ddi", "conv": "dense"}, "gate 'ddi' has no option conv"),
        ({"name": "aig", "init_keep": 1.0}, "gate.init_keep must lie in (0, 1)"),
    ],
)
def test_bad_gate_options_are_clear_errors(spec, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        create_gate(spec, 16, 12)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["gate.estimator=reinforce"], "gate.estimator must be one of ste, gumbel, got 'reinforce'"),
        (["gate=ddi", "gate.temperature=0"], "gate.temperature must be > 0, got 0.0"),
        (["gate=fbs", "gate.density=0"], "gate.density must lie in (0, 1], got 0.0"),
        (["gate=fbs", "gate.density=1.2"], "gate.density must lie in (0, 1], got 1.2"),
        (["gate=fbs", "gate.estimator=gumbel"], "gate 'fbs' has no option estimator; its options: density"),
        (["gate=fbs", "gate.width=8"], "gate 'fbs' has no option width"),
    ],
)
def test_bad_gate_config_is_one_clear_line(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)) as error:
        validate(compose_config(*overrides))
    assert message in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("gate", ["acs", "ddi", "aig", "fbs"])
def test_densenet_hands_each_gate_the_summary_of_its_whole_input(gate):
    """The DenseNet extends the gates' summary layer by layer instead of summarising the whole
    concatenated input again; every gate must still see exactly what it would read of its input."""
    model = DenseNet(4, (3, 2), 6, None, 0.5, num_classes=3, in_channels=1, gate=SPECS[gate]).train()
    seen = []
    for module in model.modules():
        if isinstance(module, Gate):
            module.register_forward_hook(lambda m, args, out: seen.append((m.reads, args[0], args[1])))
    model(torch.randn(4, 1, 9, 11))
    assert len(seen) == sum(len(block) for block in model.blocks)
    for reads, x, summary in seen:
        assert summary is not None and torch.equal(summary, summarize(x, reads))


def test_fbs_trains_a_deep_densenet_at_the_quick_start_learning_rate():
    """FBS boosts what it keeps by an unbounded saliency; in DenseNet-40 (36 gates in a row) at
    lr 0.1 the saliencies once ran away to NaN within three steps. They must stay finite and moderate."""
    torch.manual_seed(0)
    model = acs.create_model("densenet40", num_classes=10, in_channels=1, gate={"name": "fbs", "density": 0.5})
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4)
    x, y = torch.randn(32, 1, 12, 12), torch.randint(0, 10, (32,))
    for _ in range(10):
        out = model.train()(x)
        loss = torch.nn.functional.cross_entropy(out.logits, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        assert torch.isfinite(loss)
    with torch.no_grad():
        scales = [d.scale for d in model.run(x, MacMeter(32))[1]]
    assert all(torch.isfinite(s).all() for s in scales) and max(float(s.max()) for s in scales) < 20
