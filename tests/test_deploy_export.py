"""Deployment: DGConv2d → fixed grouped convs (same logits, same MACs) and ONNX export."""
import pytest
import torch
from helpers import counted_macs

import acs
from acs.deploy.export import DEFAULT_OPSET, deployable, export_onnx
from acs.deploy.materialize import materialize
from acs.gates import ACSGate
from acs.ops import DGConv2d, PermutedGroupConv2d


def randomize(model):
    """Random DGConv groupings and input-dependent gate decisions, as after training."""
    for m in model.modules():
        if isinstance(m, DGConv2d):
            m.gates.data = torch.randn(m.num_gates)
        if isinstance(m, ACSGate):
            torch.nn.init.normal_(m.head.weight, std=2.0)
            torch.nn.init.zeros_(m.head.bias)
    return model.eval()


def check_materialize(model, x, ungated):
    before = model(x)
    assert materialize(model) is model
    assert not any(isinstance(m, DGConv2d) for m in model.modules())
    assert not any(name.endswith("gates") for name, _ in model.named_parameters())
    assert any(isinstance(m, PermutedGroupConv2d) for m in model.modules())  # interleaved groups occur
    after = model(x)
    torch.testing.assert_close(after.logits, before.logits, atol=1e-5, rtol=0)
    assert torch.equal(after.macs, before.macs)
    assert all(torch.equal(a, b) for a, b in zip(after.masks, before.masks))
    if ungated:  # the grouped convs really execute the counted MACs
        assert counted_macs(model, x) == pytest.approx(after.macs[0].item(), rel=1e-12)
    return model


@pytest.mark.parametrize("gate", ["none", "acs"])
def test_materialize_densenet41_acs(gate):
    model = randomize(acs.create_model("densenet41_acs", gate=gate))
    x = torch.randn(4, 3, 16, 16)
    check_materialize(model, x, ungated=gate == "none")
    if gate == "acs":  # the gates' own DGConvs became grouped convs as well
        gate_net = model.blocks[0][0].gate
        assert not isinstance(gate_net.conv_a, DGConv2d) and not isinstance(gate_net.conv_b, DGConv2d)
        assert model(x).macs.unique().numel() > 1  # per-sample cost still varies


def test_materialize_g_resnext29():
    model = randomize(acs.create_model("g_resnext29_2x64d"))
    check_materialize(model, torch.randn(2, 3, 16, 16), ungated=True)


def test_deployable_materializes_a_copy_and_rejects_gates():
    model = randomize(acs.create_model("densenet41_acs", gate="none"))
    deployed = deployable(model)
    assert deployed is not model and not any(isinstance(m, DGConv2d) for m in deployed.modules())
    assert any(isinstance(m, DGConv2d) for m in model.modules())  # the original is untouched
    with pytest.raises(ValueError, match="gate='none'"):
        deployable(acs.create_model("densenet40", gate="acs"))


def run_onnx(path, x):
    import onnx
    import onnxruntime

    proto = onnx.load(str(path))
    assert [o.name for o in proto.graph.output] == ["logits"]
    assert {o.domain: o.version for o in proto.opset_import}[""] == DEFAULT_OPSET
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {"input": x.numpy()})[0])


@pytest.mark.parametrize("name", ["densenet40", "densenet41_acs"])
def test_export_onnx_matches_pytorch(name, tmp_path):
    model = randomize(acs.create_model(name, gate="none"))
    if name == "densenet41_acs":
        materialize(model)
    model.train()  # export must use eval mode and hand the model back as it was
    path = export_onnx(model, tmp_path / f"{name}.onnx", (3, 16, 16))
    assert path.is_file() and model.training
    assert list(tmp_path.iterdir()) == [path]  # weights inside the file, no external .data
    x = torch.randn(5, 3, 16, 16)  # another batch size than traced: the batch axis is dynamic
    with torch.no_grad():
        expected = model.eval()(x).logits
    torch.testing.assert_close(run_onnx(path, x), expected, atol=1e-4, rtol=0)


def test_export_onnx_rejects_gated_model(tmp_path):
    with pytest.raises(ValueError, match="gated model.*gate='none'"):
        export_onnx(acs.create_model("densenet41_acs", gate="acs"), tmp_path / "gated.onnx", (3, 32, 32))
    assert not (tmp_path / "gated.onnx").exists()
