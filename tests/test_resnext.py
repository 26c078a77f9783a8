"""G-ResNeXt: torchvision weight mapping, pretrained error offline, exact MACs, gradients, shapes."""
import copy
import math

import pytest
import torch
import torchvision
from helpers import counted_macs, materialize_dgconvs
from torch import nn

import acs
from acs.models.resnext import load_torchvision_resnext
from acs.ops import DGConv2d


def dgconvs(model: nn.Module):
    return [m for m in model.modules() if isinstance(m, DGConv2d)]


def calibrate_bn(model: nn.Module, x: torch.Tensor) -> None:
    """Running statistics = those of ``x`` and random affine BN parameters, so that eval-mode
    activations stay O(1) through a randomly initialised deep network."""
    generator = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average: one batch sets the statistics exactly
            with torch.no_grad():
                m.weight.copy_(torch.rand(m.weight.shape, generator=generator) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=generator) * 0.1)
    model.train()
    with torch.no_grad():
        model(x)
    model.eval()


def test_torchvision_mapping_matches_logits():
    torch.manual_seed(0)
    reference = torchvision.models.resnext50_32x4d()  # random weights: nothing is downloaded
    calibrate_bn(reference, torch.randn(4, 3, 64, 64))
    model = acs.create_model("g_resnext50")
    load_torchvision_resnext(model, reference.state_dict())
    model.eval()
    assert all(conv.groups == 32 for conv in dgconvs(model))
    conv = model.layer1[0].conv2
    blocks = torch.block_diag(*[torch.ones(4, 4)] * 32)
    assert torch.equal(conv.mask(), blocks)
    assert conv.gates.abs().max() < 0.1  # only the signs were chosen
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = reference(x)
        logits = model(x).logits
    assert (logits - expected).abs().max() < 1e-4


