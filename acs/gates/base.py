"""The gate interface and registry: a gate maps a layer's input to an N × k binary keep-mask."""
from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, Dict, Iterator, List, Mapping, NamedTuple, Optional, Sequence, Tuple, Type, Union

import torch
from torch import Tensor, nn

from acs.cost import MACS_DTYPE, MacMeter, layer_macs
from acs.cost.macs import Layer, LiveLike
from acs.ops import binary_keep, check_estimator, logistic_noise
from acs.registry import Registry

GateSpec = Union[None, str, Mapping[str, Any]]
#: A layer a gate executes: ``(module, output size, reads_input)`` (see :meth:`Gate.cost_layers`).
CostLayer = Tuple[Layer, Tuple[int, int], bool]


class GateOutput(NamedTuple):
    """What a gate decides for one batch.

    ``mask`` (N × k): exactly 0/1 in forward, straight-through in backward; it alone decides what
    is computed and costs MACs. ``probs`` (N × k): the soft scores the mask was drawn from, which
    the ``l1`` regularizer penalises: keep probabilities for the sigmoid/softmax gates, the
    non-negative saliencies for FBS. ``scale`` (N × k or ``None``): what the layer multiplies its
    outputs by in place of the mask, 0 wherever the mask is (FBS: its saliencies on the channels it
    keeps), kept apart so that the mask stays binary.
    """

    mask: Tensor
    probs: Tensor
    scale: Optional[Tensor] = None


# What a gate reads of its input (its ``reads``), as ints so that TorchScript (the deployment
# executor, acs/deploy/) and the native kernels (acs/deploy/native/executor.cpp, which mirrors
# them) dispatch on the same values. SUMMARIES[reads] is the summary's name, for messages.
SUMMARY_INPUT, SUMMARY_SUBSAMPLED, SUMMARY_MEAN, SUMMARY_ABSMEAN = 0, 1, 2, 3
SUMMARIES = ("input", "sub", "mean", "absmean")


