"""The cost model: per-sample multiply-accumulates (MACs) of every Conv2d and Linear, from the masks.

A layer with connectivity ``U`` (out × in), per-sample live inputs ``l`` and active outputs ``a``
executes ``kh·kw·H_out·W_out · aᵀ U l`` MACs: a channel skipped upstream is folded into a constant at
deployment and costs nothing here, a skipped output is never computed. Everything is accumulated in
float64, because MAC totals of real networks exceed the integers float32 represents exactly.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from acs.ops import DGConv2d, PermutedGroupConv2d

Layer = Union[nn.Conv2d, nn.Linear, DGConv2d, PermutedGroupConv2d]
MACS_DTYPE = torch.float64


def conv_output_size(module: Union[nn.Conv2d, DGConv2d], hw: Sequence[int]) -> Tuple[int, int]:
    """Spatial size of ``module``'s output for an input of spatial size ``hw``."""
    return tuple(
        (size + 2 * pad - dil * (k - 1) - 1) // stride + 1
        for size, pad, dil, k, stride in zip(
            hw, module.padding, module.dilation, module.kernel_size, module.stride
        )
    )


def _shape(module: Layer) -> Tuple[int, int, int, int]:
    """(out channels, in channels, kernel area, fixed groups) of a layer."""
    if isinstance(module, nn.Linear):
        return module.out_features, module.in_features, 1, 1
    kh, kw = module.kernel_size
    groups = 1 if isinstance(module, DGConv2d) else module.groups
    return module.out_channels, module.in_channels, kh * kw, groups