def test_mapping_rejects_bad_keys_and_keeps_fc_for_other_class_counts():
    reference = torchvision.models.resnext50_32x4d().state_dict()
    small = acs.create_model("g_resnext50", num_classes=7)
    bad = dict(reference)
    bad.pop("layer2.0.bn1.running_mean")
    bad["extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match="layer2.0.bn1.running_mean.*extra.weight"):
        load_torchvision_resnext(small, bad)
    fc_before = small.fc.weight.clone()
    load_torchvision_resnext(small, reference)
    assert torch.equal(small.fc.weight, fc_before)
    assert torch.equal(small.conv1.weight, reference["conv1.weight"])


def test_pretrained_offline_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path))
    weights = torchvision.models.ResNeXt50_32X4D_Weights

    def offline(self, *args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(weights, "get_state_dict", offline)
    with pytest.raises(RuntimeError, match="g_resnext50") as error:
        acs.create_model("g_resnext50", pretrained=True)
    message = str(error.value)
    assert "g_resnext50" in message
    assert "resnext50_32x4d-7cdf4587.pth" in message
    assert str(tmp_path / "checkpoints") in message


def test_pretrained_loads_the_torchvision_weights(monkeypatch):
    reference = torchvision.models.resnext50_32x4d().state_dict()
    monkeypatch.setattr(
        torchvision.models.ResNeXt50_32X4D_Weights, "get_state_dict", lambda self, *a, **k: reference
    )
    model = acs.create_model("g_resnext50", pretrained=True)
    assert torch.equal(model.fc.weight, reference["fc.weight"])
    assert all(conv.groups == 32 for conv in dgconvs(model))


@pytest.mark.parametrize("name, size, batch", [("g_resnext50", 64, 1), ("g_resnext29_2x64d", 32, 2)])
def test_macs_match_flop_counter(name, size, batch):
    torch.manual_seed(0)
    model = acs.create_model(name).eval()
    for conv in dgconvs(model):
        conv.gates.data.normal_()  # random groupings, interleaved as well as contiguous
    assert len({conv.groups for conv in dgconvs(model)}) > 1
    x = torch.randn(batch, 3, size, size)
    with torch.no_grad():
        out = model(x)
    assert out.macs.shape == (batch,) and out.masks == []
    assert torch.all(out.macs == counted_macs(materialize_dgconvs(copy.deepcopy(model)), x))
    for conv in dgconvs(model):
        conv.gates.data.abs_().add_(1e-3)  # every gate "connect": the dense reference
    assert model.dense_macs((3, size, size)) == counted_macs(model, x)


def test_gradients_reach_gates_and_weights():
    model = acs.create_model("g_resnext29_2x64d")
    out = model(torch.randn(2, 3, 16, 16))
    out.macs.sum().backward()
    assert all(conv.gates.grad is not None and conv.gates.grad.abs().sum() > 0 for conv in dgconvs(model))
    model.zero_grad()
    nn.functional.cross_entropy(out.logits, torch.tensor([1, 2])).backward()
    for conv in [model.conv1, model.layer1[0].conv1, model.layer2[0].conv2, model.layer3[2].conv3, model.fc]:
        assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0


def test_parameter_count_differs_by_dense_conv2_and_gates():
    reference = torchvision.models.resnext50_32x4d()
    model = acs.create_model("g_resnext50")
    expected = 0
    for name, module in reference.named_modules():
        if isinstance(module, nn.Conv2d) and module.groups > 1:
            out_ch, in_ch = module.out_channels, module.in_channels
            dense = out_ch * in_ch * math.prod(module.kernel_size)
            gates = 0
            while out_ch % 2 == 0 and in_ch % 2 == 0:  # DGConv2d has one gate per shared factor of 2
                out_ch, in_ch, gates = out_ch // 2, in_ch // 2, gates + 1
            expected += dense - module.weight.numel() + gates
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(model) - count(reference) == expected


@pytest.mark.slow  # builds the ImageNet-size ResNeXt-101; the smaller ones are checked in the default run
def test_resnext101_and_cifar_shapes():
    model = acs.create_model("g_resnext101")
    assert model.fc.out_features == 1000
    with torch.no_grad():
        out = model.eval()(torch.randn(1, 3, 64, 64))
    assert out.logits.shape == (1, 1000) and out.macs.shape == (1,)
    del model
    for classes in (10, 100):
        model = acs.create_model("g_resnext29_2x64d", num_classes=classes, in_channels=1).eval()
        with torch.no_grad():
            assert model(torch.randn(2, 1, 32, 32)).logits.shape == (2, classes)
    assert acs.create_model("g_resnext29_2x64d").fc.out_features == 10
    dense = acs.create_model("g_resnext29_2x64d", conv="dense")
    assert not dgconvs(dense) and dense.layer1[0].conv2.weight.shape == (128, 128, 3, 3)
    with pytest.raises(ValueError, match="conv kind"):
        acs.create_model("g_resnext29_2x64d", conv="grouped")


def test_cifar_8x64d_widths():
    model = acs.create_model("g_resnext29_8x64d", num_classes=100)
    widths = [getattr(model, f"layer{i}")[0].conv2.out_channels for i in (1, 2, 3)]
    outs = [getattr(model, f"layer{i}")[-1].conv3.out_channels for i in (1, 2, 3)]
    assert widths == [512, 1024, 2048] and outs == [256, 512, 1024]
    assert [getattr(model, f"layer{i}")[0].conv2.stride for i in (1, 2, 3)] == [(1, 1), (2, 2), (2, 2)]


def test_fixed_group_resnext_is_the_plain_baseline():
    import torchvision

    from acs.models.resnext import load_torchvision_resnext

    model = acs.create_model("g_resnext29_2x64d", conv="group").eval()
    convs = [b.conv2 for stage in (model.layer1, model.layer2, model.layer3) for b in stage]
    assert all(type(c) is torch.nn.Conv2d and c.groups == 2 for c in convs)
    x = torch.randn(1, 3, 32, 32)
    # Fixed groups are part of the backbone: the reference cost keeps them.
    assert model(x).macs.item() == counted_macs(model, x) == model.dense_macs((3, 32, 32))
    imagenet = acs.create_model("g_resnext50", conv="group").eval()
    reference = torchvision.models.resnext50_32x4d().eval()
    load_torchvision_resnext(imagenet, reference.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(imagenet(x).logits, reference(x), atol=1e-4)