def subsample(x: Tensor) -> Tensor:
    """``x[:, :, ::2, ::2]``, as a single slice where the height is even: rows ``2i`` and ``2i+1``
    side by side are one row of twice the width, whose first half's every other pixel is the
    result. The same view, but its backward is one operation instead of one per sliced dimension."""
    n, c, h, w = x.shape
    if h % 2 or not x.is_contiguous():
        return x[:, :, ::2, ::2]
    return x.view(n, c, h // 2, 2 * w)[..., :w:2]


def summarize(x: Tensor, reads: int) -> Tensor:
    """What a gate reads of its input ``x`` (N × C × H × W), by its ``reads``: the input itself
    (:data:`SUMMARY_INPUT`), every other pixel (:data:`SUMMARY_SUBSAMPLED`, what a stride-2 1×1
    conv reads), or the global average pool of ``x`` or of ``|x|`` (:data:`SUMMARY_MEAN`,
    :data:`SUMMARY_ABSMEAN`; N × C). Each is computed per channel, so the summary of a
    concatenation is the concatenation of the summaries: a DenseNet extends it by the new channels
    of every layer instead of re-reading the whole input for every gate, which in training also
    spares scattering each gate's gradient back into a full-size copy of the input."""
    if reads == SUMMARY_SUBSAMPLED:
        return subsample(x)
    if reads == SUMMARY_MEAN:
        return x.mean((2, 3))
    if reads == SUMMARY_ABSMEAN:
        return x.abs().mean((2, 3))
    if reads == SUMMARY_INPUT:
        return x
    names = ", ".join(f"{value} ({name})" for value, name in enumerate(SUMMARIES))
    raise ValueError(f"unknown gate summary {reads!r}; expected one of {names}")


class Gate(nn.Module):
    """Reads the layer input (N × C_in × H × W) and returns a :class:`GateOutput` whose ``mask`` is
    the keep-mask over the layer's ``k`` new output channels.

    A gate reads its input only through :func:`summarize` with its ``reads``, and decides from that
    summary (:meth:`decide`); ``forward(x, summary)`` takes a summary computed by the caller.
    Returning the probabilities with the mask (rather than keeping them on the module) keeps one
    forward pass per decision and nothing stateful between batches.
    """

    reads = SUMMARY_INPUT
    _pass: Optional[Tuple["PassTensors", int]] = None  # set by prepared_gates for one forward pass
    # The name of the parameter that shifts the keep logits one for one (a gate network's output
    # bias), or None. The compute term reaches each logit only through its channel's small share of
    # the model's MACs, so that parameter gets a learning rate of its own (keep_biases, optimizer).
    keep_bias: Optional[str] = None

    def __init__(self, in_channels: int, out_channels: int, detach_input: bool = False) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        # With detach_input the gate's gradients (the compute term's, and the classification loss's
        # through the mask) train the gate network only and stop at the features it reads: the
        # backbone then learns from its masked outputs alone instead of being bent to move 36 gates.
        self.detach_input = detach_input

    def forward(self, x: Tensor, summary: Optional[Tensor] = None) -> GateOutput:
        summary = summarize(x, self.reads) if summary is None else summary
        return self.decide(summary.detach() if self.detach_input else summary)

    def decide(self, summary: Tensor) -> GateOutput:
        """The decision from ``summarize(x, self.reads)``."""
        raise NotImplementedError

    def per_pass(self) -> Optional[Callable[[int, Tensor], Tensor]]:
        """``make(numel, like)`` of the N × k tensor the gate needs afresh at every forward pass in
        its current mode (Gumbel noise, a mask to fill), which :func:`prepared_gates` makes once for
        all gates that share ``make``; ``None`` where it needs none."""
        return None

    def pass_tensor(self, like: Tensor) -> Tensor:
        """This gate's :meth:`per_pass` tensor, shaped like ``like`` (N × k): its part of the one
        :func:`prepared_gates` holds, or its own outside it."""
        if self._pass is None:
            return self.per_pass()(like.numel(), like).view_as(like)
        tensors, index = self._pass
        return tensors.part(index, like)

    def cost_layers(self, in_hw: Sequence[int]) -> List[CostLayer]:
        """The Conv2d/Linear layers (DGConv2d included) the gate executes for an input of spatial
        size ``in_hw``: ``(module, output size, reads_input)``, ``reads_input`` where the layer
        reads the gate's input channels (whose skipped ones cost nothing)."""
        raise NotImplementedError

    def macs(self, in_hw: Sequence[int], live_in: Optional[Tensor] = None) -> Tensor:
        """The gate's own per-sample MACs for an input of spatial size ``in_hw`` whose live
        channels are ``live_in`` (N × C_in, ``None`` = all): :func:`acs.cost.layer_macs` of its
        :meth:`cost_layers` (a float64 scalar, or N values with ``live_in``)."""
        total = torch.zeros(
            () if live_in is None else live_in.shape[:1], dtype=MACS_DTYPE, device=next(self.parameters()).device
        )
        for module, out_hw, reads_input in self.cost_layers(in_hw):
            total = total + layer_macs(module, out_hw, live_in=live_in if reads_input else None)
        return total


def keep_biases(model: nn.Module) -> List[nn.Parameter]:
    """The keep-bias parameter (:attr:`Gate.keep_bias`) of every gate in ``model``."""
    return [m.get_parameter(m.keep_bias) for m in model.modules() if isinstance(m, Gate) and m.keep_bias]


class LogitGate(Gate):
    """A gate whose mask is drawn from per-channel keep logits by one of the estimators of
    :mod:`acs.ops.binary` (``ste`` or ``gumbel`` with ``temperature``); evaluation always
    thresholds the keep probability at 0.5. Subclasses implement :meth:`score`."""

    def __init__(
        self, in_channels: int, out_channels: int, estimator: str, temperature: float, detach_input: bool = False
    ) -> None:
        super().__init__(in_channels, out_channels, detach_input)
        check_estimator(estimator, temperature)
        self.estimator, self.temperature = estimator, temperature

    def score(self, summary: Tensor) -> Tensor:
        """Keep logits (N × k) from the gate's summary of its input."""
        raise NotImplementedError

    def logits(self, x: Tensor) -> Tensor:
        """Keep logits (N × k) of the input ``x``."""
        return self.score(summarize(x, self.reads))

    def per_pass(self) -> Optional[Callable[[int, Tensor], Tensor]]:
        return logistic_noise if self.training and self.estimator == "gumbel" else None

    def decide(self, summary: Tensor) -> GateOutput:
        logits = self.score(summary)
        noise = self.pass_tensor(logits) if self.per_pass() is not None else None
        return GateOutput(*binary_keep(logits, self.estimator, self.temperature, self.training, noise))


def check_width(width: int) -> None:
    """The channel count inside a gate (every gate design with a hidden width checks it alike)."""
    if width < 1:
        raise ValueError(f"gate.width must be >= 1, got {width}")


def keep_logit(init_keep: float) -> float:
    """The logit of an initial keep probability, which a gate's output bias starts at."""
    if not 0.0 < init_keep < 1.0:
        raise ValueError(f"gate.init_keep must lie in (0, 1), got {init_keep}")
    return math.log(init_keep / (1.0 - init_keep))


# "none" is an ungated layer: a registered name whose entry builds nothing.
GATES: Registry[Optional[Type["Gate"]]] = Registry("gate")
GATES.add("none", None)


def register_gate(name: str) -> Callable[[Type[Gate]], Type[Gate]]:
    """Class decorator: makes the gate available to :func:`create_gate` as ``name``."""
    return GATES.register(name)


def list_gates() -> List[str]:
    return GATES.names()


def create_gate(spec: GateSpec, in_channels: int, out_channels: int) -> Optional[Gate]:
    """Builds a gate from a name (``"acs"``) or a mapping (``{"name": "acs", "width": 16}``).

    ``"none"`` (or ``None``) means an ungated layer and returns ``None``. Options set to ``None``
    are left out, since the config schema carries every gate's options and leaves the others unset;
    an option the gate does not have is an error rather than silently ignored.
    """
    if spec is None:
        return None
    options = {"name": spec} if isinstance(spec, str) else {k: v for k, v in spec.items() if v is not None}
    name = options.pop("name", None)
    cls = GATES.get(name)
    if cls is None:  # ungated: options typed for the gated designs (a sweep over gate=acs,none) do not apply
        return None
    GATES.check_options(name, options)
    return cls(in_channels, out_channels, **options)


def check_gate(spec: GateSpec) -> None:
    """ValueError, with the gate's own message, unless ``spec`` builds a gate: every rule on a
    gate's options lives in its constructor, so building one for a 1 → 1 layer checks them all."""
    create_gate(spec, 1, 1)


class PassTensors:
    """The per-pass tensors of a group of gates (:meth:`Gate.per_pass`), made together at the first
    one's call, in its dtype and on its device, and split into one N × k part per gate, in module
    order. Made from one flat draw, Gumbel noise is the very numbers that gate-by-gate draws in that
    order give on a CPU (its generator is sequential)."""

    def __init__(self, make: Callable[[int, Tensor], Tensor], widths: List[int]) -> None:
        self.make, self.widths = make, widths
        self.parts: Optional[List[Tensor]] = None

    def part(self, index: int, like: Tensor) -> Tensor:
        if self.parts is None:
            n = like.shape[0]
            flat = self.make(n * sum(self.widths), like).split([n * w for w in self.widths])
            self.parts = [chunk.view(n, w) for chunk, w in zip(flat, self.widths)]
        part = self.parts[index]
        # A gate that sees another batch size than the first (no registered model has one) makes its own.
        return part if part.shape == like.shape else self.make(like.numel(), like).view_as(like)


@contextlib.contextmanager
def prepared_gates(model: nn.Module) -> Iterator[None]:
    """Within the block, the gates of ``model`` take their per-pass tensors (:meth:`Gate.per_pass`)
    from one made for all gates of the same ``make``: two operations per forward pass instead of two
    per gate (DESIGN.md, "Launches"). Made afresh in every pass; nothing outlives the block."""
    groups: Dict[Callable, List[Gate]] = {}
    for module in model.modules():
        if isinstance(module, Gate) and module.per_pass() is not None:
            groups.setdefault(module.per_pass(), []).append(module)
    try:
        for make, gates in groups.items():
            tensors = PassTensors(make, [gate.out_channels for gate in gates])
            for index, gate in enumerate(gates):
                gate._pass = (tensors, index)
        yield
    finally:
        for gates in groups.values():
            for gate in gates:
                gate._pass = None


def run_gate(
    gate: Optional[Gate], x: Tensor, meter: MacMeter, live_in: LiveLike, summary: Optional[Tensor] = None
) -> Optional[GateOutput]:
    """The gate's decision for ``x`` (or for ``summary``, its summary of ``x`` when the caller
    keeps one) with its cost recorded layer by layer (``live_in``: the liveness of ``x``'s
    channels, see :class:`acs.cost.Live`); ``None`` when ungated or when the meter measures the
    reference (gate-free) cost."""
    if gate is None or meter.dense:
        return None
    for module, out_hw, reads_input in gate.cost_layers(x.shape[-2:]):
        meter.layer(module, out_hw, live_in=live_in if reads_input else None)
    return gate(x, summary)
