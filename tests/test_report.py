"""Sweep report (`python -m acs.report`): collecting jobs, the Pareto front, results.csv/.md, pareto.png.

Job folders are written by the tests (summary.json, .hydra/overrides.yaml, multirun.yaml) as the
runner writes them; no training happens here.
"""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import DENSE, write_job

from acs.reporting.pareto import PlotPoint, plot_pareto, short_label
from acs.reporting.sweep_report import (
    ReportError,
    collect_jobs,
    pareto_front,
    reproduce_command,
    write_report,
)

REPO = Path(__file__).resolve().parents[1]
SHARED = ["dataset=cifar10", "trainer.max_epochs=300"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# job: (gate, beta, minimum, top-1 %, MACs per image). Job 10 checks the natural order (2 < 10).
SWEEP = {
    "0": ("acs", "0.1", "30", 90.0, 40e6),  # front
    "1": ("acs", "0.1", "50", 92.0, 55e6),  # front
    "2": ("acs", "0.3", "30", 89.0, 45e6),  # dominated by 0 (dearer, less accurate)
    "3": ("acs", "0.3", "50", 93.0, 60e6),  # front
    "4": ("none", "0", "100", 94.0, 100e6),  # ungated baseline, front (most accurate)
    "10": ("acs", "0.6", "70", 93.0, 70e6),  # dominated by 3 (same accuracy, dearer)
}
FRONT = {"0", "1", "3", "4"}


def write_sweep(root: Path, jobs=SWEEP) -> Path:
    root.mkdir(parents=True)
    task = SHARED + ["gate=acs,none", "regularizer.beta=0.1,0.3,0.6", "regularizer.minimum=30,50,70"]
    hydra = {
        "overrides": {"hydra": ["hydra.mode=MULTIRUN", f"hydra.sweep.dir={root}"], "task": task},
        "job": {"name": "run"},
        "sweep": {"dir": str(root), "subdir": "${hydra.job.num}"},
    }
    (root / "multirun.yaml").write_text(yaml.safe_dump({"hydra": hydra, "seed": 0}))
    for job, (gate, beta, minimum, acc1, macs) in jobs.items():
        overrides = SHARED + [f"gate={gate}", f"regularizer.beta={beta}", f"regularizer.minimum={minimum}"]
        write_job(root / job, overrides, acc1=acc1, macs=macs, gate=gate)
    return root


@pytest.fixture
def sweep(tmp_path):
    return write_sweep(tmp_path / "multirun" / "2026-01-02" / "03-04-05")


def read_csv(path: Path):
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


# ------------------------------------------------------------------------------------------ the front


def test_front_excludes_dominated_points():
    points = [(40, 90), (55, 92), (45, 89), (60, 93), (100, 94), (70, 93)]
    assert pareto_front(points) == [True, True, False, True, True, False]


def test_front_keeps_exact_duplicates_and_single_points():
    assert pareto_front([(10, 80), (10, 80), (20, 70)]) == [True, True, False]
    assert pareto_front([(5, 50)]) == [True]
    assert pareto_front([]) == []


def test_front_ties_in_flops_or_accuracy():
    # same cost: only the most accurate survives; same accuracy: only the cheapest survives.
    assert pareto_front([(10, 80), (10, 85), (20, 90)]) == [False, True, True]
    assert pareto_front([(10, 80), (20, 80), (30, 90)]) == [True, False, True]


def test_front_ignores_non_finite_points():
    assert pareto_front([(float("nan"), 99.0), (10, 80), (20, float("inf"))]) == [False, True, False]


def test_plot_axes_name_the_unit_and_metric_and_an_empty_plot_says_so():
    ax = plot_pareto([PlotPoint(1e6, 40.0, "acs")], "t", x="flops", metric="val/acc5").axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == (
        "FLOPs per image (millions; FLOPs = 2·MACs)",
        "val top-5 accuracy (%)",
    )
    empty = plot_pareto([], "t").axes[0]
    assert [t.get_text() for t in empty.texts] == ["no completed job to plot"]


# ----------------------------------------------------------------------------------------- collecting


def test_collect_jobs_natural_order_and_swept_values(sweep):
    jobs = collect_jobs([sweep])
    assert [j.name for j in jobs] == ["0", "1", "2", "3", "4", "10"]
    assert jobs[0].swept == {"gate": "acs", "regularizer.beta": "0.1", "regularizer.minimum": "30"}
    assert jobs[0].overrides["dataset"] == "cifar10" and jobs[0].status == "completed"
    assert [j.baseline for j in jobs] == [False, False, False, False, True, False]
    assert short_label(jobs[1].swept) == "gate=acs, beta=0.1, min=50"
    assert short_label({"optimizer.lr": "0.1", "gate.lr": "1"}) == "optimizer.lr=0.1, gate.lr=1"
    per_seed = "multirun/s/ungated/$\\{seed\\}/checkpoints/best.pt"  # as a sweep's job overrides hold it
    assert short_label({"init_from": per_seed, "regularizer.minimum": "30"}) == "warm-started from ungated, min=30"


def test_collect_jobs_from_a_parent_of_sweeps_skips_wandb(tmp_path):
    write_sweep(tmp_path / "a", {"0": SWEEP["0"], "1": SWEEP["1"]})
    write_sweep(tmp_path / "b", {"0": SWEEP["3"]})
    write_job(tmp_path / "wandb" / "offline-run", SHARED, acc1=50.0, macs=1e6)  # W&B files, not a job
    assert [j.name for j in collect_jobs([tmp_path])] == ["a/0", "a/1", "b/0"]
    assert [j.name for j in collect_jobs([tmp_path / "a", tmp_path / "b"])] == ["a/0", "a/1", "b/0"]


def test_single_run_folder_has_no_swept_columns(tmp_path):
    run = tmp_path / "outputs" / "2026-01-02" / "10-11-12"
    write_job(run, SHARED, acc1=91.0, macs=50e6)
    report = write_report(run)
    assert report.rows[0]["job"] == "10-11-12" and report.rows[0]["on_front"] is True
    assert report.columns[:4] == ["job", "model", "gate", "dataset"]
    assert (run / "results.csv").is_file() and (run / "pareto.png").is_file()


def test_spellings_of_one_value_are_not_a_swept_column(tmp_path):
    # A sweep's overrides.yaml holds what Hydra parsed (`False`), a single run's what was typed (`false`).
    write_job(tmp_path / "a", SHARED + ["trainer.progress=False", "regularizer.beta=1"], acc1=90.0, macs=50e6)
    write_job(tmp_path / "b", SHARED + ["trainer.progress=false", "regularizer.beta=1.0"], acc1=91.0, macs=60e6)
    write_job(tmp_path / "c", SHARED + ["trainer.progress=false", "regularizer.beta=0.5"], acc1=92.0, macs=70e6)
    jobs = collect_jobs([tmp_path])
    assert [j.swept for j in jobs] == [{"regularizer.beta": v} for v in ("1", "1.0", "0.5")]
    # A key one job sets to null and another leaves unset is swept (and reporting them does not fail).
    write_job(tmp_path / "d", SHARED + ["trainer.progress=false", "regularizer.beta=0.5", "gate.width=null"],
              acc1=93.0, macs=70e6)
    report = write_report(tmp_path)
    widths = [row["gate.width"] for row in report.rows]
    assert "gate.width" in report.columns and widths == [None, None, None, "null"]


def test_reproduce_command(sweep):
    assert reproduce_command(sweep) == (
        "python run.py -m dataset=cifar10 trainer.max_epochs=300 gate=acs,none "
        "regularizer.beta=0.1,0.3,0.6 regularizer.minimum=30,50,70"
    )


# ------------------------------------------------------------------------------------------ the report


def test_report_csv_columns_and_values(sweep):
    report = write_report([sweep])
    assert report.paths == [sweep / "results.csv", sweep / "results.md", sweep / "pareto.png"]
    rows = read_csv(sweep / "results.csv")
    assert list(rows[0]) == [
        "job",
        "regularizer.beta",
        "regularizer.minimum",
        "model",
        "gate",
        "dataset",
        "test_acc1_%",
        "test_acc5_%",
        "macs_per_image",
        "flops_per_image",
        "compute_%",
        "params",
        "run_time_s",
        "epochs",
        "status",
        "on_front",
        "baseline",
        "error",
    ]
    by_job = {r["job"]: r for r in rows}
    assert list(by_job) == ["0", "1", "2", "3", "4", "10"]
    assert {j for j, r in by_job.items() if r["on_front"] == "true"} == FRONT
    assert {j for j, r in by_job.items() if r["baseline"] == "true"} == {"4"}
    for job, (gate, beta, minimum, acc1, macs) in SWEEP.items():
        row = by_job[job]
        assert (row["regularizer.beta"], row["regularizer.minimum"], row["gate"]) == (beta, minimum, gate)
        assert float(row["test_acc1_%"]) == acc1 and float(row["test_acc5_%"]) == 99.5
        assert float(row["macs_per_image"]) == macs and float(row["flops_per_image"]) == 2 * macs
        assert float(row["compute_%"]) == pytest.approx(100 * macs / DENSE)
        assert row["params"] == "1019722" and row["status"] == "completed" and row["model"] == "densenet40"
    # The rows handed to the W&B callback: typed values, keyed and ordered by the columns.
    assert list(report.rows[0]) == report.columns and report.rows[4]["baseline"] is True
    assert report.data[0][report.columns.index("flops_per_image")] == 80e6


def test_report_markdown(sweep):
    write_report(sweep)
    md = (sweep / "results.md").read_text()
    assert "`dataset=cifar10`" in md and "`trainer.max_epochs=300`" in md  # shared overrides in the header
    assert "6: 6 completed, 0 failed, 0 unfinished" in md
    assert "python run.py -m dataset=cifar10 trainer.max_epochs=300 gate=acs,none" in md
    assert "FLOPs = 2·MACs per image" in md
    table = [line for line in md.split("\n## ")[0].splitlines() if line.startswith("|")]  # the jobs' table
    assert len(table) == 2 + len(SWEEP)
    assert "| top-1 (%) |" in table[0] and "MFLOPs/image" in table[0] and "regularizer.beta" in table[0]
    row3 = [cell.strip() for cell in table[2 + 3].strip("|").split("|")]
    assert row3[:3] == ["3", "0.3", "50"]
    assert "93.00" in row3 and "120.00" in row3 and "60.0" in row3 and "1,019,722" in row3 and "yes" in row3


def test_pareto_png_and_baseline_legend(sweep):
    report = write_report(sweep)
    data = (sweep / "pareto.png").read_bytes()
    assert data[:8] == PNG_SIGNATURE
    from PIL import Image

    with Image.open(sweep / "pareto.png") as image:
        image.load()
        assert image.width >= 600 and image.height >= 400
    ax = report.figure.axes[0]
    # Two arms: the ungated baseline (its one setting in its name) and the gate, whose points are
    # labelled by the knobs that vary within it, never by the whole override string.
    legend = [t.get_text() for t in report.figure.legends[0].get_texts()]
    assert legend == ["ungated, β=0, min=100", "acs", "a dynamic arm's own front"]
    assert ax.get_xlabel() == "FLOPs per image (millions; FLOPs = 2·MACs)"
    title = report.figure.get_suptitle()
    assert "03-04-05" in title and "densenet40 on cifar10" in title
    labels = {t.get_text() for t in ax.texts}
    # Five points well apart: every label fits.
    assert labels == {"β=0.1, min=30", "β=0.1, min=50", "β=0.3, min=30", "β=0.3, min=50", "β=0.6, min=70"}


def test_x_macs_and_out_dir(sweep, tmp_path):
    report = write_report([sweep], out_dir=tmp_path / "elsewhere", x="macs")
    assert all(p.parent == tmp_path / "elsewhere" and p.is_file() for p in report.paths)
    assert not (sweep / "results.csv").exists()
    assert report.figure.axes[0].get_xlabel().startswith("MACs per image (millions")
    assert {r["job"] for r in report.rows if r["on_front"]} == FRONT


def test_failed_running_and_missing_jobs_are_listed_not_plotted(tmp_path):
    root = tmp_path / "sweep"
    write_job(root / "0", ["regularizer.beta=0.1"], acc1=90.0, macs=40e6)
    write_job(
        root / "1",
        ["regularizer.beta=0.3"],
        status="failed",
        error="TrainingDiverged: loss is nan",
        final={"epoch": 3, "train/loss": float("nan")},
    )
    write_job(root / "2", ["regularizer.beta=0.6"], status="running")
    write_job(root / "3", ["regularizer.beta=0.9"], summary=False)
    (root / "4" / ".hydra").mkdir(parents=True)  # failed before training: the short summary app.py writes
    (root / "4" / "summary.json").write_text(
        json.dumps(
            {
                "status": "failed",
                "mode": "train",
                "overrides": ["regularizer.beta=-1"],
                "error": "regularizer.beta must be >= 0, got -1.0",
            }
        )
    )
    (root / "5").mkdir()
    (root / "5" / "summary.json").write_text('{"status": "compl')  # damaged
    report = write_report(root)
    rows = read_csv(root / "results.csv")
    assert [r["status"] for r in rows] == ["completed", "failed", "running", "missing", "failed", "failed"]
    assert [r["regularizer.beta"] for r in rows] == ["0.1", "0.3", "0.6", "0.9", "-1", ""]
    assert [r["on_front"] for r in rows] == ["true"] + ["false"] * 5
    assert all(r["test_acc1_%"] == "" and r["flops_per_image"] == "" for r in rows[1:])
    assert rows[3]["model"] == "densenet40" and rows[3]["gate"] == "acs"  # from .hydra/config.yaml
    assert rows[4]["error"] == "regularizer.beta must be >= 0, got -1.0"
    assert rows[5]["error"].startswith("summary.json unreadable")
    assert report.counts == {"total": 6, "completed": 1, "failed": 3, "running": 1, "missing": 1, "unfinished": 2}
    md = (root / "results.md").read_text()
    assert "6: 1 completed, 3 failed, 2 unfinished" in md and "TrainingDiverged: loss is nan" in md
    (plotted,) = report.figure.axes[0].containers  # the one completed job, and nothing of the others
    assert list(plotted.lines[0].get_xdata()) == [80.0] and list(plotted.lines[0].get_ydata()) == [90.0]
    assert (root / "pareto.png").read_bytes()[:8] == PNG_SIGNATURE


def test_errors(tmp_path, sweep):
    with pytest.raises(ReportError, match="no such folder"):
        write_report(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReportError, match="no jobs"):
        write_report(tmp_path / "empty")
    with pytest.raises(ReportError, match="test/acc1"):  # a typo in --metric, not an empty plot
        write_report(sweep, metric="test/top1")


# ------------------------------------------------------------------------------------------------- CLI


def run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "acs.report", *map(str, args)], cwd=REPO, capture_output=True, text=True, timeout=120
    )


