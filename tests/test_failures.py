"""Nothing lost, ever: whatever fails, every job leaves its summary.json and the sweep its report; a
failure the user caused is one line and exit code 2, and what can be checked before a run folder is
made is checked there. Driven through run.py, as a user meets these failures, or in this process
where a fault is injected into training."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from helpers import QUIET, REPO, TINY, compose_config, run_py
from PIL import Image
from torchvision import datasets as tvd

from acs.data import DataFileError, DatasetNotFoundError, build_datasets, make_loader
from acs.data.sources import cifar_files, mnist_files, svhn_files
from acs.reporting.keep_rates import KEEP_RATES_PNG
from acs.training import runner
from acs.training.app import execute
from acs.training.checkpoint import CheckpointError, save_checkpoint
from acs.training.config import ConfigError, validate

# Installed as sitecustomize, this makes every SGD step at lr 0.123 raise, as a bug or running out
# of memory would: a failure that is no user error, in the middle of training.
FAULT = """
import torch

_step = torch.optim.SGD.step


def step(self, *args, **kwargs):
    if self.param_groups[0]["lr"] == 0.123:
        raise RuntimeError("simulated fault")
    return _step(self, *args, **kwargs)


torch.optim.SGD.step = step
"""
ONE_EPOCH = [*TINY, "trainer.max_epochs=1"]
# A run on a torchvision data set: TINY's options are the synthetic set's.
PLAIN = ["trainer=cpu", "trainer.max_epochs=1", "trainer.progress=false", "logger=none", "dataset.download=false"]


def _summary(folder):
    return json.loads((folder / "summary.json").read_text())


@pytest.fixture
def faulty(tmp_path, monkeypatch):
    """run.py processes in which training at optimizer.lr=0.123 raises RuntimeError."""
    (tmp_path / "fault").mkdir()
    (tmp_path / "fault" / "sitecustomize.py").write_text(FAULT)
    monkeypatch.setitem(QUIET, "PYTHONPATH", str(tmp_path / "fault"))


def test_a_sweep_whose_job_raises_keeps_every_job_and_the_report(tmp_path, faulty):
    sweep = tmp_path / "sweep"
    result = run_py("-m", *ONE_EPOCH, "optimizer.lr=0.123,0.1", f"hydra.sweep.dir={sweep}")
    assert result.returncode == 1  # after the report: a script can tell
    assert "error: 1 job(s) of the sweep did not complete: 0" in result.stderr
    assert [_summary(sweep / job)["status"] for job in "01"] == ["failed", "completed"]
    assert _summary(sweep / "0")["error"] == "RuntimeError: simulated fault"
    assert "Traceback" in (sweep / "0" / "run.log").read_text()
    assert "failed" in (sweep / "results.md").read_text() and (sweep / "results.csv").is_file()


def test_a_run_that_raises_leaves_a_failed_summary_and_its_traceback(tmp_path, faulty):
    result = run_py(*ONE_EPOCH, "optimizer.lr=0.123", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 1 and "RuntimeError: simulated fault" in result.stderr
    summary = _summary(tmp_path / "run")
    assert summary["status"] == "failed" and summary["error"] == "RuntimeError: simulated fault"
    assert "Traceback" in (tmp_path / "run" / "run.log").read_text()


@pytest.mark.parametrize(
    "dataset, files",
    [
        ("fashion_mnist", mnist_files(tvd.FashionMNIST)),  # idx files
        ("cifar10", cifar_files(tvd.CIFAR10)),  # pickles
        ("svhn", svhn_files(extra=False)),  # .mat files
    ],
)
def test_a_damaged_data_file_is_one_line(tmp_path, dataset, files):
    for name in files:  # all present, none readable
        (tmp_path / "data" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "data" / name).write_bytes(os.urandom(256))
    run_dir = tmp_path / "run"
    result = run_py(*PLAIN, f"dataset={dataset}", f"dataset.root={tmp_path / 'data'}", f"hydra.run.dir={run_dir}")
    assert result.returncode == 2
    assert re.fullmatch(rf"error: dataset '{dataset}' is corrupted \(.*\n", result.stderr)
    assert _summary(run_dir)["status"] == "failed"
    assert "Traceback" in (run_dir / "run.log").read_text()  # the parser's own error, for whoever digs


def test_a_damaged_image_is_one_line_from_a_loader_worker(tmp_path):
    for split in ("train", "val"):
        (tmp_path / "imagenet" / split / "n01").mkdir(parents=True)
    (tmp_path / "imagenet" / "train" / "n01" / "bad.JPEG").write_bytes(os.urandom(256))
    Image.new("RGB", (8, 8)).save(tmp_path / "imagenet" / "val" / "n01" / "good.png")
    # Raised in a worker process, the error comes back rebuilt from the worker's traceback.
    loader = make_loader(build_datasets("imagenet", root=tmp_path).train, 1, False, num_workers=1)
    with pytest.raises(DataFileError) as error:
        next(iter(loader))
    assert re.fullmatch(r"cannot read image .*bad\.JPEG \(UnidentifiedImageError: .*\): replace or delete the file",
                        str(error.value))  # fmt: skip


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["optimizer.lr=inf"], "optimizer.lr must be a finite number, got inf"),
        (["model.conv=group", "model.groups=5"], "conv 'group' needs a group count dividing 16 and 12, got 5"),
        (["logger=wandb", "logger.wandb.mode=ofline"], "logger.wandb.mode='ofline' is not one of: offline, online"),
    ],
)
def test_refused_before_any_folder_is_made(tmp_path, overrides, message):
    result = run_py(*ONE_EPOCH, *overrides, f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {message}") and result.stderr.count("\n") == 1
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["optimizer.weight_decay=nan"], "optimizer.weight_decay must be a finite number, got nan"),
        (["optimizer.momentum=inf"], "optimizer.momentum must be a finite number"),
        (["optimizer=adamw", "optimizer.betas=[0.9,1.5]"], "optimizer.betas are two values in [0, 1)"),
        (["regularizer.beta=inf"], "regularizer.beta must be a finite number"),
        (["gate.conv=dense", "gate.width=8", "gate.groups=3"], "gate.groups is the group count of gate.conv=group"),
        (["gate.conv=group", "gate.width=8", "gate.groups=3"], "gate.groups must divide gate.width=8, got 3"),
        (["dataset.eval_batch_size=0"], "dataset.eval_batch_size must be >= 1 (or null), got 0"),
        (["+dataset.options.image_sise=8"], "has no option image_sise"),
    ],
)
def test_values_checked_before_the_folder_is_made(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)) as error:
        validate(compose_config(*TINY, *overrides))
    assert "\n" not in str(error.value)


def test_missing_data_and_unreadable_checkpoints_are_found_up_front(tmp_path):
    with pytest.raises(DatasetNotFoundError, match=r"dataset 'mnist' not found in .*: expected MNIST/raw/"):
        validate(compose_config(*PLAIN, "dataset=mnist", f"dataset.root={tmp_path}"))
    validate(compose_config(*PLAIN, "dataset=mnist", f"dataset.root={tmp_path}", "dataset.download=true"))
    with pytest.raises(CheckpointError, match="checkpoint not found: nowhere.pt"):
        validate(compose_config(*TINY, "mode=eval", "ckpt_path=nowhere.pt"))
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        validate(compose_config(*TINY, f"init_from={junk}"))
    save_checkpoint(tmp_path / "good.pt", {"model_name": "densenet40", "model": {"w": torch.zeros(2)}})
    validate(compose_config(*TINY, f"init_from={tmp_path / 'good.pt'}"))


def test_a_diverged_run_names_its_epoch(tmp_path):
    result = run_py(*ONE_EPOCH, "optimizer.lr=1e30", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 2
    diverged = r"error: epoch 1: (train loss|gradient norm) became \S+ at step \d+ \(lower .*\)\n"
    assert re.fullmatch(diverged, result.stderr)
    assert _summary(tmp_path)["status"] == "failed"


@pytest.mark.parametrize("fault", [RuntimeError("simulated fault"), KeyboardInterrupt()], ids=["raises", "ctrl-c"])
def test_a_run_stopped_after_an_epoch_still_draws_its_keep_rates(tmp_path, monkeypatch, fault):
    train_epoch = runner._train_epoch

    def first_epoch_only(run, net, parts, ctx, epoch):
        if epoch == 1:  # the second: the first is recorded
            raise fault
        return train_epoch(run, net, parts, ctx, epoch)

    monkeypatch.setattr(runner, "_train_epoch", first_epoch_only)
    overrides = [*TINY, "trainer.max_epochs=3"]
    with pytest.raises(type(fault)) as raised:
        execute(compose_config(*overrides), str(tmp_path), overrides)
    assert raised.value is fault  # the run's own error, not one of drawing the figure
    summary = _summary(tmp_path)
    assert (summary["status"], summary["final"]["epoch"]) == ("failed", 1)
    assert (tmp_path / KEEP_RATES_PNG).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".*.tmp"))  # written whole, through a temporary file


def _strace_works() -> bool:
    return shutil.which("strace") is not None and subprocess.run(
        ["strace", "-qq", "-o", os.devnull, "true"], capture_output=True
    ).returncode == 0


def test_wandb_offline_stays_in_the_run_folder(tmp_path, monkeypatch):
    home, run_dir, trace = tmp_path / "home", tmp_path / "run", tmp_path / "connects.txt"
    home.mkdir()
    monkeypatch.setitem(QUIET, "HOME", str(home))
    for key in [k for k in QUIET if k.startswith(("XDG_", "WANDB_")) and k != "WANDB_SILENT"]:
        monkeypatch.delitem(QUIET, key)  # W&B's defaults, which point into the home folder
    # matplotlib (the run's keep_rates.png) keeps its font cache under the home folder: not W&B's.
    monkeypatch.setitem(QUIET, "MPLCONFIGDIR", str(tmp_path / "matplotlib"))
    # strace sees wandb-core too (a Go program, out of reach of Python's socket module): every
    # connect() of every process; network sockets are AF_INET/AF_INET6.
    strace = ["strace", "-f", "-qq", "-e", "trace=connect", "-o", str(trace)] if _strace_works() else []
    command = [*strace, sys.executable, "run.py", *ONE_EPOCH, "logger=wandb", "logger.wandb.mode=offline",
               f"hydra.run.dir={run_dir}"]  # fmt: skip
    result = subprocess.run(command, cwd=REPO, env=QUIET, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert list(home.rglob("*")) == []
    if strace:
        assert not [line for line in trace.read_text().splitlines() if "AF_INET" in line]


def test_a_run_stopped_by_sigterm_records_it_and_keeps_what_it_wrote(tmp_path):
    # As a cluster's time limit or preemption stops a job: after its first epoch, mid-run.
    command = [sys.executable, "run.py", *TINY, "trainer.max_epochs=200", f"hydra.run.dir={tmp_path}"]
    process = subprocess.Popen(command, cwd=REPO, env=QUIET, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    last = tmp_path / "checkpoints" / "last.pt"  # written whole (through a temporary file) after epoch 1
    try:
        deadline = time.monotonic() + 240
        while not last.is_file() and process.poll() is None:
            assert time.monotonic() < deadline, "no epoch recorded"
            time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 128 + signal.SIGTERM
    assert stderr.splitlines()[-1] == "error: stopped by SIGTERM"
    summary = _summary(tmp_path)
    assert summary["status"] == "failed" and "SIGTERM" in summary["error"] and summary["final"]["epoch"] >= 1
    assert (tmp_path / KEEP_RATES_PNG).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    state = torch.load(last, map_location="cpu", weights_only=False)
    assert state["epoch"] >= 1  # whole, and resumable
