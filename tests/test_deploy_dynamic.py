"""acs.deploy.to_dynamic: the executor matches the model's eval-mode logits and masks, and executes
exactly the MACs of the cost model (and of an independent FLOP counter)."""
import copy
import shutil
import warnings

import pytest
import torch
import torch.nn.functional as F
from helpers import counted_macs
from torch.utils.flop_counter import FlopCounterMode

import acs
from acs.deploy import NativeUnavailable, to_dynamic
from acs.deploy import native as native_kernels
from acs.deploy.calibrate import keep_bias
from acs.deploy.fold import conv3x3_kn2row, kn2row_weight
from acs.gates import ACSGate, AIGGate, DDIGate, FBSGate, Gate, summarize
from acs.gates.designs import scale_free
from acs.models.resnext import GResNeXt
from acs.ops import DGConv2d

GATE = {"name": "acs", "width": 8}


def randomize(model, regime="random", sort=None, size=(12, 12)):
    """Non-trivial eval-mode BatchNorm, random DGConv groupings, random gate heads, then gate biases
    for ``regime``: ``random`` (each channel kept by about half the samples), ``all_on``, or
    ``mostly_off`` (most gates keep nothing, the others about one sample in ten). FBS gates keep
    their density; ``mostly_off`` makes most of their saliencies exactly 0 (ties in the top-k)."""
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.normal_(0.0, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.normal_(1.0, 0.5)  # some negative scales too
            m.bias.data.normal_(0.0, 0.5)  # relu(shift) != 0: dead channels fold to non-zero constants
        elif isinstance(m, DGConv2d):
            m.gates.data = torch.randn(m.num_gates)
            if sort is not None:
                m.sort = sort
        elif isinstance(m, (ACSGate, DDIGate)):
            torch.nn.init.normal_(m.head.weight, std=2.0)
        elif isinstance(m, AIGGate):
            torch.nn.init.normal_(m.pair.weight, std=2.0)
    if any(isinstance(m, Gate) for m in model.modules()):
        calibrate(model.eval(), regime, size)
    return model.eval()


def inputs(n, size, channels=3):
    """Samples that differ in scale and colour, so that even deep gates see different inputs."""
    scale = torch.exp(torch.empty(n, 1, 1, 1).uniform_(-1.0, 3.0))
    return torch.randn(n, channels, *size) * scale + torch.randn(n, channels, 1, 1) * 3.0


@torch.no_grad()
def calibrate(model, regime, size=(12, 12)):
    """Sets each gate's keep bias from its logits on separate calibration samples, layer by layer
    (earlier biases change later inputs). Inputs of very different scales make the decisions vary
    per sample by margins far above float rounding, so model and executor agree on every mask.
    FBS saliencies ``relu(b − r)`` with ``r ≥ 0`` (negative weights on the non-negative, scale-free
    pool), so that boosting stays bounded by ``b``: ``b = 1.5`` for a median ``r`` of 1 (per
    channel), about half the saliencies exactly 0 for ``mostly_off``."""
    def set_bias(gate, args):
        if isinstance(gate, FBSGate):
            weight = gate.saliency.weight
            weight.abs_().neg_()
            weight /= -torch.quantile(F.linear(scale_free(summarize(args[0], gate.reads)), weight), 0.5, dim=0)[:, None]
            gate.saliency.bias.fill_(1.0 if regime == "mostly_off" else 1.5)
            return
        bias = keep_bias(gate)
        z = gate.logits(args[0]) - bias
        if regime == "all_on" or (regime == "mostly_off" and torch.rand(()) < 0.7):
            bias.fill_(1e6 if regime == "all_on" else -1e6)
        else:
            bias.copy_(-torch.quantile(z, 0.5 if regime == "random" else 0.9, dim=0))

    hooks = [m.register_forward_pre_hook(set_bias) for m in model.modules() if isinstance(m, Gate)]
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


GATES = {
    "acs-dense": {"name": "acs", "width": 8, "conv": "dense"},
    "acs-group": {"name": "acs", "width": 8, "conv": "group", "groups": 4},
    "ddi": {"name": "ddi", "width": 8},
    "aig": {"name": "aig", "width": 8},
    "fbs-0.25": {"name": "fbs", "density": 0.25},
    "fbs-0.5": {"name": "fbs", "density": 0.5},
    "fbs-1": {"name": "fbs", "density": 1.0},
}
MODELS = [("densenet40", (9, 7)), ("densenet41_acs", (11, 6))]  # without and with bottleneck (DGConv)


@pytest.mark.parametrize(
    "gate, name, size, regime",
    [(g, *m, r) for g in ("acs-dense", "ddi", "aig") for m in MODELS for r in ("random", "mostly_off")]
    + [("acs-group", *MODELS[0], "random"), ("acs-group", *MODELS[1], "mostly_off")]
    + [("fbs-0.25", *MODELS[0], "random"), ("fbs-0.5", *MODELS[1], "random"), ("fbs-1", *MODELS[0], "random"),
       ("fbs-0.5", *MODELS[0], "mostly_off"), ("fbs-0.25", *MODELS[1], "mostly_off")],
    ids=lambda v: "x".join(map(str, v)) if isinstance(v, tuple) else str(v),
)
def test_every_gate_design_runs_exactly(gate, name, size, regime):
    model = randomize(acs.create_model(name, gate=GATES[gate]), regime, size=size)
    fbs = [m for m in model.modules() if isinstance(m, FBSGate)]
    saliencies = []
    for m in fbs:
        m.register_forward_hook(lambda module, args, out: saliencies.append(out.probs))
    executor = to_dynamic(model)
    assert isinstance(executor.blocks[0], torch.jit.ScriptModule)  # the gate executors script
    x = inputs(6, size)
    out = assert_same(model, executor, x)
    # Counted on the eager twin: the counter makes TorchScript re-specialise, ~20× slower, same ops.
    assert counted_macs(to_dynamic(model, script=False), x[:1]) == out.macs[0].item()
    keep = torch.cat(out.masks, 1)
    varies = sum(bool(m.std(0).amax() > 0) for m in out.masks) / len(out.masks)  # layers deciding per sample
    if fbs:  # exactly ⌈d·k⌉ kept per layer and sample, which ones varying per sample
        assert all(torch.all(m.sum(1) == g.kept) for m, g in zip(out.masks, fbs))
        if regime == "mostly_off":  # ties at saliency 0, broken by topk alike in model and executor
            assert any(((s == 0).sum(1) > s.shape[1] - g.kept).any() for s, g in zip(saliencies, fbs))
        assert gate == "fbs-1" or varies > (0.3 if regime == "mostly_off" else 0.8)
    elif regime == "random":
        # A random gate can be blind (e.g. a DDI gate whose ReLU is 0 for every input), so most, not all.
        assert 0.2 < keep.mean() < 0.8 and varies > 0.8 and keep.std(0).mean() > 0.1
    else:
        assert keep.mean() < 0.2 and any(torch.all(m == 0, 1).any() for m in out.masks)


@pytest.mark.parametrize("gate", [GATE, GATES["aig"]])
def test_fixed_group_convs_after_a_bottleneck(gate):
    # conv='group': each kept output is computed from its fixed group of the bottleneck's outputs.
    model = randomize(acs.create_model("densenet41_acs", gate=gate, conv="group", groups=4), size=(9, 7))
    x = inputs(3, (9, 7))
    out = assert_same(model, to_dynamic(model), x)
    assert 0.2 < torch.cat(out.masks, 1).mean() < 0.8
    with pytest.raises(NotImplementedError, match="grouped.*gated"):  # no bottleneck: refused
        to_dynamic(acs.create_model("densenet40", gate=gate, conv="group", groups=4))


def test_unknown_gates_are_refused_clearly():
    class MyGate(ACSGate):
        pass

    model = acs.create_model("densenet40", gate=GATE)
    model.blocks[1][3].gate = MyGate(model.blocks[1][3].gate.in_channels, 12, width=8)
    with pytest.raises(NotImplementedError, match="no executor for gate MyGate"):
        to_dynamic(model)


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
    "name, kwargs, size, regime",
    [("densenet40", {"gate": GATE}, (9, 5), "random"),  # dense 3×3, dead inputs folded, 2×1 borders
     ("densenet40", {"gate": GATES["fbs-0.25"]}, (9, 7), "mostly_off"),  # kept outputs scaled
     ("densenet41_acs", {"gate": GATE}, (9, 7), "mostly_off"),  # bottleneck, then each output's DGConv group
     ("densenet_bc100", {"gate": GATE}, (8, 8), "random"),  # bottleneck, then a dense 3×3
     ("densenet40", {"gate": "none", "conv": "dgconv"}, (10, 10), "random")],  # grouped 3×3, ungated
    ids=["dense", "fbs", "stack", "bottleneck", "grouped"],
)  # fmt: skip
def test_the_tensor_operation_executor_matches_and_counts(name, kwargs, size, regime):
    # The fallback where the native kernels cannot be built: every layer form, exact, counted by
    # the FLOP counter's own formulas (aten mm/addmm/bmm/baddbmm only).
    model = randomize(acs.create_model(name, **kwargs), regime, size=size)
    x = inputs(3, size)
    out = assert_same(model, to_dynamic(model, native=False), x)
    assert counted_macs(to_dynamic(model, script=False, native=False), x[:1]) == out.macs[0].item()


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
    # The scripted executor reports, its eager twin (the same operations) is counted: under the
    # counter TorchScript re-specialises its graphs, which is ~20× slower.
    scripted, eager = to_dynamic(model), to_dynamic(model, script=False)
    for _ in range(2):
        x = inputs(1, (9, 7))
        macs = scripted(x).macs.item()
        assert macs == counted_macs(eager, x) == model(x).macs.item()


