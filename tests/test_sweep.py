"""A real miniature sweep through run.py: the end-of-sweep report and the W&B sweep summary run."""
import csv
import json

import yaml
from helpers import TINY, run_py

from acs.reporting import pareto_front

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_sweep_writes_the_report_and_a_wandb_summary_run(tmp_path):
    result = run_py(
        "-m", *TINY, "trainer.max_epochs=1", "logger=wandb", "logger.wandb.mode=offline",
        "regularizer.beta=0,0.5,-1", f"hydra.sweep.dir={tmp_path}",
    )
    # The job with beta=-1 fails its value check; the sweep goes on, the report lists it, and the
    # sweep's exit code says that a job failed.
    assert result.returncode == 1, result.stderr
    assert "error: 1 job(s) of the sweep did not complete: 2" in result.stderr
    statuses = [json.loads((tmp_path / job / "summary.json").read_text())["status"] for job in "012"]
    assert statuses == ["completed", "completed", "failed"]

    rows = list(csv.DictReader((tmp_path / "results.csv").open()))
    assert [row["regularizer.beta"] for row in rows] == ["0", "0.5", "-1"]
    assert [row["status"] for row in rows] == ["completed", "completed", "failed"]
    done = [row for row in rows if row["status"] == "completed"]
    points = [(float(row["flops_per_image"]), float(row["test_acc1_%"])) for row in done]
    assert [row["on_front"] == "true" for row in done] == pareto_front(points)
    assert rows[2]["on_front"] == "false"
    for row in done:
        assert float(row["flops_per_image"]) == 2 * float(row["macs_per_image"])

    markdown = (tmp_path / "results.md").read_text()
    assert "regularizer.beta" in markdown and "failed" in markdown and "FLOPs = 2·MACs" in markdown
    assert (tmp_path / "pareto.png").read_bytes()[:8] == PNG_SIGNATURE

    summary_runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(summary_runs) == 1 and list(summary_runs[0].glob("*.wandb"))
    job_runs = list((tmp_path / "0" / "wandb").glob("offline-run-*"))
    assert len(job_runs) == 1


def test_parallel_launcher_runs_jobs_side_by_side(tmp_path):
    result = run_py(
        "-m", *TINY, "trainer.max_epochs=1", "hydra/launcher=parallel", "seed=0,1", f"hydra.sweep.dir={tmp_path}"
    )
    assert result.returncode == 0, result.stderr
    assert [json.loads((tmp_path / j / "summary.json").read_text())["status"] for j in "01"] == ["completed"] * 2
    assert (tmp_path / "results.csv").is_file()


def test_pareto_search_returns_accuracy_and_flops(tmp_path):
    result = run_py(
        "-m", *TINY, "trainer.max_epochs=1", "hparams_search=pareto", "hydra.sweeper.n_trials=2",
        "hydra.sweeper.sampler.seed=0", f"hydra.sweep.dir={tmp_path}",
    )
    assert result.returncode == 0, result.stderr
    # Optuna's Pareto-optimal trials, each with both objectives: (top-1 %, FLOPs per image).
    optimization = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())
    summaries = [json.loads(p.read_text()) for p in tmp_path.glob("*/summary.json")]
    assert len(summaries) == 2
    measured = {(s["final"]["test/acc1"], s["final"]["test/flops"]) for s in summaries}
    assert optimization["solutions"] and all(tuple(sol["values"]) in measured for sol in optimization["solutions"])
