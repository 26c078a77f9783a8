"""run.py as users call it: the quick start, a sweep, a killed run resumed, W&B offline files."""

import json
import signal
import subprocess
import sys
import time

import pytest
from helpers import QUIET, REPO, TINY, run_py

from acs.training.checkpoint import load_checkpoint


def test_quickstart_experiment(tmp_path):
    result = run_py("experiment=quickstart", "trainer.max_epochs=1", "dataset.subset=128", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["dataset"] == "digits"
    assert (tmp_path / "checkpoints" / "best.pt").is_file()
    assert str(tmp_path / "summary.json") in result.stdout + result.stderr


def test_two_job_sweep(tmp_path):
    result = run_py("-m", *TINY, "trainer.max_epochs=1", "regularizer.beta=0,0.5", f"hydra.sweep.dir={tmp_path}")
    assert result.returncode == 0, result.stderr
    summaries = [json.loads((tmp_path / job / "summary.json").read_text()) for job in ("0", "1")]
    assert [s["status"] for s in summaries] == ["completed", "completed"]
    assert [s["overrides"][-1] for s in summaries] == ["regularizer.beta=0", "regularizer.beta=0.5"]


def test_killed_run_resumes(tmp_path):
    args = [*TINY, "trainer.max_epochs=4", f"hydra.run.dir={tmp_path}"]
    process = subprocess.Popen(
        [sys.executable, "run.py", *args], cwd=REPO, env=QUIET, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    last = tmp_path / "checkpoints" / "last.pt"
    deadline = time.time() + 240
    while not last.exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    interrupted_at = load_checkpoint(last)["epoch"]
    assert 1 <= interrupted_at < 4
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "running"

    result = run_py(*args, "resume=true")
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["epochs_completed"] == 4
    epochs = [json.loads(line)["epoch"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3, 4]


@pytest.mark.slow  # test_wandb reads the same offline files in the default run
def test_wandb_offline_files_live_in_the_run_folder(tmp_path):
    with_wandb = tmp_path / "wandb_run"
    result = run_py(
        *TINY, "trainer.max_epochs=1", "logger=wandb", "logger.wandb.mode=offline", f"hydra.run.dir={with_wandb}"
    )
    assert result.returncode == 0, result.stderr
    runs = list((with_wandb / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))

    without = tmp_path / "plain_run"
    assert run_py(*TINY, "trainer.max_epochs=1", f"hydra.run.dir={without}").returncode == 0
    assert not list(without.rglob("*wandb*"))


def test_missing_dataset_is_one_clear_line(tmp_path):
    result = run_py(
        "dataset=cifar10",
        "dataset.download=false",
        f"dataset.root={tmp_path / 'nowhere'}",
        "trainer=cpu",
        "logger=none",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert result.returncode == 2
    error = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "cifar-10-batches-py" in error[0] and str(tmp_path / "nowhere") in error[0]


def _imported_modules(stderr: str) -> set:
    """The modules that `python -X importtime` reported loading."""
    return {line.rsplit("|", 1)[-1].strip() for line in stderr.splitlines() if line.startswith("import time:")}


def test_help_shows_the_common_commands_without_importing_torch():
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "run.py", "--help"], cwd=REPO, capture_output=True, text=True,
        timeout=120, env=QUIET,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    modules = _imported_modules(result.stderr)
    assert "acs.training.config" in modules  # the schema was loaded: the check below looked at a real import
    assert not {m for m in modules if m == "torch" or m.startswith("torch.")}
    examples = result.stdout.split("== Configuration groups ==")[0]
    for command in ("experiment=quickstart", "-m regularizer.beta=", "resume=true", "mode=eval ckpt_path="):
        assert f"python run.py {command}" in examples
    assert "gate: acs, aig" in result.stdout  # Hydra's own listing follows


def test_tab_completion_does_not_import_torch():
    env = {**QUIET, "COMP_LINE": "python run.py model=dense"}
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "run.py", "-sc", "query=bash"], cwd=REPO, capture_output=True, text=True,
        timeout=120, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "model=densenet40" in result.stdout.split()
    modules = _imported_modules(result.stderr)
    assert "acs.training.config" in modules and "torch" not in modules
