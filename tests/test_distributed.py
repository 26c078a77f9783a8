"""Data-parallel training through torchrun (two CPU processes, gloo) against one process, and sweeps
through Hydra's submitit launcher (locally, and the Slurm preset's sbatch request).

The runs are comparable by construction: the global batch is the same (dataset.batch_size is global,
each of the two processes takes half), the training order is the same permutation of (seed, epoch)
split between the ranks, the synthetic set has no augmentation, and gradients are averaged over the
global batch. BatchNorm is the one difference DDP itself makes (statistics of each process's half);
``trainer.sync_bn=true`` removes it, and then two processes match one up to float rounding.
"""

import json
import subprocess
import sys

import pytest
import torch
from helpers import QUIET, REPO, TINY

from acs.data import build_loaders
from acs.training.checkpoint import load_checkpoint

# One thread per process: two processes on two cores, and a lone process is not oversubscribed.
ENV = {**QUIET, "OMP_NUM_THREADS": "1"}
# An odd test set: the two evaluation shards differ in size (16 and 15), and no sample may count twice.
ARGS = [*TINY, "dataset.options.test_size=31"]
# Equal up to float rounding: sums are formed in another order (per rank, then all-reduced). Training
# compounds that over its steps; evaluating fixed weights does not, so it gets the tighter bound (a
# rank evaluating with its own BatchNorm statistics instead of rank 0's is off by ~3e-5).
TRAIN_RTOL, EVAL_RTOL = 1e-4, 1e-6


