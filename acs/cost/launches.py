"""Kernel launches: the aten operations a step dispatches that launch a kernel (views left out).

On a GPU each of them is a kernel launch, so their count bounds a small model's step time from below
(DESIGN.md, "Launches, not only FLOPs"). Counted on any device with a ``TorchDispatchMode``, which
sees every aten operation of the forward and, through autograd, of the backward pass.

An operation is a *view* when every tensor it returns aliases an input without writing to it
(``detach``, ``view``, ``slice``, ``select``, ``expand``, ``t``, ``permute``, ``transpose``,
``unsqueeze``, ``as_strided``, ``alias``, ``split``, ... by their schemas), plus
:data:`EXTRA_VIEWS`: operations whose schemas do not say so but that only make a view (``_unsafe_view``,
``reshape``'s no-copy form) or allocate without touching memory (``empty``). Everything else counts,
``lift_fresh`` included: a tensor made from host data (``torch.tensor(...)``), a host-to-device copy on
a GPU.
"""
from __future__ import annotations

import functools
from collections import Counter
from typing import Callable, Dict, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode

#: Operations counted as views although their schemas return fresh tensors.
EXTRA_VIEWS = frozenset(
    {
        "_unsafe_view",
        "_reshape_alias",
        "empty",
        "empty_strided",
        "empty_like",
        "new_empty",
        "new_empty_strided",
    }
)


#: Operations counted although their schemas return an alias: ``lift_fresh`` marks a tensor made
#: from host data, whose copy to a GPU the dispatcher does not show.
NOT_VIEWS = frozenset({"lift_fresh"})


@functools.lru_cache(maxsize=None)
def is_view(op: torch._ops.OpOverload) -> bool:
    """Whether ``op`` launches no kernel: a view of an input, or a bare allocation."""
    name = op.overloadpacket.__name__
    if name in NOT_VIEWS:
        return False
    if name in EXTRA_VIEWS:
        return True
    returns = op._schema.returns
    if not returns:
        return False
    return all(r.alias_info is not None and not r.alias_info.is_write for r in returns)


class LaunchCounter(TorchDispatchMode):
    """Counts kernel-launching aten operations, by name (``counts``) and in all (``total``).

    ``with LaunchCounter() as launches: ...`` then ``launches.total``."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not is_view(func):
            self.counts[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def training_step(model: nn.Module, x: Tensor, target: Tensor, beta: float = 1e-9) -> Tensor:
    """One training step's computation, as the training loop does it: forward in train mode, then
    backward of cross-entropy plus a flops-style term on the batch-mean MACs. Returns the loss."""
    model.train()
    out = model(x)
    loss = F.cross_entropy(out.logits, target)
    if out.macs.requires_grad:
        loss = loss + beta * out.macs.mean()
    loss.backward()
    return loss


def evaluation_step(model: nn.Module, x: Tensor) -> object:
    """One evaluation step: forward in eval mode without autograd."""
    model.eval()
    with torch.no_grad():
        return model(x)


def count_launches(step: Callable[[], object], counter: Optional[LaunchCounter] = None) -> LaunchCounter:
    """Runs ``step()`` under a :class:`LaunchCounter` and returns it."""
    counter = counter if counter is not None else LaunchCounter()
    with counter:
        step()
    return counter


def step_launches(model: nn.Module, x: Tensor, target: Tensor, warmup: bool = True) -> Dict[str, LaunchCounter]:
    """Launch counts of one training step and one evaluation step of ``model`` on ``x``.

    With ``warmup``, each step runs once uncounted first, so that what a process builds once
    (cached index tables, the cost model's constant tensors) is left out, as in the steady state of
    a training run or of an evaluation pass.
    Gradients are cleared before each training step (``zero_grad`` belongs to the optimizer, not
    counted); ``model`` is left in eval mode with the counted step's gradients."""
    if warmup:
        model.zero_grad(set_to_none=True)
        training_step(model, x, target)
    model.zero_grad(set_to_none=True)
    train = count_launches(lambda: training_step(model, x, target))
    if warmup:
        evaluation_step(model, x)
    evaluation = count_launches(lambda: evaluation_step(model, x))
    return {"train": train, "eval": evaluation}
