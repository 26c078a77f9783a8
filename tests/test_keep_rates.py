"""Keep rates you can see: a gated run's keep_rates.png (layers × epochs) and the report's
keep_profiles.png (each job's final per-layer profile). Real training runs that write keep_rates.png
are in test_wandb.py."""
import json
import math

from helpers import write_job

from acs.reporting import write_keep_rates, write_report
from acs.reporting.keep_rates import KEEP_PROFILES_PNG, KEEP_RATES_PNG, MOST_LINES, plot_keep_rates

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _epoch(epoch: int, layers: int) -> dict:
    rates = {f"test/keep/L{i:02d}": 1 - 0.1 * epoch * (i + 1) / layers for i in range(layers)}
    return {"epoch": epoch, "test/acc1": 50.0, "train/keep/L00": 0.5, **rates}


def test_a_gated_run_gets_a_layers_by_epochs_heatmap(tmp_path):
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(_epoch(e, 3)) + "\n" for e in (1, 2, 3, 4)))
    assert write_keep_rates(tmp_path, "beta=0.3") == tmp_path / KEEP_RATES_PNG
    assert (tmp_path / KEEP_RATES_PNG).read_bytes()[:8] == PNG_SIGNATURE
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically: no temporary file left

    fig = plot_keep_rates([_epoch(e, 3) for e in (1, 2, 3, 4)], "run")
    ax = fig.axes[0]
    cells = ax.images[0].get_array()
    assert cells.shape == (3, 4)  # one row per gated layer, one column per epoch, the test split's
    assert math.isclose(cells[2, 3], 1 - 0.1 * 4 * 3 / 3)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["L00", "L01", "L02"]
    assert ax.get_xlabel() == "epoch" and ax.images[0].get_clim() == (0.0, 1.0)
    assert fig.axes[1].get_ylabel().startswith("keep rate")  # the colour bar says what the colours are


def test_an_ungated_run_gets_no_heatmap(tmp_path):
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "test/acc1": 50.0, "test/keep_rate": 1.0}) + "\n")
    assert write_keep_rates(tmp_path) is None
    assert not (tmp_path / KEEP_RATES_PNG).exists()


def _final(acc1: float, rates) -> dict:
    macs = 5e7
    final = {"test/acc1": acc1, "test/acc5": 99.0, "test/macs": macs, "test/flops": 2 * macs, "test/compute_ratio": 0.5}
    return {**final, **{f"test/keep/L{i:02d}": r for i, r in enumerate(rates)}}


def test_the_report_draws_one_line_per_gated_job(tmp_path):
    for job, beta in enumerate((0.1, 0.3)):
        write_job(tmp_path / str(job), [f"regularizer.beta={beta}"], final=_final(90.0, [0.9, 0.5 + beta, 0.2]))
    write_job(tmp_path / "2", ["gate=none"], acc1=93.0, macs=1e8, gate="none")  # ungated: no profile
    report = write_report(tmp_path)
    assert report.keep_png == tmp_path / KEEP_PROFILES_PNG and report.keep_png in report.paths
    assert report.keep_png.read_bytes()[:8] == PNG_SIGNATURE
    assert f"]({KEEP_PROFILES_PNG})" in report.md_path.read_text()

    from acs.reporting.keep_rates import keep_profiles, plot_keep_profiles

    profiles = keep_profiles(report.jobs)
    assert [label for label, _ in profiles] == ["0: beta=0.1", "1: beta=0.3"]
    ax = plot_keep_profiles(profiles).axes[0]
    assert [line.get_label() for line in ax.lines] == ["0: beta=0.1", "1: beta=0.3"]
    assert list(ax.lines[1].get_ydata()) == [0.9, 0.8, 0.2]


def test_many_jobs_make_one_heatmap_row_each_and_ungated_sweeps_no_figure(tmp_path):
    from acs.reporting.keep_rates import plot_keep_profiles

    jobs = MOST_LINES + 1
    fig = plot_keep_profiles([(f"{j}: seed={j}", {"L00": 0.5, "L01": j / jobs}) for j in range(jobs)])
    assert fig.axes[0].images[0].get_array().shape == (jobs, 2) and not fig.axes[0].lines
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()][-1] == f"{jobs - 1}: seed={jobs - 1}"

    write_job(tmp_path / "0", ["gate=none"], acc1=93.0, macs=1e8, gate="none")
    report = write_report(tmp_path)
    assert report.keep_png is None and not (tmp_path / KEEP_PROFILES_PNG).exists()
    assert KEEP_PROFILES_PNG not in report.md_path.read_text()
