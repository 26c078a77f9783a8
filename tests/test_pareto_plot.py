"""pareto.png as a reader uses it: one point per configuration (seeds as mean ± std), one colour,
marker and legend entry per arm, the static front and each dynamic arm's front, labels only where
they fit; and the W&B sweep summary logging that same figure. Run folders are hand-made."""
import random
from contextlib import contextmanager
from types import SimpleNamespace

import pytest
from helpers import write_job
from matplotlib.transforms import Bbox

from acs.report import main
from acs.reporting import ReportError, wandb_sweep, write_report
from acs.reporting.jobs import collect_jobs
from acs.reporting.matched import arms, static_front
from acs.reporting.pareto import MARKER_SIZE, PlotPoint, arm_points, plot_pareto
from acs.reporting.results_table import read_results, replot

WARM = "init_from=outputs/backbone/checkpoints/best.pt"
STATIC = ["gate=none", "regularizer=none"]

ARMS = [
    "ungated, growth_rate=…",  # thinner networks: another design, whatever their growth rate
    "ungated, conv=group, groups=…",
    "ungated",
    "acs",
    "ddi, β=1",  # a knob the arm holds at one value is in its name
    "acs, warm-started from backbone, β=1",
]


@pytest.fixture
def study(tmp_path):
    """Four static arms' configurations and three dynamic arms; the gate at beta=1 over three seeds."""
    root = tmp_path / "study"
    jobs = [  # (overrides, gate, top-1 %, MACs per image)
        (STATIC + ["seed=0"], "none", 94.8, 66e6),
        (STATIC + ["seed=1"], "none", 95.2, 66e6),
        (STATIC + ["model.growth_rate=6"], "none", 90.0, 20e6),
        (STATIC + ["model.growth_rate=8"], "none", 92.0, 33e6),
        (STATIC + ["model.conv=group", "model.groups=4"], "none", 89.0, 25e6),  # below the thinner nets
        (STATIC + ["model.conv=group", "model.groups=2"], "none", 94.0, 70e6),  # below the ungated model
        (["regularizer.beta=1", "seed=0"], "acs", 90.0, 40e6),
        (["regularizer.beta=1", "seed=1"], "acs", 92.0, 44e6),
        (["regularizer.beta=1", "seed=2"], "acs", 94.0, 48e6),
        (["regularizer.beta=3"], "acs", 85.0, 30e6),
        (["regularizer.beta=0.5"], "acs", 91.0, 60e6),  # dearer and less accurate than beta=1
        (["gate=ddi", "regularizer.beta=1"], "ddi", 88.0, 40e6),
        (["regularizer.beta=1", WARM], "acs", 93.0, 42e6),
    ]
    for i, (overrides, gate, acc1, macs) in enumerate(jobs):
        write_job(root / str(i), overrides, acc1=acc1, macs=macs, gate=gate)
    return root


def by_arm(figure):
    return {bars.get_label(): bars for bars in figure.axes[0].containers}


def line_points(line):
    return list(zip(line.get_xdata(), line.get_ydata()))


def test_seeds_of_a_configuration_are_one_point_with_their_spread_as_error_bars(study):
    figure = write_report(study).figure
    points, _, (x_bars, y_bars) = by_arm(figure)["acs"].lines
    # One point per configuration; beta=1's three seeds: MACs 40, 44, 48 M (FLOPs 88 ± 8 M), top-1 92 ± 2.
    assert line_points(points) == [(60.0, 85.0), (88.0, 92.0), (120.0, 91.0)]
    assert x_bars.get_segments()[1].tolist() == [[80.0, 92.0], [96.0, 92.0]]
    assert y_bars.get_segments()[1].tolist() == [[88.0, 90.0], [88.0, 94.0]]
    assert x_bars.get_segments()[0].tolist() == [[60.0, 85.0], [60.0, 85.0]]  # one run: no spread
    # Labelled by what varies within the arm; the other arms' points by theirs, or not at all.
    labels = {t.get_text() for t in figure.axes[0].texts}
    assert {"β=3", "β=1", "β=0.5", "growth_rate=6", "groups=4"} <= labels
    assert not any("gate" in label or "seed" in label or "regularizer" in label for label in labels)


