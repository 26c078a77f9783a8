"""What a run and a sweep write to the console when it goes to a file (Slurm, `> log`): no progress-bar
frames, a header block naming the run, each line of a parallel sweep labelled with its job, and the
sweep's jobs done / total."""

import re
import sys

from helpers import CONF, TINY, compose_config, run_py

from acs.training.app import execute
from acs.training.callbacks import _Labelled, _sweep_size

BAR_FRAME = re.compile(r"\d+/\d+ \[|it/s|s/it")  # what tqdm writes on every redraw


def test_a_run_into_a_file_writes_lines_not_bar_frames(tmp_path):
    result = run_py(*TINY, "trainer.progress=true", "trainer.max_epochs=2", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr
    lines = (result.stdout + result.stderr).splitlines()  # pipes, as a file: not a terminal
    assert not [line for line in lines if BAR_FRAME.search(line)]
    assert len([line for line in lines if re.search(r"- epoch \d/2: train loss", line)]) == 2
    assert len(lines) <= 10  # the header block, an epoch line each, the result, where it is
    header = [line.split(" - ", 1)[1] for line in lines[:4]]
    assert header[0].startswith(f"run      {tmp_path} (mode=train")
    assert re.fullmatch(r"model    densenet40, gate acs: [\d,]+ parameters, [\d.]+M dense MACs per image", header[1])
    assert header[2].startswith("data     synthetic: 96 train, 64 test images of 3×8×8, 10 classes, batch")
    assert header[3].startswith("device   cpu (")


def test_a_terminal_gets_progress_bars(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    overrides = [*TINY, "trainer.progress=true", "trainer.max_epochs=1"]
    execute(compose_config(*overrides), str(tmp_path / "run"), overrides)
    assert BAR_FRAME.search(capsys.readouterr().err)  # the test above would see them if they were drawn
    execute(compose_config(*overrides), str(tmp_path / "sweep" / "0"), overrides, multirun=True)
    assert not BAR_FRAME.search(capsys.readouterr().err)  # a sweep's jobs: lines only, even on a terminal


def test_parallel_sweep_labels_every_line_and_counts_jobs_done(tmp_path):
    # Job 1 is refused (a negative beta) before it writes anything: it counts as done, and failed.
    result = run_py(
        "-m", *TINY, "trainer.max_epochs=1", "regularizer.beta=0,-1", "hydra/launcher=parallel",
        f"hydra.sweep.dir={tmp_path}",
    )  # fmt: skip
    assert result.returncode == 1, result.stderr  # a job failed
    lines = (result.stdout + result.stderr).splitlines()
    jobs = [line for line in lines if "][acs" in line]  # everything the jobs themselves logged
    assert jobs and all(re.match(r"\[job [01]\]\[", line) for line in jobs)
    assert [line for line in jobs if line.startswith("[job 0]") and "- run      " in line]
    assert [line for line in jobs if line.startswith("[job 1]") and "job failed: regularizer.beta" in line]
    progress = [line.split(" - ", 1)[1] for line in jobs if "[acs.sweep]" in line]
    assert len(progress) == 2 and progress[-1] == "sweep: 2/2 jobs done, 1 failed"
    assert progress[0] in ("sweep: 1/2 jobs done, 1 failed", "sweep: 1/2 jobs done, 0 failed", progress[-1])
    assert not [line for line in lines if BAR_FRAME.search(line)]
    assert "[job" not in (tmp_path / "0" / "run.log").read_text()  # the job's own log needs no label


def test_the_label_goes_before_each_line_however_it_is_written(capsys):
    stream = _Labelled(sys.stdout, "[job 3]")
    for piece in ("wandb: Run data", " is saved\nwandb: sync", "\n", "\n", "10%\r20%\r\n"):
        stream.write(piece)  # as print(), click.echo and a bar write: in pieces, or several lines at once
    assert capsys.readouterr().out == (
        "[job 3]wandb: Run data is saved\n[job 3]wandb: sync\n[job 3]\n[job 3]10%\r[job 3]20%\r\n"
    )


def _multirun_config(*overrides):
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode

    from acs.training.config import register_schema

    register_schema()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return GlobalHydra.instance().hydra.compose_config("config", list(overrides), run_mode=RunMode.MULTIRUN)


def test_sweep_size_counts_the_jobs_a_sweep_launches():
    swept = ["regularizer.beta=0.1,0.3,0.6", "regularizer.minimum=30,50", "seed=range(3)", "loss=adjust"]
    config = _multirun_config(*swept)
    assert _sweep_size(config) == 3 * 2 * 3
    config.hydra.sweeper.params = {"trainer.max_epochs": "1,2"}  # values a config file sweeps
    assert _sweep_size(config) == 3 * 2 * 3 * 2
    assert _sweep_size(_multirun_config("hparams_search=pareto")) == 20  # Optuna: its trial count
