"""Throughput benchmarks (benchmarks/throughput.py and mode=benchmark): gated and ungated models
through the same training step and inference, and their ratios."""
import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "throughput.py"


def load_script():
    spec = importlib.util.spec_from_file_location("throughput", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_prints_and_writes_both_variants_and_their_ratio(tmp_path, capsys):
    out = tmp_path / "throughput.json"
    argv = ["--device", "cpu", "--batch", "4", "--input", "3,8,8", "--warmup", "0", "--steps", "1"]
    assert load_script().main(argv + ["--out", str(out)]) == 0
    result = json.loads(out.read_text())
    ungated, gated = result["results"]["ungated"], result["results"]["gated"]
    for key in ("train_images_per_s", "eval_images_per_s"):
        assert ungated[key] > 0 and gated[key] > 0
        assert result["gated_over_ungated"][key] == pytest.approx(gated[key] / ungated[key])
    assert gated["macs"] != ungated["macs"]  # the gated model really runs its gates
    printed = capsys.readouterr().out
    assert "ungated" in printed and "gated" in printed and "ratio" in printed


def test_benchmark_mode_compares_the_configured_model_with_its_ungated_twin(tmp_path, tiny_overrides):
    from helpers import compose_config

    from acs.training.app import execute

    overrides = tiny_overrides + ["mode=benchmark", "benchmark.steps=2", "benchmark.warmup=0", "dataset.batch_size=4"]
    execute(compose_config(*overrides), str(tmp_path), overrides)
    result = json.loads((tmp_path / "benchmark.json").read_text())
    configured, ungated = result["results"]["configured"], result["results"]["ungated"]
    assert result["batch_size"] == 4 and result["input_size"] == [3, 8, 8]
    assert ungated["compute_ratio"] == 1.0 and configured["compute_ratio"] != 1.0
    for key in ("train_images_per_s", "eval_images_per_s", "latency_ms_batch1", "macs"):
        assert result["configured_over_ungated"][key] == pytest.approx(configured[key] / ungated[key])
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["mode"] == "benchmark"