def test_each_arm_has_its_own_colour_marker_and_legend_entry(study):
    figure = write_report(study).figure
    legend = [t.get_text() for t in figure.legends[0].get_texts()]
    assert legend == ARMS + ["static front", "a dynamic arm's own front"]
    styles = [(bars.lines[0].get_color(), bars.lines[0].get_marker()) for bars in by_arm(figure).values()]
    assert list(by_arm(figure)) == ARMS
    assert len({colour for colour, _ in styles}) == len({marker for _, marker in styles}) == len(ARMS)


def test_the_static_front_is_the_static_envelope_flat_to_the_largest_static_compute(study):
    figure = write_report(study).figure
    (front,) = [line for line in figure.axes[0].lines if line.get_label() == "static front"]
    # Corners at 40, 66 and 132 MFLOPs; fixed 4 groups (50, 89) and 2 groups (140, 94) lie below it.
    assert line_points(front) == [(40.0, 90.0), (66.0, 92.0), (132.0, 95.0), (140.0, 95.0)]
    assert (front.get_color(), front.get_linestyle()) == ("black", "--")
    # The very corners the matched-compute table measures gains against (MACs there, FLOPs here).
    corners = static_front([arm for arm in arms(collect_jobs([study])) if arm.static])
    assert [(2 * macs / 1e6, top1) for macs, top1 in corners] == line_points(front)[:3]


def test_a_dynamic_arm_has_its_own_front_in_its_colour(study):
    figure = write_report(study).figure
    fronts = {line.get_gid(): line for line in figure.axes[0].lines if line.get_gid()}
    assert set(fronts) == {"front acs"}  # the other dynamic arms have one configuration each
    assert line_points(fronts["front acs"]) == [(60.0, 85.0), (88.0, 92.0)]  # beta=0.5 is dominated
    assert fronts["front acs"].get_color() == by_arm(figure)["acs"].lines[0].get_color()


def test_a_study_of_several_models_names_them_in_the_title_and_the_arms(study):
    write_job(study / "other", STATIC, acc1=96.0, macs=80e6, gate="none", model="g_resnext29_2x64d")
    figure = write_report(study).figure
    title = figure.get_suptitle()
    assert "mixes models (densenet40, g_resnext29_2x64d): compute is absolute, not the compute ratio" in title
    assert {"densenet40, ungated", "g_resnext29_2x64d, ungated", "densenet40, acs"} <= set(by_arm(figure))


def test_the_png_is_the_figure(study):
    report = write_report(study)
    from PIL import Image

    with Image.open(report.png_path) as image:
        assert image.format == "PNG"
        assert image.size == tuple(round(130 * inches) for inches in report.figure.get_size_inches())


# ------------------------------------------------------------------------------------------- labels


def label_boxes(figure):
    renderer = figure.canvas.get_renderer()
    return {t.get_text(): t.get_window_extent(renderer) for t in figure.axes[0].texts}


def marker_boxes(figure, points):
    ax = figure.axes[0]
    radius = MARKER_SIZE / 2 * figure.dpi / 72
    centres = ax.transData.transform([(p.x / 1e6, p.y) for p in points])
    return [Bbox.from_extents(x - radius, y - radius, x + radius, y + radius) for x, y in centres]


def test_labels_that_would_collide_are_dropped():
    # Six configurations at one spot: four places around it, so at most four labels.
    piled = [PlotPoint(50e6, 90.0, "acs", f"β={i}") for i in range(6)]
    figure = plot_pareto(piled + [PlotPoint(80e6, 95.0, "acs", "β=9")], "t")
    boxes = label_boxes(figure)
    assert "β=9" in boxes and 1 <= len(boxes) - 1 <= 4
    assert not any(a.overlaps(b) for a, b in _pairs(list(boxes.values())))


def test_kept_labels_cover_no_label_no_marker_and_stay_inside_the_axes():
    rng = random.Random(0)
    points = [PlotPoint(rng.uniform(40e6, 60e6), rng.uniform(85, 90), "acs", f"β={i}") for i in range(150)]
    points.append(PlotPoint(30e6, 95.0, "static", "growth_rate=6", static=True))
    points.append(PlotPoint(70e6, 96.0, "far", "a label too long for the right of the plot"))
    figure = plot_pareto(points, "t")
    boxes = label_boxes(figure)
    assert 0 < len(boxes) < len(points)  # a crowd: some labels fit, the rest are dropped
    assert "growth_rate=6" in boxes  # a front point, labelled first
    assert "a label too long for the right of the plot" in boxes  # written on the left, where it fits
    assert not any(a.overlaps(b) for a, b in _pairs(list(boxes.values())))
    markers = marker_boxes(figure, points)
    assert not any(box.overlaps(marker) for box in boxes.values() for marker in markers)
    frame = figure.axes[0].get_window_extent()
    assert all(frame.contains(b.x0, b.y0) and frame.contains(b.x1, b.y1) for b in boxes.values())


