"""DGConv2d (ACS-DG): connectivity formula, any channel counts, grouped materialisation, gradients."""
import functools

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from acs.ops import DGConv2d, shared_factors_of_two


def kronecker_formula(gates: torch.Tensor, out_channels: int, in_channels: int) -> torch.Tensor:
    """DESIGN.md's U = (U_1 ⊗ … ⊗ U_K) ⊗ J, written independently of the module."""
    eye, ones = torch.eye(2), torch.ones(2, 2)
    factors = [ones if g > 0 else eye for g in gates.tolist()]
    k = len(factors)
    j = torch.ones(out_channels // 2**k, in_channels // 2**k)
    return torch.kron(functools.reduce(torch.kron, factors, torch.ones(1, 1)), j)


def counted_macs(module: torch.nn.Module, x: torch.Tensor) -> float:
    counter = FlopCounterMode(display=False)
    with counter:
        module(x)
    return counter.get_total_flops() / 2


def with_gates(module: DGConv2d, seed: int) -> DGConv2d:
    generator = torch.Generator().manual_seed(seed)
    module.gates.data = torch.randn(module.num_gates, generator=generator)
    return module


@pytest.mark.parametrize(
    "in_ch, out_ch, k", [(32, 32, 5), (12, 12, 2), (48, 12, 2), (16, 64, 4), (3, 16, 0), (24, 40, 3)]
)
def test_number_of_gates_is_shared_factors_of_two(in_ch, out_ch, k):
    assert shared_factors_of_two(in_ch, out_ch) == k
    assert DGConv2d(in_ch, out_ch, 3).gates.numel() == k


@pytest.mark.parametrize("seed", range(8))
def test_mask_equals_kronecker_formula_for_power_of_two(seed):
    conv = with_gates(DGConv2d(32, 32, 3), seed)
    u = conv.mask()
    assert torch.equal(u, kronecker_formula(conv.gates, 32, 32))
    assert set(u.unique().tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("in_ch, out_ch", [(12, 12), (48, 12), (16, 64), (24, 40)])
@pytest.mark.parametrize("seed", range(4))
def test_mask_for_any_channel_counts(in_ch, out_ch, seed):
    conv = with_gates(DGConv2d(in_ch, out_ch, 3), seed)
    u = conv.mask()
    assert u.shape == (out_ch, in_ch)
    assert torch.equal(u, kronecker_formula(conv.gates, out_ch, in_ch))
    assert u.sum().item() == in_ch * out_ch / conv.groups
    assert conv.groups == 2 ** (conv.num_gates - int((conv.gates > 0).sum()))


def test_all_gates_on_is_dense_and_all_off_is_most_grouped():
    conv = DGConv2d(32, 32, 3)
    conv.gates.data.fill_(1.0)
    assert conv.groups == 1 and torch.equal(conv.mask(), torch.ones(32, 32))
    conv.gates.data.fill_(-1.0)
    assert conv.groups == 32 and torch.equal(conv.mask(), torch.eye(32))


def test_sort_makes_groups_contiguous():
    conv = DGConv2d(32, 32, 3, sort=True)
    conv.gates.data = torch.tensor([1.0, -1.0, 1.0, -1.0, 1.0])
    blocks = torch.block_diag(*[torch.ones(8, 8)] * 4)
    assert torch.equal(conv.mask(), blocks)
    assert isinstance(conv.materialize(), torch.nn.Conv2d)


def test_initial_gates_are_tiny_and_of_both_signs():
    gates = torch.cat([DGConv2d(64, 64, 3).gates.detach() for _ in range(20)])
    assert gates.abs().max() < 0.05
    assert (gates > 0).any() and (gates < 0).any()


@pytest.mark.parametrize("sort", [False, True])
@pytest.mark.parametrize("in_ch, out_ch, stride", [(32, 32, 1), (12, 12, 2), (48, 12, 1), (16, 64, 2)])
@pytest.mark.parametrize("seed", range(3))
def test_materialize_matches_and_counts_fewer_macs(sort, in_ch, out_ch, stride, seed):
    conv = with_gates(DGConv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=True, sort=sort), seed)
    x = torch.randn(2, in_ch, 9, 9)
    grouped = conv.materialize()
    with torch.no_grad():
        expected, actual = conv(x), grouped(x)
    assert torch.allclose(actual, expected, atol=1e-5)
    h, w = expected.shape[-2:]
    macs = conv.macs(h, w)
    assert counted_macs(grouped, x[:1]) == macs.item()
    assert counted_macs(conv, x[:1]) == macs.item() * conv.groups  # the masked form does it all
    convs = [m for m in grouped.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 1 and convs[0].groups == conv.groups


def test_interleaved_groups_need_permutations():
    conv = DGConv2d(16, 16, 3, padding=1)
    conv.gates.data = torch.tensor([1.0, -1.0, 1.0, 1.0])  # identity on the second bit: interleaved
    grouped = conv.materialize()
    assert isinstance(grouped, torch.nn.Sequential) and len(grouped) == 3
    x = torch.randn(1, 16, 5, 5)
    with torch.no_grad():
        assert torch.allclose(grouped(x), conv(x), atol=1e-5)


@pytest.mark.parametrize("in_ch, out_ch, sort", [(32, 32, False), (48, 12, True), (16, 64, False), (24, 40, True)])
def test_gate_gradients_are_those_of_the_straight_through_kronecker_chain(in_ch, out_ch, sort):
    """The mask is built as one product over the gates; its gradient must be the chain's
    ``d/dg_k ((1 - g_k)·I + g_k·1)`` with the straight-through gates, factor by factor."""
    conv = with_gates(DGConv2d(in_ch, out_ch, 3, sort=sort), 3)
    upstream = torch.randn(out_ch, in_ch, generator=torch.Generator().manual_seed(1))
    (conv.mask() * upstream).sum().backward()
    gates = conv.gates.detach().clone().requires_grad_()
    hard = (gates > 0).float() + gates - gates.detach()
    order = torch.argsort((gates > 0).float(), stable=True) if sort else torch.arange(len(gates))
    factors = [(1 - g) * torch.eye(2) + g * torch.ones(2, 2) for g in hard[order]]
    k = len(factors)
    chain = torch.kron(functools.reduce(torch.kron, factors), torch.ones(out_ch // 2**k, in_ch // 2**k))
    (chain * upstream).sum().backward()
    assert torch.allclose(conv.gates.grad, gates.grad, rtol=1e-5, atol=1e-5)


def test_gradients_reach_gates_and_weights():
    conv = with_gates(DGConv2d(12, 24, 3, padding=1), 0)
    out = conv(torch.randn(2, 12, 6, 6))
    (out.square().mean() + 1e-6 * conv.macs(6, 6)).backward()
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0
    assert conv.gates.grad is not None and conv.gates.grad.abs().sum() > 0


def test_macs_gradient_pushes_gates_toward_fewer_connections():
    conv = with_gates(DGConv2d(32, 32, 3), 1)
    conv.macs(4, 4).backward()
    # Raising any gate can only add connections, so d(MACs)/d(gate) is positive for every gate.
    assert (conv.gates.grad > 0).all()
