"""W&B as a researcher reads it, checked in the offline run files (the records of each run's
``.wandb`` file, decoded with W&B's own protobuf classes): a real miniature sweep with checkpoint
artifacts, an ungated baseline that joins the sweep's group, and an evaluation of the baseline."""
import json
import re
import subprocess
import sys

import pytest
import yaml
from helpers import (
    QUIET,
    REPO,
    TINY,
    compose_config,
    finished_wandb_records,
    records_of,
    run_py,
    wandb_history,
    wandb_summary,
)

from acs.reporting import job_name
from acs.reporting.keep_rates import KEEP_PROFILES_PNG, KEEP_RATES_PNG
from acs.training.runner import evaluate_checkpoint

wandb = pytest.importorskip("wandb")

GROUP = "2026-12-02/10-00-00"  # a sweep's group is its folder's last two parts
OFFLINE = ["trainer.max_epochs=1", "logger=wandb", "logger.wandb.mode=offline"]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A two-job gated sweep (jobs side by side, W&B printing as it does for a user), an ungated
    baseline in its group, an evaluation of the baseline; and the sweep's console output."""
    root = tmp_path_factory.mktemp("study")
    sweep, baseline, evaluation = root / "multirun" / GROUP, root / "baseline", root / "eval"
    runs = [
        ["-m", *TINY, *OFFLINE, "logger.wandb.log_checkpoints=true", "logger.wandb.tags=[study]",
         "logger.wandb.notes=first look", "regularizer.beta=0,0.5", "hydra/launcher=parallel",
         f"hydra.sweep.dir={sweep}"],
        [*TINY, *OFFLINE, "gate=none", f"logger.wandb.group={GROUP}", "logger.wandb.name=baseline",
         f"hydra.run.dir={baseline}"],
    ]  # fmt: skip
    console = []
    for args in runs:
        with pytest.MonkeyPatch.context() as mp:
            if args is runs[0]:  # W&B's console lines and its capture of the jobs' output, as a user has them
                mp.delitem(QUIET, "WANDB_SILENT")
                mp.delitem(QUIET, "WANDB_CONSOLE")
            result = run_py(*args)
        assert result.returncode == 0, result.stderr[-3000:]
        console.append(result)
    # The evaluation in this process, as run.py would run it: one process start less.
    overrides = ["mode=eval", f"ckpt_path={baseline}/checkpoints/best.pt", "trainer=cpu", "trainer.progress=false"]
    with pytest.MonkeyPatch.context() as mp:
        for key, value in QUIET.items():
            if key.startswith("WANDB_"):
                mp.setenv(key, value)
        evaluate_checkpoint(compose_config(*overrides, *OFFLINE[1:]), evaluation, overrides)
    return sweep, baseline, evaluation, console[0]


def _metric_definitions(records) -> dict:
    return {m.name or m.glob_name: m for m in records_of(records, "metric")}


def test_sweep_jobs_have_their_group_short_names_tags_and_epoch_axis(study):
    sweep, _, _, _ = study
    for job, beta in (("0", "0"), ("1", "0.5")):
        records = finished_wandb_records(sweep / job)
        (run,) = records_of(records, "run")
        assert (run.run_group, run.display_name, run.job_type) == (GROUP, f"beta={beta}", "train")
        assert list(run.tags) == ["study"] and run.notes == "first look"

        defined = _metric_definitions(records)
        assert defined["*"].step_metric == "epoch" and defined["epoch"].options.defined
        assert defined["test/acc1"].summary.max and defined["test/acc1"].summary.last
        assert defined["val/loss"].summary.min
        assert defined["test/keep/*"].options.hidden and defined["train/keep/*"].options.hidden
        assert wandb_history(records, "epoch") == [1]

        summary = wandb_summary(records)
        assert set(summary["test/acc1"]) == {"max", "last"}
        final = json.loads((sweep / job / "summary.json").read_text())["final"]
        assert summary["test/acc1"]["last"] == pytest.approx(final["test/acc1"])
        assert {"best/test/acc1", "params", "dense_macs", "run_time_s"} <= set(summary)
        # The per-layer keep rates as one chart (a line per layer) and the heatmap, beside the hidden keys.
        assert summary["test/keep_rate_per_layer_table/_type"] == "table-file"
        assert summary["test/keep_rate_heatmap/_type"] == "image-file"
        assert (sweep / job / KEEP_RATES_PNG).is_file()


HYDRA_LINE = re.compile(r"\[[\d-]+ [\d:,]+\]\[HYDRA\]")  # the sweep's own: its launch list