def connectivity(module: Layer, dense: bool = False) -> Tensor:
    """Binary out × in matrix (float64): which input channels each output channel reads.

    ``dense=True`` treats a DGConv2d as fully connected (the reference cost of DESIGN.md); a fixed
    grouped conv keeps its groups, since those are part of the backbone.
    """
    out_ch, in_ch, _, groups = _shape(module)
    device = module.weight.device
    if isinstance(module, DGConv2d) and not dense:
        return module.mask().to(MACS_DTYPE)
    if isinstance(module, PermutedGroupConv2d):
        return module.connectivity().to(device=device, dtype=MACS_DTYPE)
    block = torch.ones(out_ch // groups, in_ch // groups, dtype=MACS_DTYPE, device=device)
    return torch.block_diag(*[block] * groups) if groups > 1 else block


def layer_macs(
    module: Layer,
    out_hw: Sequence[int] = (1, 1),
    live_in: Optional[Tensor] = None,
    live_out: Optional[Tensor] = None,
    dense: bool = False,
) -> Tensor:
    """Per-sample MACs of one layer.

    ``live_in`` (N × in) and ``live_out`` (N × out) are 0/1 masks, differentiable where gates act;
    ``None`` means every channel. Returns a tensor of shape (N,), or a scalar when both are ``None``.
    ``dense=True`` gives the reference cost: every channel live, every DGConv2d fully connected.
    """
    out_ch, in_ch, area, groups = _shape(module)
    positions = area * int(out_hw[0]) * int(out_hw[1])
    if dense:
        live_in = live_out = None
    learned = isinstance(module, DGConv2d) and not dense
    if not learned and (groups == 1 or (live_in is None and live_out is None)):
        # A full (or fixed-group, all-live) connection factorises into outputs·inputs/groups.
        outs = live_out.to(MACS_DTYPE).sum(-1) if live_out is not None else out_ch
        ins = live_in.to(MACS_DTYPE).sum(-1) if live_in is not None else in_ch
        return torch.as_tensor(outs * ins * positions / groups, dtype=MACS_DTYPE, device=module.weight.device)
    u = connectivity(module, dense)
    if live_in is None and live_out is None:
        return u.sum() * positions
    if live_out is not None:
        u = live_out.to(MACS_DTYPE) @ u  # N × in: how many active outputs read each input
    if live_in is not None:
        u = u * live_in.to(MACS_DTYPE)
    return u.sum(-1) * positions


class Live:
    """Which input channels are live, per sample, across a concatenation: its parts in channel
    order, each ``(channels, mask, any)``: ``mask=None`` for channels live in every sample, a 0/1
    ``mask`` (N × channels) for channels gated per sample, and ``any=True`` for ``channels``
    channels that are all live where ``mask`` (N × k) keeps anything (a bottleneck is computed as
    soon as one of its layer's outputs is kept).

    Kept as parts rather than as one N × C tensor, so that the cost model (:class:`MacMeter`)
    reads the counts it needs (``Σ mask``, ``max mask``) once per forward pass for every layer
    together instead of concatenating and summing liveness layer by layer; :meth:`tensor` gives
    the N × C tensor where a layer's connectivity needs the channels themselves.
    """

    __slots__ = ("parts",)

    def __init__(self, parts: Tuple[Tuple[int, Optional[Tensor], bool], ...]):
        self.parts = parts

    @staticmethod
    def full(channels: int) -> "Live":
        return Live(((channels, None, False),))

    @staticmethod
    def kept(mask: Tensor) -> "Live":
        """The channels of a gate's keep-``mask`` (N × k)."""
        return Live(((mask.shape[1], mask, False),))

    @staticmethod
    def any_kept(mask: Tensor, channels: int) -> "Live":
        """``channels`` channels, live in the samples where ``mask`` keeps any channel."""
        return Live(((channels, mask, True),))

    @staticmethod
    def extend(live: Optional["Live"], channels: int, mask: Optional[Tensor], new_channels: int) -> Optional["Live"]:
        """Liveness after concatenating ``new_channels`` gated by ``mask`` to ``channels`` whose
        liveness is ``live``; ``None`` stands for "every channel live" and stays ``None`` until
        some layer is gated."""
        if live is None and mask is None:
            return None
        head = live if live is not None else Live.full(channels)
        return head + (Live.kept(mask) if mask is not None else Live.full(new_channels))

    def __add__(self, other: "Live") -> "Live":
        parts = list(self.parts)
        for part in other.parts:
            if parts and part[1] is None and parts[-1][1] is None:
                parts[-1] = (parts[-1][0] + part[0], None, False)
            else:
                parts.append(part)
        return Live(tuple(parts))

    @property
    def channels(self) -> int:
        return sum(part[0] for part in self.parts)

    @property
    def gated(self) -> bool:
        """Whether any part depends on the sample (else every channel is live)."""
        return any(part[1] is not None for part in self.parts)

    def tensor(self) -> Optional[Tensor]:
        """The liveness as an N × C 0/1 tensor, in the first mask's dtype; ``None`` when every
        channel is live."""
        masks = [mask for _, mask, _ in self.parts if mask is not None]
        if not masks:
            return None
        like = masks[0]
        columns = []
        for channels, mask, any_kept in self.parts:
            if mask is None:
                columns.append(like.new_ones(like.shape[0], channels))
            elif any_kept:
                columns.append(mask.amax(1, keepdim=True).expand(-1, channels).to(like.dtype))
            else:
                columns.append(mask.to(like.dtype))
        return columns[0] if len(columns) == 1 else torch.cat(columns, 1)


LiveLike = Union[None, Tensor, Live]


class _QuadraticForm(torch.autograd.Function):
    """``offset + k·linear + kᵀ Q k`` per row ``k`` of ``counts`` (N × V), differentiable in
    ``counts`` and ``offset`` (shape (1,)): ``A = linear + k Q`` then ``offset + Σ_v A_v k_v``
    forward, ``g·(A + k Qᵀ)`` backward, two operations each way. Exact for MAC counts: every value
    is an integer below 2^53, so float64 sums them without rounding in any order."""

    @staticmethod
    def forward(ctx, counts: Tensor, linear: Tensor, quadratic: Tensor, offset: Tensor) -> Tensor:
        a = torch.addmm(linear, counts, quadratic)
        ctx.save_for_backward(counts, quadratic, a)
        return torch.baddbmm(offset.view(1, 1, 1), counts[:, None, :], a[:, :, None]).view(-1)

    @staticmethod
    def backward(ctx, grad: Tensor):
        counts, quadratic, a = ctx.saved_tensors
        grad_counts = torch.addmm(a, counts, quadratic.t()) * grad[:, None] if ctx.needs_input_grad[0] else None
        grad_offset = grad.sum().view(1) if ctx.needs_input_grad[3] else None
        return grad_counts, None, None, grad_offset


def _as_tensor(live: LiveLike) -> Optional[Tensor]:
    return live.tensor() if isinstance(live, Live) else live


#: Cached constant tensors of the cost model's last step (coefficients by structure and device).
_TABLES: Dict[Tuple, Tensor] = {}


def _table(values: Tuple, shape: Tuple[int, ...], device: Union[torch.device, str, None]) -> Tensor:
    """``torch.tensor(values)`` as float64 of ``shape`` on ``device``, made once per structure: a
    tensor made from host data is a copy to the device at every step otherwise."""
    if torch.compiler.is_compiling():
        # A constant of the compiled graph: the cache would be a guard on a global dict, whose first
        # filling would recompile the step.
        return torch.tensor(values, dtype=MACS_DTYPE, device=device).view(shape)
    key = (values, shape, str(device))
    table = _TABLES.get(key)
    if table is None:
        if len(_TABLES) >= 64:
            _TABLES.clear()
        table = _TABLES[key] = torch.tensor(values, dtype=MACS_DTYPE, device=device).view(shape)
    return table


class MacMeter:
    """Accumulates per-sample MACs during one forward pass; :attr:`total` is their sum (N,
    float64).

    ``dense=True`` measures the reference cost: gates are not run, every channel is live and every
    DGConv2d counts as fully connected.

    What costs the same in every sample and step is summed in Python, exactly (a layer with every
    channel live). A DGConv2d's ``nnz(U)·positions`` is kept by module, and read from the batched
    masks of the forward pass (:func:`acs.ops.prepared_dgconvs`) where they exist. A dense layer
    between :class:`Live` channels costs ``positions · outs · ins`` with ``outs`` and ``ins`` sums
    of per-sample counts (``Σ mask`` or ``max mask`` of the gates' masks): the meter keeps the
    coefficients of that quadratic form and evaluates it once, for every layer together, from the
    counts of all masks stacked (a few operations per forward pass instead of a few per layer).
    Anything else (a learned or grouped connectivity between gated channels, liveness given as a
    tensor) is :func:`layer_macs` of the layer, added as it comes.
    """

    def __init__(self, batch: int, device: Union[torch.device, str, None] = None, dense: bool = False):
        self.dense = dense
        self.batch, self.device = batch, device
        self._constant: Union[int, float] = 0
        self._terms: List[Tensor] = []
        self._counts: Dict[Tuple[bool, int], int] = {}  # (any, id(mask)) → index into _masks
        self._masks: List[Tuple[bool, Tensor]] = []
        self._linear: Dict[int, int] = {}
        self._quadratic: Dict[Tuple[int, int], int] = {}
        self._nnz: Dict[int, Tuple[Tensor, Dict[int, int]]] = {}  # id(group nnz) → (nnz, {index: positions})
        self._own_nnz: List[Tuple[DGConv2d, int]] = []

    def add(self, macs: Union[Tensor, float]) -> None:
        if isinstance(macs, Tensor):
            self._terms.append(macs)
        else:
            self._constant += macs

    def layer(
        self,
        module: Layer,
        out_hw: Sequence[int] = (1, 1),
        live_in: LiveLike = None,
        live_out: LiveLike = None,
    ) -> None:
        """Records the MACs of ``module`` computing ``live_out`` of its outputs (``None``: all)
        from the ``live_in`` of its inputs (``None``: all): each a :class:`Live` or, as
        :func:`layer_macs` takes it, an N × C tensor."""
        if self.dense:
            live_in = live_out = None
        if isinstance(live_in, Live) and not live_in.gated:
            live_in = None
        if isinstance(live_out, Live) and not live_out.gated:
            live_out = None
        out_ch, in_ch, area, groups = _shape(module)
        positions = area * int(out_hw[0]) * int(out_hw[1])
        learned = isinstance(module, DGConv2d) and not self.dense
        if live_in is None and live_out is None:
            if learned:
                self._add_nnz(module, positions)
            else:
                macs = out_ch * in_ch * positions
                self._constant += macs // groups if macs % groups == 0 else macs / groups
            return
        if not learned and groups == 1 and not isinstance(live_in, Tensor) and not isinstance(live_out, Tensor):
            self._add_product(self._form(live_out, out_ch), self._form(live_in, in_ch), positions)
            return
        self.add(layer_macs(module, out_hw, _as_tensor(live_in), _as_tensor(live_out)))

    def _add_nnz(self, module: DGConv2d, positions: int) -> None:
        prepared = getattr(module, "_prepared", None)
        if prepared is None:
            self._own_nnz.append((module, positions))
            return
        coefficients = self._nnz.setdefault(id(prepared.nnz), (prepared.nnz, {}))[1]
        coefficients[prepared.index] = coefficients.get(prepared.index, 0) + positions

    def _form(self, live: Optional[Live], channels: int) -> Tuple[int, Dict[int, int]]:
        """The live channel count as ``constant + Σ coefficient · count[index]``."""
        if live is None:
            return channels, {}
        constant, terms = 0, {}
        for width, mask, any_kept in live.parts:
            if mask is None:
                constant += width
                continue
            key = (any_kept, id(mask))
            index = self._counts.get(key)
            if index is None:
                index = self._counts[key] = len(self._masks)
                self._masks.append((any_kept, mask))
            terms[index] = terms.get(index, 0) + (width if any_kept else 1)
        return constant, terms

    def _add_product(self, outs: Tuple[int, Dict[int, int]], ins: Tuple[int, Dict[int, int]], positions: int) -> None:
        (c_out, t_out), (c_in, t_in) = outs, ins
        self._constant += positions * c_out * c_in
        linear, quadratic = self._linear, self._quadratic
        for index, a in t_in.items():
            linear[index] = linear.get(index, 0) + positions * c_out * a
        for index, a in t_out.items():
            linear[index] = linear.get(index, 0) + positions * c_in * a
        for u, a in t_out.items():
            for v, b in t_in.items():
                key = (u, v) if u <= v else (v, u)
                quadratic[key] = quadratic.get(key, 0) + positions * a * b

    def _counts_total(self, offset: Tensor) -> Tensor:
        """``offset + Σ_v linear[v]·count[v] + Σ_{u,v} quadratic[u,v]·count[u]·count[v]`` per
        sample, from every mask's count at once: the masks of one shape stacked, summed (or maxed)
        along their channels."""
        groups: Dict[Tuple, List[int]] = {}
        for index, (any_kept, mask) in enumerate(self._masks):
            groups.setdefault((any_kept, mask.shape, mask.dtype, mask.device), []).append(index)
        columns, order = [], []
        for (any_kept, *_), indices in groups.items():
            stacked = torch.stack([self._masks[i][1] for i in indices], 1)
            columns.append(stacked.amax(-1).to(MACS_DTYPE) if any_kept else stacked.sum(-1, dtype=MACS_DTYPE))
            order.extend(indices)
        counts = columns[0] if len(columns) == 1 else torch.cat(columns, 1)
        size = len(order)
        column = {index: position for position, index in enumerate(order)}
        linear = [0] * size
        for index, a in self._linear.items():
            linear[column[index]] = a
        linear_t = _table(tuple(linear), (size,), counts.device)
        if not self._quadratic:
            return torch.addmv(offset, counts, linear_t)
        quadratic = [0] * (size * size)
        for (u, v), a in self._quadratic.items():
            quadratic[column[u] * size + column[v]] = a
        quadratic_t = _table(tuple(quadratic), (size, size), counts.device)
        return _QuadraticForm.apply(counts, linear_t, quadratic_t, offset)

    @property
    def total(self) -> Tensor:
        """Per-sample MACs recorded so far (N, float64).

        Everything that is the same for every sample (the Python constant, the DGConvs' ``nnz``
        terms, scalar tensors added) is summed into one ``offset`` first, which the per-sample
        part then starts from."""
        scalars = [t for t in self._terms if t.dim() == 0]
        if not (self._masks or self._nnz or self._own_nnz or scalars):
            total = torch.full((self.batch,), float(self._constant), dtype=MACS_DTYPE, device=self.device)
        else:
            offset = _table((float(self._constant),), (1,), self.device)
            for nnz, coefficients in self._nnz.values():
                weights = [0] * nnz.shape[0]
                for index, positions in coefficients.items():
                    weights[index] = positions
                offset = torch.addmv(offset, nnz[None, :], _table(tuple(weights), (len(weights),), nnz.device))
            for module, positions in self._own_nnz:
                offset = offset + module.nnz() * positions
            for term in scalars:
                offset = offset + term
            total = self._counts_total(offset) if self._masks else offset.to(MACS_DTYPE).repeat(self.batch)
        for term in self._terms:
            if term.dim() > 0:
                total = total + term
        return total.to(MACS_DTYPE)