def _pairs(items):
    return [(a, b) for i, a in enumerate(items) for b in items[i + 1 :]]


# ---------------------------------------------------------------------------------- the W&B summary


def test_the_wandb_sweep_summary_logs_the_report_figure_not_a_one_colour_scatter(study, monkeypatch):
    report = write_report(study)
    logged = {}

    @contextmanager
    def fake_logger(name, options, run_dir, config, **kwargs):
        fake_wandb = SimpleNamespace(Table=lambda columns, data: ("table", columns, data), Image=lambda p: ("image", p))
        yield SimpleNamespace(log_rich=lambda build: logged.update(build(fake_wandb)))

    monkeypatch.setattr(wandb_sweep, "create_logger", fake_logger)
    wandb_sweep.log_sweep_summary(report.rows, report.png_path, study, {"mode": "offline"}, "g")
    assert logged["pareto"] == ("image", str(report.png_path))
    assert logged["jobs"] == ("table", report.columns, report.data)
    assert set(logged) == {"jobs", "pareto"}


def test_a_per_seed_warm_start_is_named_by_the_folder_of_its_backbones(tmp_path):
    # As a sweep writes `init_from=multirun/s/ungated/${seed}/checkpoints/best.pt` into its jobs' overrides.
    escaped = "init_from=multirun/s/ungated/$\\{seed\\}/checkpoints/best.pt"
    for seed in range(2):
        write_job(tmp_path / str(seed), [escaped, f"seed={seed}"], acc1=90.0 + seed, macs=40e6)
    write_job(tmp_path / "scratch", ["seed=0"], acc1=92.0, macs=40e6)
    points = arm_points(collect_jobs([tmp_path]))
    assert sorted(p.arm for p in points) == ["acs", "acs, warm-started from ungated"]


def test_an_ablations_points_are_labelled_by_what_each_changed(tmp_path):
    # An ablation sets a different knob in each configuration: a label names the values its
    # configuration set, not "=default" for every knob another one changed.
    settings = [["regularizer.minimum=30", "regularizer.beta=6"], ["optimizer.keep_bias_lr_scale=1"], []]
    for i, overrides in enumerate(settings):
        write_job(tmp_path / str(i), overrides, acc1=90.0 + i, macs=(40 + 10 * i) * 1e6)
    labels = sorted(p.label for p in arm_points(collect_jobs([tmp_path])))
    assert labels == ["defaults", "keep_bias_lr_scale=1", "min=30, β=6"]


# ------------------------------------------------------------------------ the figure drawn again from a table


def test_a_results_csv_gives_back_the_figure_of_its_run_folders(study, tmp_path):
    """A committed study keeps results.csv, not its runs: the figure drawn from the table is the one
    drawn from the folders, point for point, arm for arm."""
    report = write_report(study, x="macs")
    jobs = read_results(report.csv_path)
    assert [j.name for j in jobs] == [j.name for j in report.jobs]
    assert arm_points(jobs, x="macs") == arm_points(report.jobs, x="macs")
    out = replot(report.csv_path, out_dir=tmp_path, x="macs")
    assert out == tmp_path / "pareto.png" and out.read_bytes().startswith(b"\x89PNG")
    main(["--x", "macs", str(report.csv_path)])  # in place, beside the table
    assert report.png_path.stat().st_mtime_ns >= out.stat().st_mtime_ns


def test_a_file_that_is_not_a_results_table_is_one_error(tmp_path, capsys):
    other = tmp_path / "metrics.csv"
    other.write_text("epoch,loss\n1,0.5\n")
    with pytest.raises(ReportError, match="not a report's results.csv"):
        read_results(other)
    assert main([str(other)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: {other}: not a report's results.csv (no column job, model, gate, dataset, test_acc1_%, "
        "test_acc5_%, macs_per_image, flops_per_image, compute_%, params, run_time_s, epochs, status, "
        "on_front, baseline, error)"
    ]
    assert main([str(tmp_path / "missing.csv")]) == 2
    assert main([str(other), str(tmp_path)]) == 2  # a table and a folder: which report is meant?
    assert "not both" in capsys.readouterr().err
