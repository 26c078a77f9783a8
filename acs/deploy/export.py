"""ONNX export of a deployed (materialized, ungated) model, verified with onnxruntime when present.

Uses torch's default ``torch.export``-based exporter (``dynamo=True``; needs the ``onnx`` and
``onnxscript`` packages). Default opset 20, the exporter's native one in torch 2.14 (18 and 21 also
convert cleanly). Opset 17 cannot be had: its down-conversion fails on this graph and the exporter
silently writes opset 18 instead, so :func:`export_onnx` checks the written opset and raises on any
mismatch.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Sequence, Union

import torch
from torch import Tensor, nn

from acs.deploy.materialize import materialize
from acs.gates import Gate
from acs.models.base import AcsModel, Output
from acs.ops import DGConv2d

DEFAULT_OPSET = 20
_EXTERNAL_DATA_BYTES = 1 << 30  # ONNX protobufs cap at 2 GiB; keep smaller models in one file


class _NoCost:
    """A MacMeter stand-in that records nothing: the exported graph needs no cost bookkeeping."""

    dense = False

    def add(self, macs: object) -> None:
        pass

    def layer(self, *args: object, **kwargs: object) -> None:
        pass


class LogitsOnly(nn.Module):
    """Returns just the logits, so the ONNX graph has the single output ``logits``.

    An AcsModel runs with a no-op meter: tracing ``forward()`` works too (the float64 MAC math feeds
    no output and is pruned), but tracing that math makes torch.export about 3× slower.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        if isinstance(self.model, AcsModel):
            return self.model.run(x, _NoCost())[0]
        out = self.model(x)
        return out.logits if isinstance(out, Output) else out


def deployable(model: nn.Module) -> nn.Module:
    """``model`` itself when it has no DGConv2d left, else a materialized deep copy (``model`` is
    left as it is). A gate network raises ValueError: per-sample skipping is data-dependent and
    has no static ONNX form here."""
    gates = [name for name, m in model.named_modules() if isinstance(m, Gate)]
    if gates:
        raise ValueError(
            f"cannot export a gated model (gate networks at {gates[:3]}{' …' if len(gates) > 3 else ''}): "
            "build it with gate='none' for ONNX export"
        )
    if any(isinstance(m, DGConv2d) for m in model.modules()):
        model = materialize(copy.deepcopy(model))
    return model


@torch.no_grad()
def export_onnx(
    model: nn.Module,
    path: Union[str, os.PathLike],
    input_size: Sequence[int],
    opset: int = DEFAULT_OPSET,
    atol: float = 1e-4,
) -> Path:
    """Exports an ungated ``model`` for ``input_size`` (C, H, W) inputs to ONNX at ``path``.

    The graph has one input ``input`` (N × C × H × W) and one output ``logits`` (N × classes), with a
    dynamic batch axis, in eval mode (BatchNorm uses running statistics). Remaining DGConv2d layers
    are materialized on a deep copy (see :func:`deployable`); gated models raise ValueError.
    When onnxruntime is importable, the file is run on a random batch of 3 (not the traced batch
    size, which checks the dynamic axis) and must match PyTorch within ``atol``, else RuntimeError.
    Returns ``path`` as a Path.
    """
    try:
        import onnx  # noqa: F401  (the exporter needs both; fail with the fix, not deep inside torch)
        import onnxscript  # noqa: F401
    except ImportError as error:
        raise ImportError(f"ONNX export needs onnx and onnxscript: pip install onnx onnxscript ({error})") from error
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapper = LogitsOnly(deployable(model))
    modes = {m: m.training for m in wrapper.modules()}
    wrapper.eval()
    try:
        tensor = next(iter(wrapper.parameters()), torch.zeros(()))
        # Batch 2: the exporter specialises a dimension traced at size 1 to a constant.
        example = torch.randn(2, *input_size, device=tensor.device, dtype=tensor.dtype)
        size = sum(t.numel() * t.element_size() for t in [*wrapper.parameters(), *wrapper.buffers()])
        torch.onnx.export(
            wrapper, (example,), str(path), input_names=["input"], output_names=["logits"],
            opset_version=opset, dynamo=True, dynamic_shapes=({0: torch.export.Dim("batch")},),
            external_data=size > _EXTERNAL_DATA_BYTES, verbose=False,
        )
        written = {o.domain: o.version for o in onnx.load(str(path), load_external_data=False).opset_import}
        if written.get("", written.get("ai.onnx")) != opset:
            raise RuntimeError(f"the exporter wrote opset {written}, not the requested {opset}")
        _check_with_onnxruntime(wrapper, path, input_size, atol)
    finally:
        for module, training in modes.items():
            module.training = training  # per module: train() would recurse over mixed modes
    return path


def _check_with_onnxruntime(wrapper: nn.Module, path: Path, input_size: Sequence[int], atol: float) -> None:
    try:
        import onnxruntime
    except ImportError:
        return  # optional: the export itself already succeeded
    tensor = next(iter(wrapper.parameters()), torch.zeros(()))
    x = torch.randn(3, *input_size, device=tensor.device, dtype=tensor.dtype)
    expected = wrapper(x).cpu()
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = torch.from_numpy(session.run(["logits"], {"input": x.cpu().numpy()})[0]).to(expected.dtype)
    error = (got - expected).abs().max().item() if got.shape == expected.shape else float("inf")
    if not error <= atol:
        raise RuntimeError(
            f"onnxruntime output of {path} differs from PyTorch: shape {tuple(got.shape)} vs "
            f"{tuple(expected.shape)}, max abs error {error:.3g} > {atol:g}"
        )