def test_every_line_a_parallel_job_prints_names_the_job_wandbs_too(study):
    sweep, _, _, console = study
    out, err = console.stdout.splitlines(), console.stderr.splitlines()
    err = err[: next(i for i, line in enumerate(err) if line.startswith("sweep report: "))]  # then the sweep's own
    unlabelled = [line for line in out + err if line.strip() and not re.match(r"\[job [01]\]", line)]
    assert unlabelled and all(HYDRA_LINE.match(line) for line in unlabelled)
    for job in "01":
        wandb_lines = [line for line in err if line.startswith(f"[job {job}]wandb: ")]
        saved = f"[job {job}]wandb: Run data is saved locally in {sweep / job / 'wandb' / 'offline-run-'}"
        assert [line for line in wandb_lines if line.startswith(saved)]
        assert [line for line in wandb_lines if line.startswith(f"[job {job}]wandb: wandb sync {sweep / job}/wandb/")]
        assert [line for line in out if line.startswith(f"[job {job}][") and "- run      " in line]
        assert "[job" not in (sweep / job / "run.log").read_text()


def test_log_checkpoints_logs_best_pt_as_a_model_artifact_with_the_summary(study):
    sweep, baseline, _, _ = study
    records = finished_wandb_records(sweep / "0")
    (run,) = records_of(records, "run")
    (model,) = [a for a in records_of(records, "artifact") if a.type == "model"]
    assert model.name == f"model-{run.run_id}"
    assert [entry.path for entry in model.manifest.contents] == ["best.pt"]
    metadata = json.loads(model.metadata)
    final = json.loads((sweep / "0" / "summary.json").read_text())["final"]
    assert metadata["test/acc1"] == pytest.approx(final["test/acc1"]) and metadata["params"] > 0
    assert not [a for a in records_of(finished_wandb_records(baseline), "artifact") if a.type == "model"]


def test_a_single_run_joins_the_sweeps_group_and_ungated_runs_draw_no_keep_rates(study):
    sweep, baseline, _, _ = study
    (run,) = records_of(finished_wandb_records(baseline), "run")
    assert (run.run_group, run.display_name) == (GROUP, "baseline")
    assert not (baseline / KEEP_RATES_PNG).exists()
    (summary_run,) = records_of(finished_wandb_records(sweep), "run")
    assert (summary_run.run_group, summary_run.job_type) == (GROUP, "sweep-summary")
    assert (sweep / KEEP_PROFILES_PNG).is_file()
    assert wandb_summary(finished_wandb_records(sweep))["keep_profiles/_type"] == "image-file"


def test_an_evaluation_logs_its_results(study):
    _, baseline, evaluation, _ = study
    records = finished_wandb_records(evaluation)
    (run,) = records_of(records, "run")
    assert run.job_type == "eval"
    summary, result = wandb_summary(records), json.loads((evaluation / "eval.json").read_text())
    assert summary["test/acc1"] == pytest.approx(result["final"]["test/acc1"])
    assert summary["checkpoint"] == str(baseline / "checkpoints" / "best.pt") and summary["checkpoint_epoch"] == 1


def test_the_documented_sync_command_finds_a_run_and_a_whole_sweep(study):
    sweep, baseline, _, _ = study
    # As the README says it, from the project root: the sweep's summary run and every job's run.
    for paths, runs in ((f"{sweep}/{{,*/}}wandb", 3), (f"{baseline}/wandb", 1)):
        command = f"{sys.executable} -m wandb sync --dry-run {paths}"
        result = subprocess.run(["bash", "-c", command], cwd=REPO, capture_output=True, text=True, timeout=120)
        assert f"Would sync {runs} run(s)" in result.stdout + result.stderr, result.stderr


def _hydra_files(folder, multirun_task=None, sweeper_params=None):
    folder.mkdir(parents=True)
    if multirun_task is not None:
        (folder.parent / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {"overrides": {"task": multirun_task}}}))
    (folder / ".hydra").mkdir()
    (folder / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"sweeper": {"params": sweeper_params}}}))
    return folder


def test_a_job_is_named_by_its_swept_values(tmp_path):
    fixed = [*TINY, "trainer.max_epochs=1", "model=densenet40"]
    task = [*fixed, "regularizer.beta=0,0.5", "seed=range(0,3)"]
    job = _hydra_files(tmp_path / "sweep" / "4", multirun_task=task)
    assert job_name([*fixed, "regularizer.beta=0.5", "seed=1"], job) == "beta=0.5, seed=1"
    # A sweeper's own search space (Optuna's, hparams_search=pareto) names its trials.
    params = {"regularizer.beta": "interval(0.05, 2.0)", "regularizer.minimum": "range(20, 90, step=10)"}
    trial = _hydra_files(tmp_path / "optuna" / "0", sweeper_params=params)
    assert job_name([*fixed, "regularizer.beta=0.31", "regularizer.minimum=50"], trial) == "beta=0.31, min=50"
    # A single run: its overrides, keys shortened, without where and how it logs.
    single = _hydra_files(tmp_path / "run")
    name = job_name(["model=densenet40", "regularizer.beta=0.6", "logger.wandb.mode=offline"], single)
    assert name == "model=densenet40, beta=0.6"
    evaluation = ["mode=eval", "ckpt_path=/data/me/outputs/2026-12-02/10-00-00/checkpoints/best.pt"]
    assert job_name(evaluation, single) == "mode=eval, ckpt_path=…/10-00-00/checkpoints/best.pt"
