"""TorchScript files of deployed models, which ``torch.jit.load`` runs without acs's Python code.

Every file's ``forward(x)`` takes N × C × H × W images and returns ``(logits, macs)``: the N ×
classes logits and the MACs each sample executed (N, float64), as ``acs.Output`` carries them. A
dynamic executor that runs the native kernels calls ``torch.ops.acs.*``: load them before
``torch.jit.load``, by ``import acs.deploy`` or, with torch alone, by ``torch.ops.load_library`` of
the library ``python -m acs.deploy`` ships beside the file (:mod:`acs.deploy.native`).
"""

import warnings
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from acs.deploy.dynamic import DynamicDenseNet
from acs.deploy.export import LogitsOnly
from acs.deploy.fold import conv_im2col, im2col_index

# torch.jit.script/trace/freeze warn that TorchScript is deprecated; tracing a model whose Python
# checks compare shapes warns that they become constants, which they are for one input size.
_QUIET = [".*torch.jit.*deprecated", ".*Converting a tensor to a Python.*", ".*might cause the trace.*"]


class _ExecutorScript(nn.Module):
    """The dynamic executor of a DenseNet for one input size, scriptable as a whole: the executor's
    compiled blocks and head, with the im2col indices of the stem and of each block's gates
    computed at conversion (the executor caches them per input size in a Python dict, which
    TorchScript cannot hold)."""

    plans: List[List[Tensor]]

    def __init__(self, executor: DynamicDenseNet, input_size: Sequence[int]) -> None:
        super().__init__()
        self.blocks, self.head = executor.blocks, executor.head
        self.register_buffer("stem", executor.stem)
        self.kernel, self.stride, self.padding = executor.stem_kernel, executor.stem_stride, executor.stem_padding
        self.register_buffer("stem_index", im2col_index(*input_size[1:], self.kernel, self.stride, self.padding))
        self.plans = []
        with torch.no_grad():  # one pass over a blank image: the feature map size at each block
            x, _ = self._stem(torch.zeros(*input_size))
            height, width = x.shape[1], x.shape[2]
            x = x.view(x.shape[0], -1)
            for block in executor.blocks:
                self.plans.append(executor._im2col_plans("gate", height, width))
                x, height, width, _, _, _ = block(x, height, width, self.plans[-1])

    def _stem(self, sample: Tensor) -> Tuple[Tensor, int]:
        return conv_im2col(sample, self.stem, None, self.stem_index, self.kernel, self.stride, self.padding)

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        logits: List[Tensor] = []
        macs: List[int] = []
        for sample in x:  # samples with different masks share no work
            h, sample_macs = self._stem(sample)
            height, width = h.shape[1], h.shape[2]
            h = h.view(h.shape[0], -1)
            alive: Optional[Tensor] = None
            for index, block in enumerate(self.blocks):
                h, height, width, alive, block_macs, _ = block(h, height, width, self.plans[index])
                sample_macs += block_macs
            out, head_macs = self.head(h, alive)
            logits.append(out)
            macs.append(sample_macs + head_macs)
        return torch.cat(logits), torch.tensor(macs, dtype=torch.float64, device=x.device)


class _StaticScript(nn.Module):
    """A static model (the same convolutions for every sample) and its MACs per sample."""

    def __init__(self, model: nn.Module, macs: float) -> None:
        super().__init__()
        self.model = LogitsOnly(model)
        self.register_buffer("macs", torch.tensor(macs, dtype=torch.float64))

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        logits = self.model(x)
        return logits, self.macs.expand(logits.shape[0])


def script_executor(executor: DynamicDenseNet, input_size: Sequence[int]) -> torch.jit.ScriptModule:
    """``executor`` (built with ``to_dynamic(model, script=False)``: a compiled module cannot be
    compiled into another) as one frozen TorchScript module for ``input_size`` (C, H, W)."""
    with warnings.catch_warnings():
        for message in _QUIET:
            warnings.filterwarnings("ignore", message=message)
        return torch.jit.freeze(torch.jit.script(_ExecutorScript(executor, input_size).eval()))


def trace_static(model: nn.Module, input_size: Sequence[int], macs: float) -> torch.jit.ScriptModule:
    """A static ``model`` (its gates none or removed), traced and frozen for ``input_size`` (C, H,
    W) inputs with any batch size, returning ``macs`` per sample with the logits."""
    wrapper = _StaticScript(model, macs).eval()
    example = torch.zeros(2, *input_size)  # batch 2: a size-1 dimension may be traced as a constant
    with warnings.catch_warnings(), torch.no_grad():
        for message in _QUIET:
            warnings.filterwarnings("ignore", message=message)
        # Frozen: weights become constants, which saves about a tenth at batch 1.
        return torch.jit.freeze(torch.jit.trace(wrapper, (example,), check_trace=False))