def test_native_kernels_are_what_runs_and_what_the_counter_sees():
    model = randomize(acs.create_model("densenet41_acs", gate=GATE), size=(9, 7))
    x = inputs(1, (9, 7))
    by_op = {}
    for native in (True, False):
        executor, counter = to_dynamic(model, script=False, native=native), FlopCounterMode(display=False)
        with counter:
            macs = executor(x).macs.item()
        by_op[native] = {str(op): flops / 2 for op, flops in counter.get_flop_counts()["Global"].items()}
        assert sum(by_op[native].values()) == macs == model(x).macs.item()
    # Fused: every dense block with its layers' ACS gates in one call, every transition and the
    # classifier (the gates' convs were the baddbmm); the stem stays a GEMM.
    assert set(by_op[True]) - {"aten.bmm"} == {"acs.dense_block", "acs.transition", "acs.head"}
    assert min(by_op[True][op] for op in ("acs.dense_block", "acs.transition", "acs.head")) > 0
    assert "aten.baddbmm" in by_op[False] and not any(op.startswith("acs.") for op in by_op[False])


def test_without_native_kernels_the_executor_falls_back_with_one_warning(monkeypatch):
    import torch.utils.cpp_extension

    def no_compiler(*args, **kwargs):
        raise RuntimeError("Error building extension 'acs_native'")

    monkeypatch.setattr(torch.utils.cpp_extension, "load", no_compiler)
    monkeypatch.setattr(native_kernels, "_loaded", False)
    monkeypatch.setattr(native_kernels, "_error", None)
    monkeypatch.setattr(native_kernels, "_registered", lambda: False)  # as in a process that never loaded them
    monkeypatch.setattr(acs.deploy, "_warned", False)
    model = randomize(acs.create_model("densenet40", gate=GATE))
    with pytest.raises(NativeUnavailable, match=r"native kernels are unavailable \(RuntimeError: Error building"):
        to_dynamic(model, native=True)
    with pytest.warns(UserWarning, match="unavailable.*tensor operations only"):
        executor = to_dynamic(model)
    assert not executor.native
    assert_same(model, executor, inputs(2, (8, 8)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once per process, not per executor
        to_dynamic(model)
    with pytest.raises(ValueError, match="native kernels run on CPU; the model is on meta"):
        to_dynamic(copy.deepcopy(model).to("meta"), native=True)


def test_a_library_registered_first_or_rebuilt_since_is_declined(monkeypatch):
    """A second library registering the acs operators would abort the process: where a deployed
    folder's copy was loaded first, acs does not load its own. A library file rebuilt since it was
    loaded (by another acs sharing the build folder) is not the one running: it is not shipped."""
    if not native_kernels.available():
        pytest.skip("the native kernels do not build here")
    monkeypatch.setattr(native_kernels, "_library_stat", None)
    with pytest.raises(NativeUnavailable, match="rebuilt since this process loaded it"):
        native_kernels.library()
    monkeypatch.setattr(native_kernels, "_loaded", False)  # registered, here by acs's own build
    monkeypatch.setattr(native_kernels, "_error", None)
    with pytest.raises(NativeUnavailable, match=r"acs operators are already registered, by .*acs_native"):
        native_kernels.load()


def test_the_installed_ninja_is_found_off_path(monkeypatch, tmp_path):
    # A virtual environment's interpreter run without activation: its scripts folder is not on PATH.
    monkeypatch.setenv("PATH", str(tmp_path))
    assert shutil.which("ninja") is None
    native_kernels._find_ninja()
    assert shutil.which("ninja") is not None


@pytest.mark.parametrize("gate", [GATE, GATES["fbs-0.5"]])
def test_eager_and_torchscript_executors_agree(gate):
    model = randomize(acs.create_model("densenet40", gate=gate))
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
