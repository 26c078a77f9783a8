"""Shared test utilities: the repository's paths, the miniature training config and how run.py is
called, an independent MAC counter and DGConv materialisation.

Test modules import these as ``from helpers import ...`` (setup.cfg puts tests/ on the path); they
never import one another or conftest.py, which holds only fixtures.
"""
import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import torch
import yaml
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from acs.models import AcsModel
from acs.ops import DGConv2d

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"

# A miniature but real training: densenet40 with narrow gates on tiny synthetic images, on the CPU.
TINY = [
    "dataset=synthetic",
    "dataset.options.image_size=8",
    "dataset.options.train_size=96",
    "dataset.options.test_size=64",
    "trainer=cpu",
    "trainer.max_epochs=2",
    "trainer.progress=false",
    "logger=none",
    "gate.width=8",
    "scheduler=constant",
]

# The environment run.py subprocesses get: W&B quiet, no git lookups, and one intra-op thread, as the
# tests in this process have (conftest.py's one_thread says why).
QUIET = {
    **os.environ,
    "WANDB_SILENT": "true",
    "WANDB_CONSOLE": "off",
    "WANDB_DISABLE_GIT": "true",
    "OMP_NUM_THREADS": "1",
}


def compose_config(*overrides: str):
    """The config run.py would see for these command-line overrides."""
    from hydra import compose, initialize_config_dir

    from acs.training.config import register_schema

    register_schema()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def run_py(*args, timeout=300):
    """run.py as a user calls it, in the repository root; the completed process, output captured."""
    return subprocess.run(
        [sys.executable, "run.py", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout, env=QUIET
    )


def wandb_records(path: Path) -> list:
    """The records of an offline W&B run's ``.wandb`` file, decoded with W&B's own protobuf classes
    (wandb 0.31 has no reader of its own): a ':W&B' header (7 bytes), then LevelDB-log chunks in
    32 KiB blocks, each record a ``wandb_internal_pb2.Record``."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert len(data) < 7 or data[:4] == b":W&B"  # an empty file is one not flushed yet
    pos, block, buf, records = 7, 32768, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # block trailer too short for a chunk header: padding
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if (length == 0 and kind == 0) or pos + 7 + length > len(data):  # end, or still being written
            break
        buf += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST chunk: a whole record
            record = pb.Record()
            record.ParseFromString(buf)
            records.append(record)
            buf = b""
    return records


def finished_wandb_records(folder: Path, run_id: str = "") -> list:
    """Records of the one offline run (of id ``run_id``, if given) in ``folder/wandb`` once complete:
    wandb-core flushes the file shortly *after* run.finish() returns (when the stream closes), so
    this waits for the exit record."""
    files = list((folder / "wandb").glob(f"offline-run-*-{run_id or '*'}/run-*.wandb"))
    assert len(files) == 1, list((folder / "wandb").glob("*"))
    deadline = time.monotonic() + 20
    while True:
        records = wandb_records(files[0])
        if records_of(records, "exit") or time.monotonic() > deadline:
            return records
        time.sleep(0.05)


def records_of(records: list, kind: str) -> list:
    """The records of one kind (``run``, ``history``, ``summary``, ``metric``, ``artifact``, ``exit``...)."""
    return [getattr(r, kind) for r in records if r.WhichOneof("record_type") == kind]


def wandb_history(records: list, key: str) -> list:
    """The values the run logged for ``key``, row by row (JSON-decoded)."""
    return [json.loads(i.value_json) for h in records_of(records, "history") for i in h.item if i.nested_key == [key]]


def wandb_summary(records: list) -> dict:
    """The run's summary as its last update left each key (JSON-decoded; nested keys joined by '/')."""
    summary = {}
    for record in records_of(records, "summary"):
        for item in record.update:
            summary[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return summary


class NullMeter:
    """Swallows a model's own cost bookkeeping, so that the flop counter sees only the network."""

    dense = False

    def layer(self, *args, **kwargs):
        pass

    def add(self, *args, **kwargs):
        pass


def counted_macs(module: nn.Module, x: torch.Tensor) -> float:
    """MACs per sample that torch.utils.flop_counter sees (FLOPs ÷ 2 ÷ batch)."""
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        module.run(x, NullMeter()) if isinstance(module, AcsModel) else module(x)
    return counter.get_total_flops() / 2 / x.shape[0]


def replace_dgconvs(module: nn.Module, replacement: Callable[[DGConv2d], nn.Module]) -> nn.Module:
    """Replaces every DGConv2d below ``module`` by ``replacement(it)``, in place."""
    for name, child in module.named_children():
        if isinstance(child, DGConv2d):
            setattr(module, name, replacement(child))
        else:
            replace_dgconvs(child, replacement)
    return module


def materialize_dgconvs(module: nn.Module) -> nn.Module:
    """Every DGConv2d below ``module`` replaced by its grouped equivalent, in place."""
    return replace_dgconvs(module, DGConv2d.materialize)


def densify_dgconvs(module: nn.Module) -> nn.Module:
    """Every DGConv2d below ``module`` replaced by a fully connected ``nn.Conv2d`` of its shape, in
    place and on its device (meta included): the layer ``dense_macs`` counts, whatever the gates
    say. Only the shape is kept, not the weights: this is for counting, not for computing."""

    def dense(conv: DGConv2d) -> nn.Module:
        return nn.Conv2d(
            conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
            bias=conv.bias is not None, device=conv.weight.device, dtype=conv.weight.dtype,
        )  # fmt: skip

    return replace_dgconvs(module, dense)


DENSE = 1e8  # dense MACs of the fake model of write_job


def write_job(folder: Path, overrides, status="completed", acc1=None, macs=None, gate="acs", summary=True, **extra):
    """A job folder as the runner leaves it; ``summary=False`` is a job that never started."""
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(list(overrides)))
    (folder / ".hydra" / "config.yaml").write_text(
        yaml.safe_dump({"model": {"name": "densenet40"}, "gate": {"name": gate}, "dataset": {"name": "cifar10"}})
    )
    if not summary:
        return
    data = {
        "status": status,
        "mode": "train",
        "model": "densenet40",
        "gate": gate,
        "dataset": "cifar10",
        "overrides": list(overrides),
        "params": 1_019_722,
        "dense_macs": DENSE,
        "dense_flops": 2 * DENSE,
        "run_time_s": 12.5,
        "epochs_completed": 300 if status == "completed" else 7,
    }
    if acc1 is not None:
        final = {
            "test/acc1": acc1,
            "test/acc5": 99.5,
            "test/macs": macs,
            "test/flops": 2 * macs,
            "test/compute_ratio": macs / DENSE,
            "train/acc1": 99.9,
        }
        data.update(final=final, best={"epoch": 300, "metric": "test/acc1", "value": acc1, "metrics": final})
    data.update(extra)
    (folder / "summary.json").write_text(json.dumps(data))
