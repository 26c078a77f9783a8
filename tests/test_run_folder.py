"""A run folder belongs to one run: run.py as users call it refuses another run's folder (leaving it
byte for byte as it was) unless resume=true or overwrite=true, refuses a folder another process
holds, evaluates beside a run without touching it, and never records an epoch twice."""

import json
import shutil
import signal
import subprocess
import sys
import time

import pytest
from helpers import QUIET, REPO, TINY, compose_config, run_py

from acs.training.config import ConfigError, validate

ONE_EPOCH = [*TINY, "trainer.max_epochs=1"]


def snapshot(folder):
    """Every file below ``folder`` with its bytes."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def epochs(folder):
    return [json.loads(line)["epoch"] for line in (folder / "metrics.jsonl").read_text().splitlines()]


def refused(result, *words):
    """One error line on stderr containing ``words``, exit code 2."""
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1, result.stderr[-2000:]
    assert all(word in errors[0] for word in words), errors[0]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A one-epoch run as run.py leaves it (.hydra/, run.log, checkpoints, metrics, summary)."""
    folder = tmp_path_factory.mktemp("finished") / "run"
    result = run_py(*ONE_EPOCH, f"hydra.run.dir={folder}")
    assert result.returncode == 0, result.stderr[-2000:]
    return folder


@pytest.fixture
def old_run(tmp_path, finished_run):
    """A copy of the finished run for one test to use."""
    return shutil.copytree(finished_run, tmp_path / "run")


def test_a_folder_holding_a_run_is_refused_and_left_as_it_was(old_run):
    before = snapshot(old_run)
    result = run_py(*ONE_EPOCH, "seed=1", f"hydra.run.dir={old_run}")
    refused(result, str(old_run), "already holds a run", "resume=true", "overwrite=true")
    assert snapshot(old_run) == before


def test_overwrite_starts_afresh(old_run):
    result = run_py(*ONE_EPOCH, "seed=1", "overwrite=true", f"hydra.run.dir={old_run}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert epochs(old_run) == [1]
    assert json.loads((old_run / "summary.json").read_text())["overrides"][-2:] == ["seed=1", "overwrite=true"]
    assert "seed=1" in (old_run / ".hydra" / "overrides.yaml").read_text()
    assert (old_run / "run.log").read_text().count("done: test acc1") == 1  # the old run's log went with it


def test_resume_and_overwrite_together_are_a_config_error():
    with pytest.raises(ConfigError, match="give one of them"):
        validate(compose_config(*TINY, "resume=true", "overwrite=true"))


def test_a_second_run_on_a_folder_in_use_is_refused_at_once(tmp_path):
    folder = tmp_path / "run"
    first = subprocess.Popen(
        [sys.executable, "run.py", *TINY, "trainer.max_epochs=100", f"hydra.run.dir={folder}"],
        cwd=REPO, env=QUIET, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.time() + 120
        while not (folder / ".hydra" / "overrides.yaml").is_file() and time.time() < deadline:
            assert first.poll() is None, "the first run ended early"
            time.sleep(0.05)
        before = (folder / ".hydra" / "overrides.yaml").read_bytes()
        result = run_py(*ONE_EPOCH, "overwrite=true", f"hydra.run.dir={folder}")
        refused(result, str(folder), "in use by another run")
        assert (folder / ".hydra" / "overrides.yaml").read_bytes() == before
        assert first.poll() is None  # still running, undisturbed
    finally:
        first.kill()
        first.wait()


def test_the_lock_of_a_killed_process_does_not_block(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    hold = (
        "import sys, time; from acs.files import lock_file; assert lock_file(sys.argv[1]) is not None; "
        "print('locked', flush=True); time.sleep(300)"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", hold, str(folder / ".lock")], cwd=REPO, env=QUIET, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline().strip() == "locked"
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    result = run_py(*ONE_EPOCH, f"hydra.run.dir={folder}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert epochs(folder) == [1]


def test_eval_writes_eval_json_beside_the_run_and_changes_none_of_its_files(old_run):
    before = snapshot(old_run)
    best = old_run / "checkpoints" / "best.pt"
    result = run_py("mode=eval", f"ckpt_path={best}", "trainer=cpu", "logger=none", f"hydra.run.dir={old_run}")
    assert result.returncode == 0, result.stderr[-2000:]
    after = snapshot(old_run)
    assert {name: after[name] for name in before} == before
    assert sorted(set(after) - set(before)) == [
        ".hydra-eval/config.yaml", ".hydra-eval/hydra.yaml", ".hydra-eval/overrides.yaml", "eval.json", "eval.log"
    ]
    evaluation = json.loads(after["eval.json"])
    assert evaluation["status"] == "completed" and evaluation["checkpoint"] == str(best)
    assert evaluation["final"]["test/acc1"] == json.loads(after["summary.json"])["best"]["metrics"]["test/acc1"]


def test_a_failed_resume_leaves_the_run_as_it_was(old_run):
    before = snapshot(old_run)
    result = run_py(*TINY, "gate.width=16", "resume=true", f"hydra.run.dir={old_run}")  # another model
    refused(result, "does not fit this densenet40")
    assert snapshot(old_run) == before  # .hydra/config.yaml and run.log included


def test_a_run_killed_before_its_first_checkpoint_leaves_no_epoch_twice_and_no_temp_files(old_run):
    # As a kill while epoch 1's checkpoint was written leaves it: epoch 1's line, no last.pt, temp files.
    for checkpoint in (old_run / "checkpoints").iterdir():
        checkpoint.unlink()
    stale = [old_run / "checkpoints" / ".last.pt.0123456789ab.tmp", old_run / ".summary.json.ba9876543210.tmp"]
    for path in stale:
        path.write_bytes(b"half a file")
    assert epochs(old_run) == [1]
    result = run_py(*TINY, "resume=true", f"hydra.run.dir={old_run}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert epochs(old_run) == [1, 2]
    assert not [p for p in old_run.rglob("*.tmp")]


def test_a_sweep_into_a_folder_holding_runs_is_refused(tmp_path, finished_run):
    sweep = tmp_path / "sweep"
    shutil.copytree(finished_run, sweep / "0")
    before = snapshot(sweep)
    result = run_py("-m", *ONE_EPOCH, "regularizer.beta=0,0.5", f"hydra.sweep.dir={sweep}")
    refused(result, str(sweep / "0"), "already holds a run")
    assert snapshot(sweep) == before
