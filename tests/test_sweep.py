"""A real miniature sweep through run.py: the end-of-sweep report and the W&B sweep summary run."""
import csv
import json

from acs.reporting import pareto_front
from conftest import TINY
from test_cli import run_py

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_sweep_writes_the_report_and_a_wandb_summary_run(tmp_path):
    result = run_py(
        "-m", *TINY, "trainer.max_epochs=1", "logger=wandb", "logger.wandb.mode=offline",
        "regularizer.beta=0,0.5,-1", f"hydra.sweep.dir={tmp_path}",
    )
    assert result.returncode == 0, result.stderr
    # The job with beta=-1 fails its value check; the sweep goes on and the report lists it.
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
