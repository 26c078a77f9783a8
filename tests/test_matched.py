"""The report's "At matched compute" section, on hand-made run folders: dynamic configurations
against the static front at their MACs per image."""
import pytest
from helpers import write_job

from acs.reporting import write_report
from acs.reporting.jobs import collect_jobs
from acs.reporting.matched import front_at, matched_compute


@pytest.fixture
def study(tmp_path):
    """Two static arms (the ungated model over two seeds, a thinner one) and two dynamic ones."""
    root = tmp_path / "study"
    write_job(root / "0", ["gate=none", "regularizer=none", "seed=0"], acc1=99.0, macs=100e6, gate="none")
    write_job(root / "1", ["gate=none", "regularizer=none", "seed=1"], acc1=98.0, macs=100e6, gate="none")
    write_job(root / "2", ["gate=none", "model.growth_rate=6", "seed=0"], acc1=95.0, macs=30e6, gate="none")
    write_job(root / "3", ["gate=acs", "regularizer.beta=1", "seed=0"], acc1=97.0, macs=50e6)
    write_job(root / "4", ["gate=acs", "regularizer.beta=1", "seed=1"], acc1=96.0, macs=54e6)
    write_job(root / "5", ["gate=acs", "regularizer.beta=3", "seed=0"], acc1=90.0, macs=20e6)
    return root


def test_gain_is_the_distance_to_the_interpolated_static_front(study):
    arms = {arm.label: arm for arm in matched_compute(collect_jobs([study]))}
    ungated, thin = arms["gate=none, regularizer=none"], arms["gate=none, growth_rate=6"]
    assert ungated.static and thin.static and (ungated.runs, ungated.top1["mean"]) == (2, 98.5)
    warm = arms["gate=acs, beta=1"]
    assert not warm.static and warm.runs == 2 and warm.macs == 52e6 and warm.top1["mean"] == 96.5
    assert warm.top1["std"] == pytest.approx(0.7071, abs=1e-4)
    # The front between (30 M, 95.0) and (100 M, 98.5), at 52 M.
    assert warm.front == pytest.approx(95.0 + 3.5 * 22 / 70) and warm.gain == pytest.approx(96.5 - warm.front)
    cheap = arms["gate=acs, beta=3"]
    assert cheap.front is None and cheap.gain is None  # 20 M lies below every static arm: no extrapolation


def test_results_md_gets_the_section_in_absolute_compute(study):
    write_report(study)
    md = (study / "results.md").read_text()
    section = md.split("## At matched compute")[1].split("\n## ")[0]
    rows = [line for line in section.splitlines() if line.startswith("| gate=")]
    assert rows == [
        "| gate=none, growth_rate=6 | static | 1 | 30.00 | 95.00 |  |  |",
        "| gate=none, regularizer=none | static | 2 | 100.00 | 98.50 ± 0.71 |  |  |",
        "| gate=acs, beta=3 | dynamic | 1 | 20.00 | 90.00 | outside the front |  |",
        "| gate=acs, beta=1 | dynamic | 2 | 52.00 | 96.50 ± 0.71 | 96.10 | +0.40 |",
    ]
    assert "mixes models" not in section


def test_a_study_of_several_models_says_so(study):
    write_job(study / "6", ["gate=none", "model=g_resnext29_2x64d"], acc1=97.0, macs=80e6, gate="none",
              model="g_resnext29_2x64d")  # fmt: skip
    write_report(study)
    md = (study / "results.md").read_text()
    assert "This comparison mixes models (densenet40, g_resnext29_2x64d): compute is absolute MACs" in md


@pytest.mark.parametrize("gates", [("none",), ("acs",)])
def test_no_section_without_both_static_and_dynamic_arms(tmp_path, gates):
    for i, gate in enumerate(gates * 2):
        write_job(tmp_path / str(i), [f"gate={gate}", f"seed={i}"], acc1=90.0 + i, macs=50e6, gate=gate)
    assert matched_compute(collect_jobs([tmp_path])) == []
    write_report(tmp_path)
    assert "At matched compute" not in (tmp_path / "results.md").read_text()


def test_front_is_linear_between_corners_and_flat_up_to_the_largest_static_compute():
    corners = [(10.0, 80.0), (30.0, 90.0)]
    assert front_at(corners, 20.0, largest=50.0) == 85.0
    assert front_at(corners, 10.0, largest=50.0) == 80.0
    assert front_at(corners, 45.0, largest=50.0) == 90.0  # a dominated static arm at 50 extends the range
    assert front_at(corners, 9.0, largest=50.0) is None and front_at(corners, 51.0, largest=50.0) is None
