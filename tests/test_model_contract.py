"""What every registered model promises, in the style of timm's model tests: parametrized over
``acs.list_models()``, so that a newly registered model is held to it without a new test.

Everything that only needs shapes runs on the ``meta`` device, which keeps the ImageNet-shaped
G-ResNeXts cheap; ``dense_macs`` itself needs real tensors (it reads its total back with ``item``).
"""
import copy

import pytest
import torch
from helpers import counted_macs, densify_dgconvs

import acs
from acs.models import MODELS
from acs.ops import DGConv2d

CLASSES = 7  # no family's default, so a factory that ignores num_classes shows
BATCH = 2
# Small enough for the ImageNet stems, and not square, so that a swapped height and width shows.
INPUT = (3, 16, 24)


def build(name: str, **options) -> acs.AcsModel:
    """``name`` as create_model builds it, with ``options``, on the meta device, in eval mode."""
    with torch.device("meta"):
        return acs.create_model(name, num_classes=CLASSES, **options).eval()


def gates_off(name: str) -> dict:
    """The factory options that build ``name`` without per-sample gates (none where it has none)."""
    return {"gate": "none"} if "gate" in MODELS.options(name) else {}


def test_the_registry_lists_both_families():
    names = acs.list_models()
    assert names == sorted(names) and len(set(names)) == len(names)
    assert {"densenet40", "densenet41_acs", "densenet_bc100", "g_resnext29_2x64d", "g_resnext50"} <= set(names)


@pytest.mark.parametrize("name", acs.list_models())
def test_forward_returns_the_output_contract(name):
    model = build(name)
    assert isinstance(model, acs.AcsModel)
    with torch.no_grad():
        out = model(torch.empty(BATCH, *INPUT, device="meta"))
    assert isinstance(out, acs.Output)
    assert out.logits.shape == (BATCH, CLASSES)
    assert out.macs.shape == (BATCH,) and out.macs.dtype == torch.float64
    assert isinstance(out.masks, list)
    assert all(mask.ndim == 2 and mask.shape[0] == BATCH for mask in out.masks)


@pytest.mark.parametrize("name", acs.list_models())
def test_dense_macs_is_what_the_flop_counter_counts_with_gates_off(name):
    model = build(name, **gates_off(name))
    with torch.no_grad():
        assert model(torch.empty(BATCH, *INPUT, device="meta")).masks == []  # really no gates
    # The reference network dense_macs defines: no gate networks, every DGConv2d fully connected.
    reference = densify_dgconvs(copy.deepcopy(model))
    assert not any(isinstance(m, DGConv2d) for m in reference.modules())
    counted = counted_macs(reference, torch.empty(BATCH, *INPUT, device="meta"))
    assert counted > 0
    # dense_macs depends on shapes alone (gates are not run, every channel is live), so the
    # model's weights may stay uninitialised on the CPU.
    assert model.to_empty(device="cpu").dense_macs(INPUT) == counted
