"""Host synchronisations of training: at most one per step. On a GPU every read of a device value by
the host (``.item()``, ``.tolist()``, ``bool()``/``int()``/``float()`` of a tensor, ``nonzero``, …)
waits for all the work queued before it; the training loop accumulates its metrics and its NaN guard on
the device and reads them at a low rate. Counted here on the CPU, where the same calls are made."""

import pytest
import torch
from helpers import TINY, compose_config
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from acs.training.builders import build_data, build_model, seed_everything
from acs.training.config import validate
from acs.training.engine import StepContext, TrainingDiverged, run_epoch
from acs.training.objective import build_regularizer
from acs.training.optim import build_optimizer

# Operators whose result the host must wait for: a scalar read (what .item(), int(), float() and
# bool() of a tensor call), or an output whose size depends on the values.
SYNCING_OPS = {
    torch.ops.aten._local_scalar_dense.default,
    torch.ops.aten.is_nonzero.default,
    torch.ops.aten.nonzero.default,
    torch.ops.aten.masked_select.default,
    torch.ops.aten.equal.default,
    torch.ops.aten.unique_consecutive.default,
    torch.ops.aten._unique2.default,
}
# Python-level reads that copy a whole tensor to the host without a scalar operator (on the CPU they
# dispatch nothing at all).
SYNCING_METHODS = {torch.Tensor.tolist, torch.Tensor.numpy, torch.Tensor.cpu}


class _Ops(TorchDispatchMode):
    def __init__(self, counter):
        super().__init__()
        self.counter = counter

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in SYNCING_OPS:
            self.counter.record(str(func))
        return func(*args, **(kwargs or {}))


class _Methods(TorchFunctionMode):
    def __init__(self, counter):
        super().__init__()
        self.counter = counter

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in SYNCING_METHODS:
            self.counter.record(func.__name__)
        return func(*args, **(kwargs or {}))


class SyncCounter:
    """Counts the host synchronisations made inside ``with SyncCounter() as syncs:``."""

    def __init__(self):
        self.calls = []

    def record(self, name):
        self.calls.append(name)

    @property
    def count(self):
        return len(self.calls)

    def __enter__(self):
        self._modes = [_Methods(self), _Ops(self)]
        for mode in self._modes:
            mode.__enter__()
        return self

    def __exit__(self, *exc):
        for mode in reversed(self._modes):
            mode.__exit__(*exc)


def tiny_run(*extra, steps=6):
    """A tiny gated DenseNet with its regularizer, and ``steps`` batches of synthetic data read in
    advance: the count covers the training steps, not the data loading."""
    cfg = compose_config(*TINY, "dataset.options.train_size=48", "dataset.batch_size=8", "regularizer=flops", *extra)
    validate(cfg)
    seed_everything(cfg.seed, cfg.trainer.deterministic)
    loaders = build_data(cfg.dataset, cfg.seed)
    model = build_model(cfg.model, cfg.gate, loaders.num_classes, loaders.in_channels)
    dense = model.dense_macs(loaders.input_size)
    batches = list(loaders.train)[:steps]
    assert len(batches) == steps
    ctx = StepContext(torch.device("cpu"), loss=cfg.loss, regularizer=build_regularizer(cfg.regularizer, dense))
    return model, batches, dense, ctx, build_optimizer(cfg.optimizer, model)


def test_the_counter_counts_scalar_reads():
    x = torch.ones(3)
    with SyncCounter() as syncs:
        x.sum().item()
        float(x[0])
        bool(x.any())
        x.tolist()
        x.nonzero()
        y = x * 2  # no read
    assert syncs.count == 5, syncs.calls
    assert y.sum() == 6  # outside: not counted


@pytest.mark.parametrize(
    "progress, check_every", [(False, 20), (True, 20), (False, 1), (True, 2)], ids=["quiet", "bar", "quiet-1", "bar-2"]
)
def test_a_training_step_synchronises_the_host_at_most_once(progress, check_every):
    steps = 6
    model, batches, dense, ctx, optimizer = tiny_run(steps=steps)
    ctx.progress, ctx.check_every = progress, check_every
    with SyncCounter() as syncs:
        metrics = run_epoch(model, batches, "train", dense, ctx, optimizer)
    assert syncs.count <= steps, syncs.calls
    assert 0 < metrics["train/compute_ratio"] and metrics["train/acc1"] >= 0


def test_a_deliberate_read_per_step_is_counted():
    """The test above would catch the loop reading one value a step too many."""
    steps = 6
    model, batches, dense, ctx, optimizer = tiny_run(steps=steps)
    ctx.progress = False
    real = ctx.regularizer

    def reading(out):
        term = real(out)
        term.item()  # a deliberate synchronisation every step
        return term

    ctx.regularizer = reading
    with SyncCounter() as syncs:
        run_epoch(model, batches, "train", dense, ctx, optimizer)
    assert syncs.count > steps, syncs.calls


def test_evaluation_reads_its_metrics_once():
    model, batches, dense, ctx, _ = tiny_run(steps=4)
    ctx.progress = False
    with SyncCounter() as syncs:
        metrics = run_epoch(model, batches, "test", dense, ctx)
    assert syncs.count <= 1, syncs.calls
    assert set(metrics) >= {"test/loss", "test/acc1", "test/acc5", "test/compute_ratio", "test/keep_rate"}


def test_divergence_is_still_caught_and_names_its_step():
    """Read every step, every other step or only at the end of the epoch, the guard names the same
    first step that diverged, and its value."""
    messages = []
    for check_every in (1, 2, 20):
        model, batches, dense, ctx, _ = tiny_run(steps=6)
        ctx.progress, ctx.check_every = False, check_every
        optimizer = torch.optim.SGD(model.parameters(), lr=1e30)
        with pytest.raises(TrainingDiverged, match=r"^train (loss|gradient norm) became \S+ at step \d+$") as error:
            run_epoch(model, batches, "train", dense, ctx, optimizer)
        messages.append(str(error.value))
    assert len(set(messages)) == 1, messages
