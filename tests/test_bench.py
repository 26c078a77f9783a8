"""python -m acs.bench and the operating points it benchmarks without training: the headline (the
gated executor against the ungated executor, then against PyTorch) comes first, the table and JSON
hold every variant with consistent ratios, at batch 1 and at a batch of samples with different
masks, calibration hits the asked keep fraction, a trained checkpoint is rebuilt from its saved
config, and bad input is one error line."""
import json

import pytest
import torch
from helpers import compose_config

import acs
from acs import provenance
from acs.bench import main
from acs.deploy.calibrate import calibrate_keep, set_groups
from acs.ops import DGConv2d
from acs.training.app import execute


@pytest.mark.parametrize("keep, gate", [(0.0, "acs"), (0.3, "acs"), (1.0, "acs"), (0.3, "ddi"), (0.3, "aig")])
def test_calibration_keeps_the_asked_fraction(keep, gate):
    model = acs.create_model("densenet40", gate={"name": gate, "width": 8})
    calibrate_keep(model, (3, 8, 8), keep, batch=16)
    assert not model.training
    # The calibration samples (seed 0, 16 of them): each channel kept by about `keep` of them.
    x = torch.randn(16, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        rate = torch.cat(model(x).masks, 1).mean().item()
    assert abs(rate - keep) < 0.08


def test_calibration_rejects_impossible_fractions():
    with pytest.raises(ValueError, match="keep"):
        calibrate_keep(acs.create_model("densenet40"), (3, 8, 8), 1.5)


def test_set_groups_gives_contiguous_groups():
    model = set_groups(acs.create_model("g_resnext29_2x64d"), 8)
    convs = [m for m in model.modules() if isinstance(m, DGConv2d)]
    assert convs and all(conv.groups == 8 for conv in convs)
    with pytest.raises(ValueError, match="power of two"):
        set_groups(model, 6)


def _rows(path):
    result = json.loads(path.read_text())
    return result, {row["variant"]: row for row in result["rows"]}


def _consistent(row):
    assert row["realisation"] == pytest.approx(row["macs_ratio"] / row["latency_ratio"])
    assert row["cpu_ratio"] > 0


def _check_headline(result, rows, printed):
    """The headline compares the dynamic executor with the ungated executor, then with PyTorch (the
    dense row), in timings of their own, and is printed before the table."""
    batch, executor = result["batch"], rows["dynamic executor"]
    for row in rows.values():  # MACs per sample, time per call of `batch` samples
        assert row["gmacs_per_s"] == pytest.approx(row["macs"] * batch / row["latency_ms"] / 1e6)
    headline = result["headline"]
    assert [c["baseline"] for c in headline] == ["executor of ungated", "dense (ungated)"]
    for c in headline:
        baseline = rows[c["baseline"]]
        assert c["variant"] == "dynamic executor"
        assert c["latency_ratio"] == pytest.approx(c["latency_ms"] / c["baseline_latency_ms"])
        assert c["cpu_ratio"] == pytest.approx(c["cpu_ms"] / c["baseline_cpu_ms"])
        assert c["macs_ratio"] == pytest.approx(executor["macs"] / baseline["macs"])
        assert c["gmacs_per_s"] == pytest.approx(executor["macs"] * batch / c["latency_ms"] / 1e6)
        assert c["baseline_gmacs_per_s"] == pytest.approx(baseline["macs"] * batch / c["baseline_latency_ms"] / 1e6)
        _consistent(c)
    # Both baselines run the ungated model: the same MACs.
    assert headline[0]["macs_ratio"] == headline[1]["macs_ratio"] == executor["macs_ratio"]
    assert headline[0]["latency_ms"] == headline[1]["latency_ms"]  # one timing of the executor
    lines = printed.splitlines()
    first = [i for i, line in enumerate(lines) if "vs executor of ungated" in line]
    second = [i for i, line in enumerate(lines) if "vs dense (ungated)" in line]
    table = [i for i, line in enumerate(lines) if line.startswith("variant")]
    assert len(first) == len(second) == len(table) == 1 and first[0] < second[0] < table[0]


@pytest.mark.parametrize("gate", ["acs", "fbs"])
def test_densenet_benchmark_table_and_json(tmp_path, capsys, gate):
    out = tmp_path / "bench.json"
    argv = ["--model", "densenet40", "--gate", gate, "--input", "3,8,8", "--gate-width", "8", "--keep", "0.5"]
    assert main(argv + ["--runs", "2", "--warmup", "1", "--threads", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    result, rows = _rows(out)
    assert list(rows) == [
        "dense (ungated)",
        "masked (training form)",
        "dynamic executor",
        "executor, tensor ops only",
        "executor of ungated",
    ]
    assert all(name in printed for name in rows) and f"written: {out}" in printed
    assert result["input"] == [3, 8, 8] and result["keep"] == 0.5 and result["threads"] == 1
    assert result["gate"] == gate and result["batch"] == 1 and result["distinct_masks"] == 1
    # The machine as a run's summary.json describes it (acs.provenance).
    assert result["provenance"]["device_name"] == provenance.cpu_model()
    assert result["provenance"]["versions"]["torch"] == provenance.package_version("torch")
    _check_headline(result, rows, printed)
    dense, masked, executor = rows["dense (ungated)"], rows["masked (training form)"], rows["dynamic executor"]
    assert dense["macs"] == acs.create_model("densenet40", gate="none").dense_macs((3, 8, 8))
    # The executor runs exactly the masked model's MACs: about half the layers' channels, plus the gates.
    assert executor["macs"] == masked["macs"] == rows["executor, tensor ops only"]["macs"]
    assert 0.3 < executor["macs_ratio"] < 0.8
    assert rows["executor of ungated"]["macs"] == dense["macs"]
    for row in rows.values():
        assert row["latency_ms"] > 0
        _consistent(row)


def test_a_batch_of_samples_with_different_masks(tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = ["--model", "densenet40", "--input", "3,8,8", "--gate-width", "8", "--keep", "0.5", "--batch", "16"]
    assert main(argv + ["--runs", "1", "--warmup", "0", "--threads", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    result, rows = _rows(out)
    assert result["batch"] == 16 and "batch 16" in printed
    # Per-sample work: the samples' masks differ, and the executor runs exactly the masked model's
    # MACs (per sample, averaged over the batch), the ungated executor the dense model's.
    assert 1 < result["distinct_masks"] <= 16
    assert rows["dynamic executor"]["macs"] == rows["masked (training form)"]["macs"]
    assert rows["executor of ungated"]["macs"] == rows["dense (ungated)"]["macs"]
    assert rows["dense (ungated)"]["macs"] == acs.create_model("densenet40", gate="none").dense_macs((3, 8, 8))
    _check_headline(result, rows, printed)
    for row in rows.values():
        _consistent(row)


def test_g_resnext_benchmark_compares_masked_and_materialized(tmp_path):
    out = tmp_path / "bench.json"
    argv = ["--model", "g_resnext29_2x64d", "--input", "3,8,8", "--groups", "8", "--runs", "1", "--warmup", "0"]
    assert main(argv + ["--out", str(out)]) == 0
    result, rows = _rows(out)
    assert list(rows) == ["block masked", "block materialized", "network masked", "network materialized"]
    assert result["headline"] == [] and result["batch"] == 1  # no gates: nothing skipped per sample
    # Materialized and masked forms count the same MACs: the grouped conv is what the mask computes.
    assert rows["block masked"]["macs"] == rows["block materialized"]["macs"]
    assert rows["network masked"]["macs"] == rows["network materialized"]["macs"]
    for row in rows.values():
        _consistent(row)


def test_a_trained_checkpoint_is_rebuilt_from_its_config(tmp_path, tiny_overrides):
    run_dir = tmp_path / "run"
    overrides = tiny_overrides + ["trainer.max_epochs=1", "dataset.options.num_classes=5"]
    execute(compose_config(*overrides), str(run_dir), overrides)
    out = tmp_path / "bench.json"
    checkpoint = run_dir / "checkpoints" / "last.pt"
    assert main(["--checkpoint", str(checkpoint), "--runs", "1", "--warmup", "0", "--out", str(out)]) == 0
    result, rows = _rows(out)
    assert result["input"] == [3, 8, 8] and result["keep"] is None  # the data set's size, its own gates
    summary = json.loads((run_dir / "summary.json").read_text())
    assert rows["dense (ungated)"]["macs"] == summary["dense_macs"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--checkpoint", "missing.pt"], "missing.pt"),
        (["--input", "3,32"], "--input must be C,H,W"),
        (["--model", "densenet4"], "unknown model"),
        (["--keep", "2"], "keep must lie in"),
        (["--batch", "0"], "--batch must be a positive integer"),
    ],
)
def test_bad_input_is_one_error_line(tmp_path, capsys, argv, message):
    out = tmp_path / "bench.json"
    assert main(argv + ["--runs", "1", "--warmup", "0", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]
    assert not out.exists()