def test_cli_writes_the_report(sweep):
    done = run_cli(sweep)
    assert done.returncode == 0, done.stderr
    assert "6 jobs: 6 completed, 0 failed, 0 unfinished; 4 on the Pareto front" in done.stdout
    assert all((sweep / name).is_file() for name in ("results.csv", "results.md", "pareto.png"))


def test_cli_missing_folder_is_one_error_line(tmp_path):
    done = run_cli(tmp_path / "nope")
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [f"error: {tmp_path / 'nope'}: no such folder"]


def test_jobs_differing_only_in_seed_are_summarised_together(tmp_path):
    # Two configurations, three seeds each; one run per configuration left the seed at its default.
    runs = {
        ("0.1", None): (90.0, 40e6), ("0.1", "1"): (92.0, 44e6), ("0.1", "2"): (94.0, 48e6),
        ("0.3", None): (80.0, 30e6), ("0.3", "1"): (80.0, 30e6), ("0.3", "2"): (86.0, 36e6),
    }
    for i, ((beta, seed), (acc1, macs)) in enumerate(runs.items()):
        overrides = SHARED + [f"regularizer.beta={beta}"] + ([f"seed={seed}"] if seed else [])
        write_job(tmp_path / str(i), overrides, acc1=acc1, macs=macs)
    write_job(tmp_path / "failed", SHARED + ["regularizer.beta=0.1", "seed=3"], status="failed")
    report = write_report(tmp_path)
    by_config = {row["configuration"]: row for row in report.seed_rows}
    assert set(by_config) == {"beta=0.1", "beta=0.3"}
    low = by_config["beta=0.1"]
    assert low["runs"] == 3 and low["seeds"] == "default, 1, 2"  # the failed run is not a result
    assert low["test/acc1"] == {"mean": 92.0, "std": 2.0, "min": 90.0, "max": 94.0}
    assert low["compute_%"]["mean"] == pytest.approx(44.0) and low["compute_%"]["std"] == pytest.approx(4.0)
    high = by_config["beta=0.3"]
    assert high["test/acc1"]["mean"] == pytest.approx(82.0) and high["test/acc1"]["std"] == pytest.approx(12**0.5)
    text = report.md_path.read_text()
    assert "## Over seeds" in text
    assert "| beta=0.1 | 3 | default, 1, 2 | 92.00 ± 2.00 | 90.00–94.00 | 44.0 ± 4.0 | 40.0–48.0 |" in text


def test_no_seed_section_when_seeds_do_not_vary(sweep):
    report = write_report(sweep)
    assert report.seed_rows == [] and "Over seeds" not in report.md_path.read_text()
