"""Throughput benchmarks (benchmarks/throughput.py and mode=benchmark): gated and ungated models
through the same training step and inference, and their ratios."""
import functools
import importlib.util
import json
from pathlib import Path

import pytest
import torch

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
    assert "ungated" in printed and "gated" in printed and "gated/ungated" in printed


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


@pytest.fixture
def aot_eager_compile(monkeypatch):
    """torch.compile with the aot_eager backend: the same graphs and guards, no code generation."""
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))


@pytest.fixture
def no_compile(monkeypatch):
    """torch.compile as the identity: what the report does with the compiled twins, in seconds."""
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda model, **options: compiled.append(model) or model)
    return compiled


@pytest.mark.slow
def test_compile_reports_compiled_and_eager_side_by_side(tmp_path, capsys, aot_eager_compile):
    out = tmp_path / "throughput.json"
    argv = ["--device", "cpu", "--batch", "2", "--input", "3,8,8", "--warmup", "1", "--steps", "1", "--compile"]
    assert load_script().main(argv + ["--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result["results"]) == {"ungated", "gated", "ungated compiled", "gated compiled"}
    rows, ratios = result["results"], result["ratios"]
    for key in ("train_images_per_s", "eval_images_per_s"):
        assert ratios["gated compiled/gated"][key] == pytest.approx(rows["gated compiled"][key] / rows["gated"][key])
        assert ratios["gated compiled/ungated compiled"][key] == pytest.approx(
            rows["gated compiled"][key] / rows["ungated compiled"][key]
        )
    assert rows["gated compiled"]["macs"] == rows["gated"]["macs"]  # compiled, the same model
    printed = capsys.readouterr().out
    assert "gated compiled/gated" in printed and "ungated compiled/ungated" in printed


def test_benchmark_mode_with_compile_adds_the_compiled_twins(tmp_path, tiny_overrides, no_compile):
    from helpers import compose_config

    from acs.training.app import execute

    overrides = tiny_overrides + [
        "mode=benchmark", "benchmark.steps=1", "benchmark.warmup=1", "dataset.batch_size=2", "trainer.compile=true",
    ]  # fmt: skip
    execute(compose_config(*overrides), str(tmp_path), overrides)
    result = json.loads((tmp_path / "benchmark.json").read_text())
    rows, ratios = result["results"], result["ratios"]
    assert result["compile"] and set(rows) == {"configured", "ungated", "configured compiled", "ungated compiled"}
    assert rows["configured compiled"]["macs"] == rows["configured"]["macs"]
    for key in ("train_images_per_s", "eval_images_per_s", "latency_ms_batch1"):
        assert ratios["configured compiled/configured"][key] == pytest.approx(
            rows["configured compiled"][key] / rows["configured"][key]
        )
    assert ratios["configured/ungated"] == result["configured_over_ungated"]
    assert len(no_compile) == 2  # the configured model and its ungated twin, each compiled once