def run_py(*args, nproc=1, env=ENV, ok=True):
    """run.py in one process, or in ``nproc`` through torchrun; asserts success unless ``ok=False``."""
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"] if nproc > 1 else []
    result = subprocess.run(
        [sys.executable, *launcher, "run.py", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    if ok:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def assert_same_metrics(got, want, keys=None, rel=TRAIN_RTOL):
    keys = [k for k in want if k != "time_s"] if keys is None else keys
    assert {k: got[k] for k in keys} == pytest.approx({k: want[k] for k in keys}, rel=rel, abs=1e-9)


def test_ranks_share_out_the_one_process_batches():
    options = dict(batch_size=8, seed=3, train_size=24, test_size=11, num_classes=1000)

    def split(processes):
        """Per global batch, the labels of all ranks' shares together; and each rank's test labels."""
        parts = [build_loaders("synthetic", num_replicas=processes, rank=r, **options) for r in range(processes)]
        for part in parts:
            part.set_epoch(1)
        batches = zip(*[[y for _, y in part.train] for part in parts])
        return [sorted(torch.cat(b).tolist()) for b in batches], [torch.cat([y for _, y in p.test]) for p in parts]

    one, (whole,) = split(1)
    two, halves = split(2)
    assert len(one) == 3 and two == one  # labels of 1000 classes stand in for the samples
    assert [len(h) for h in halves] == [6, 5] and sorted(torch.cat(halves).tolist()) == sorted(whole.tolist())
    with pytest.raises(ValueError, match="global batch of 3 processes"):
        build_loaders("synthetic", num_replicas=3, rank=0, **options)


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """The single-process run every distributed run is compared with: two epochs of ARGS."""
    run_dir = tmp_path_factory.mktemp("one_process")
    run_py(*ARGS, f"hydra.run.dir={run_dir}")
    return records(run_dir)


def test_two_processes_train_like_one_and_only_rank_0_writes(tmp_path, one_process):
    # Microseconds in the folder name: without one shared folder, the ranks would make two.
    result = run_py(*ARGS, "trainer.sync_bn=true", f"hydra.run.dir={tmp_path}/" + "${now:%H-%M-%S-%f}", nproc=2)
    (run_dir,) = tmp_path.iterdir()
    expected = [".hydra", ".lock", "checkpoints", "keep_rates.png", "metrics.jsonl", "run.log", "summary.json"]
    assert sorted(p.name for p in run_dir.iterdir()) == expected
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["best.pt", "last.pt"]
    lines = records(run_dir)
    assert [r["epoch"] for r in lines] == [1, 2]  # one writer: no line appended twice
    for got, want in zip(lines, one_process):
        assert_same_metrics(got, want)
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"
    # Rank 1 logs warnings only, to the console; run.log is rank 0's.
    assert (run_dir / "run.log").read_text().count("done: test acc1") == 1
    assert (result.stdout + result.stderr).count("done: test acc1") == 1


def test_a_two_process_run_resumes_in_one_process(tmp_path, one_process):
    run_py(*ARGS, "trainer.max_epochs=1", "trainer.sync_bn=true", f"hydra.run.dir={tmp_path}", nproc=2)
    checkpoint = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert checkpoint["epoch"] == 1 and not any(k.startswith("module.") for k in checkpoint["model"])

    run_py(*ARGS, "resume=true", f"hydra.run.dir={tmp_path}")
    lines = records(tmp_path)
    assert [r["epoch"] for r in lines] == [1, 2]
    # The second epoch sees the same global batches, from the same weights and optimizer state.
    assert_same_metrics(lines[1], one_process[1])


def test_sharded_evaluation_counts_every_test_sample_once(tmp_path):
    # Plain BatchNorm (the default): each rank's running statistics follow its own half of the batch;
    # evaluation must use rank 0's, which the checkpoint holds, on every shard.
    run_dir = tmp_path / "ddp"
    run_py(
        *ARGS, "trainer.max_epochs=1", "logger=wandb", "logger.wandb.mode=offline", f"hydra.run.dir={run_dir}", nproc=2
    )
    assert len(list((run_dir / "wandb").glob("offline-run-*"))) == 1  # W&B on rank 0 only
    distributed = records(run_dir)[-1]

    checkpoint = run_dir / "checkpoints" / "last.pt"
    run_py("mode=eval", f"ckpt_path={checkpoint}", "trainer=cpu", "logger=none", f"hydra.run.dir={tmp_path / 'eval'}")
    single = json.loads((tmp_path / "eval" / "eval.json").read_text())["final"]
    counted = [k for k in single if k.startswith("test/") and not k.endswith(("/loss", "/reg"))]
    assert "test/acc1" in counted and "test/keep/L00" in counted
    assert_same_metrics(distributed, single, counted, rel=EVAL_RTOL)  # (mode=eval's loss has no regularizer)


def test_torchrun_refuses_a_sweep(tmp_path):
    result = run_py("-m", *TINY, "seed=0,1", f"hydra.sweep.dir={tmp_path}", nproc=2, ok=False)
    assert result.returncode != 0 and "torchrun runs one job" in result.stderr
    assert not list(tmp_path.iterdir())


def test_submitit_local_sweep(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    run_py("-m", *TINY, "trainer.max_epochs=1", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10",
           "seed=0,1", f"hydra.sweep.dir={tmp_path}")
    summaries = [json.loads((tmp_path / job / "summary.json").read_text()) for job in "01"]
    assert [s["status"] for s in summaries] == ["completed", "completed"]
    assert [s["overrides"][-1] for s in summaries] == ["seed=0", "seed=1"]
    assert (tmp_path / "results.csv").is_file()
    assert len(list((tmp_path / ".submitit").glob("*/*_log.out"))) == 2  # each job ran as its own process


def test_slurm_preset_asks_sbatch_for_one_gpu_per_job(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    # No cluster here: stand-ins for srun (submitit looks for it) and sbatch (keeps the script it is
    # handed, then fails, which ends the sweep before anything runs).
    bin_dir, script = tmp_path / "bin", tmp_path / "submission.sh"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "sbatch").write_text(f'#!/bin/bash\ncp "${{@: -1}}" {script}\necho stub sbatch >&2\nexit 1\n')
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    launcher = ["hydra/launcher=slurm", "hydra.launcher.partition=gpu", "hydra.launcher.account=lab"]
    env = {**ENV, "PATH": f"{bin_dir}:{ENV['PATH']}"}
    result = run_py("-m", *launcher, *TINY, "seed=0,1,2", f"hydra.sweep.dir={tmp_path / 'sweep'}", env=env, ok=False)
    assert result.returncode != 0 and "stub sbatch" in result.stderr
    request = {line.split()[1] for line in script.read_text().splitlines() if line.startswith("#SBATCH")}
    assert {"--partition=gpu", "--account=lab", "--gpus-per-task=1", "--ntasks-per-node=1", "--time=2880",
            "--array=0-2%3"} <= request
