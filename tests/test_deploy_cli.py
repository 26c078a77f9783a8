"""python -m acs.deploy: a miniature run's checkpoint becomes a folder of deployable files whose
TorchScript runs in a fresh process with the training form's logits, ONNX where the model is static,
and deploy.json with what the run reported; bad input is one error line and leaves --out as it was."""
import io
import json
import subprocess
import sys

import pytest
import torch
from helpers import QUIET, REPO, TINY, compose_config, counted_macs

import acs
from acs.deploy import native as native_kernels
from acs.deploy import pipeline
from acs.deploy.__main__ import main
from acs.deploy.calibrate import calibrate_keep
from acs.training.app import execute
from acs.training.checkpoint import load_checkpoint, load_trained_model, save_checkpoint

SMALL = ["trainer.max_epochs=1", "dataset.options.train_size=32", "dataset.options.test_size=24"]
RUNS = {
    "acs": ["gate=acs", "gate.width=8"],
    "static": ["gate=static", "gate.init_keep=0.3"],
    "none": ["gate=none"],
    # lr 0.01: at 0.1 four steps leave logits of 1e5, whose float32 rounding alone exceeds 1e-4
    "g_resnext": ["model=g_resnext29_2x64d", "gate=none", "dataset.options.test_size=8", "dataset.batch_size=8",
                  "optimizer.lr=0.01"],  # fmt: skip
}
KINDS = {"acs": "dynamic", "static": "thin", "none": "ungated", "g_resnext": "materialized"}
TEST_SIZE = {"acs": 24, "static": 24, "none": 24, "g_resnext": 8}
FAST = ["--runs", "2", "--warmup", "0"]
pytestmark = pytest.mark.filterwarnings("ignore:.*torch.jit.*deprecated:FutureWarning")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One miniature training run (1 epoch) per kind of deployed form: run folder by name."""
    folders = {}
    for name, extra in RUNS.items():
        overrides = [o for o in TINY if not o.startswith("gate.")] + SMALL + extra
        folders[name] = tmp_path_factory.mktemp(name)
        torch.manual_seed(0)
        execute(compose_config(*overrides), str(folders[name]), overrides)
    return folders


@pytest.fixture(scope="module")
def deployed(runs, tmp_path_factory):
    """``python -m acs.deploy`` in this process on every run's best checkpoint: output folder by name."""
    root = tmp_path_factory.mktemp("deployed")
    for name, folder in runs.items():
        assert main([str(folder / "checkpoints" / "best.pt"), "--out", str(root / name), *FAST]) == 0
    return {name: root / name for name in runs}


def test_help_shows_an_example(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert "python -m acs.deploy" in text and "example:" in text and "--out deployed/" in text


@pytest.mark.parametrize("name", list(RUNS))
def test_deploy_json_reports_each_form(runs, deployed, name):
    report = json.loads((deployed[name] / "deploy.json").read_text())
    summary = json.loads((runs[name] / "summary.json").read_text())
    training, form = report["forms"]
    assert training["form"] == "training" and form["form"] == KINDS[name]
    static = name != "acs"
    native = not static and native_kernels.available()
    assert form["native_kernels"] is native
    assert set(form["files"]) == {"torchscript", *(["onnx"] if static else []), *(["native_library"] if native else [])}
    if native:  # the library this process loaded its kernels from, under a name of its own
        assert form["files"]["native_library"] == "acs_native.so"
        assert (deployed[name] / "acs_native.so").read_bytes() == native_kernels.library().read_bytes()
        assert form["load"].startswith("torch.ops.load_library('acs_native.so')")
    assert sorted(p.name for p in deployed[name].iterdir()) == sorted(["deploy.json", *form["files"].values()])
    # The whole test split, on which the run itself reported its accuracy and MACs.
    size = TEST_SIZE[name]
    assert report["accuracy_on"] == {"split": "test", "samples": size, "of": size}
    assert training["acc1"] == pytest.approx(summary["final"]["test/acc1"])
    assert training["macs"] == pytest.approx(summary["final"]["test/macs"])
    assert form["acc1"] == training["acc1"] and form["macs"] == training["macs"]
    assert report["check"]["max_logit_error"] <= 1e-4 and report["check"]["samples"] == size
    # torch.utils.flop_counter sees the file execute what it reports, on the first test samples.
    assert report["check"]["flop_counter_samples"] == 2 and report["check"]["flop_counter_macs"] > 0
    assert report["dense_macs"] == summary["dense_macs"] and report["input"] == [3, 8, 8]
    assert training["latency_ms"] > 0 and form["latency_ms"] > 0
    # Code, packages, host and CPU, as the run's summary.json records them.
    assert set(report["provenance"]) == set(summary["provenance"])
    assert report["provenance"]["versions"] == summary["provenance"]["versions"]
    assert report["provenance"]["device_name"] == summary["provenance"]["device_name"]
    if name == "static":  # most channels dropped at initialisation: the thin model is thinner
        assert form["macs"] < 0.8 * report["dense_macs"]


# Loads every deployed model.pt in a new interpreter and saves their outputs on the same images. With
# "torch": acs cannot be imported (a device with torch alone; the editable install would otherwise
# find it), and the native kernels come from the library that deploy.json names beside the file;
# with "acs": `import acs.deploy` loads them, and nothing else is done before torch.jit.load.
FRESH_PROCESS = """
import json, sys
from pathlib import Path
import torch
mode, x, folders, out = sys.argv[1], torch.load(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4]
if mode == "torch":
    sys.modules["acs"] = None
    try:
        import acs
    except ImportError:
        pass
    else:
        raise AssertionError("acs is importable")
else:
    import acs.deploy
outputs = {}
for name, folder in folders.items():
    files = json.loads((Path(folder) / "deploy.json").read_text())["forms"][1]["files"]
    if mode == "torch" and "native_library" in files:
        torch.ops.load_library(str(Path(folder) / files["native_library"]))
    outputs[name] = torch.jit.load(str(Path(folder) / files["torchscript"]))(x)
outputs["registered"] = hasattr(torch.ops.acs, "dense_layer")
torch.save(outputs, out)
"""


@pytest.mark.parametrize("mode", ["torch", "acs"])
def test_torchscript_runs_in_a_fresh_process_with_the_training_logits(runs, deployed, tmp_path, mode):
    """Every written model.pt, loaded by torch.jit.load in a new interpreter, gives the training
    form's logits and Output.macs: with torch alone (not acs) and the native library shipped beside
    the file, or after `import acs.deploy`."""
    x = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    torch.save(x, tmp_path / "x.pt")
    folders = json.dumps({name: str(folder) for name, folder in deployed.items()})
    # With torch alone: -I and a folder outside the repository, so that neither the environment nor
    # the working directory puts acs on sys.path; with acs: this repository's.
    isolated, cwd = (["-I"], tmp_path) if mode == "torch" else ([], REPO)
    files = [str(tmp_path / "x.pt"), folders, str(tmp_path / "out.pt")]
    command = [sys.executable, *isolated, "-c", FRESH_PROCESS, mode, *files]
    result = subprocess.run(command, cwd=cwd, env=QUIET, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    outputs = torch.load(tmp_path / "out.pt")
    # The executor's file calls the native kernels wherever they build (skipped here otherwise).
    assert outputs["registered"] == native_kernels.available()
    for name, folder in runs.items():
        model = load_trained_model(folder / "checkpoints" / "best.pt").model
        with torch.no_grad():
            expected = model(x)
        logits, macs = outputs[name]
        torch.testing.assert_close(logits, expected.logits, atol=1e-4, rtol=0)
        assert torch.equal(macs, expected.macs), name


def test_the_command_line_deploys_a_portable_executor(runs, tmp_path):
    """As a user types it; --no-native writes an executor that plain torch loads (no acs import)."""
    out = tmp_path / "out"
    checkpoint = runs["acs"] / "checkpoints" / "last.pt"
    options = ["--out", str(out), "--no-native", "--samples", "4", *FAST]
    command = [sys.executable, "-m", "acs.deploy", str(checkpoint), *options]
    result = subprocess.run(command, cwd=REPO, env=QUIET, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "[1/5]" in result.stdout and f"written: {out}" in result.stdout
    form = json.loads((out / "deploy.json").read_text())["forms"][1]
    assert form["native_kernels"] is False and form["load"] == "torch.jit.load('model.pt')"
    assert sorted(p.name for p in out.iterdir()) == ["deploy.json", "model.pt"]
    script = "import sys, torch; print(torch.jit.load(sys.argv[1])(torch.zeros(1, 3, 8, 8))[1].item())"
    loaded = subprocess.run(
        [sys.executable, "-c", script, str(out / "model.pt")], cwd=tmp_path, env=QUIET, capture_output=True, text=True
    )  # fmt: skip
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    assert float(loaded.stdout) > 0


@pytest.mark.parametrize("name", ["static", "none", "g_resnext"])
def test_onnx_file_runs_like_the_training_form(runs, deployed, name):
    onnx = pytest.importorskip("onnx")
    onnxruntime = pytest.importorskip("onnxruntime")
    path = str(deployed[name] / "model.onnx")
    onnx.checker.check_model(onnx.load(path))
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    got = torch.from_numpy(onnxruntime.InferenceSession(path).run(["logits"], {"input": x.numpy()})[0])
    with torch.no_grad():
        expected = load_trained_model(runs[name] / "checkpoints" / "best.pt").model(x).logits
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    "name, options, kind",
    [
        ("densenet40", {"gate": {"name": "acs", "width": 8}}, "dynamic"),
        ("densenet40", {"gate": {"name": "ddi", "width": 8}}, "dynamic"),
        ("densenet40", {"gate": {"name": "aig", "width": 8}}, "dynamic"),
        ("densenet40", {"gate": {"name": "fbs", "density": 0.5}}, "dynamic"),
        ("densenet_bc100", {"gate": {"name": "acs", "width": 8}}, "dynamic"),
        ("densenet_bc100", {"gate": {"name": "static", "init_keep": 0.5}}, "thin"),
        ("densenet40", {"gate": "none", "conv": "dgconv"}, "materialized"),
    ],
)
def test_every_gate_design_scripts_exactly(name, options, kind):
    """The TorchScript file of each deployed form, saved and loaded back, gives the model's logits
    within 1e-4 and its Output.macs, which torch.utils.flop_counter counts it executing."""
    model = acs.create_model(name, **options).eval()
    if kind == "dynamic" and options["gate"]["name"] != "fbs":
        calibrate_keep(model, (3, 8, 8), 0.5)  # input-dependent masks keeping about half
    deployed = pipeline.convert(model, (3, 8, 8))
    assert deployed.kind == kind
    buffer = io.BytesIO()
    torch.jit.save(pipeline.to_script(deployed, (3, 8, 8)), buffer)
    buffer.seek(0)
    scripted = torch.jit.load(buffer)
    x = torch.randn(3, 3, 8, 8)
    with torch.no_grad():
        expected = model(x)
        logits, macs = scripted(x)
    torch.testing.assert_close(logits, expected.logits, atol=1e-4, rtol=0)
    assert torch.equal(macs, expected.macs)
    assert counted_macs(scripted, x[:1]) == macs[0].item()


def _fails(argv, capsys, message):
    """The command exits non-zero with one error line containing ``message``."""
    assert main([*argv, *FAST]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err


def _no_leftovers(folder):
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")]


def test_bad_checkpoints_are_one_error_line(runs, tmp_path, capsys):
    state = load_checkpoint(runs["none"] / "checkpoints" / "best.pt")
    (tmp_path / "corrupt.pt").write_bytes(b"\x00not a checkpoint" * 10)
    torch.save({"model": {}}, tmp_path / "foreign.pt")
    torch.save({**state, "format": "acs-checkpoint-0"}, tmp_path / "old.pt")
    save_checkpoint(tmp_path / "unbuildable.pt", {**state, "config": {**state["config"], "model": {"name": "vgg7"}}})
    config = {**state["config"], "model": {**state["config"]["model"], "depth": 12}}
    save_checkpoint(tmp_path / "unknown_key.pt", {**state, "config": config})
    cases = [
        ("missing.pt", "checkpoint not found"),
        ("corrupt.pt", "corrupt, truncated or not a PyTorch checkpoint"),
        ("foreign.pt", "is not an ACS checkpoint"),
        ("old.pt", "written by another version of acs (format 'acs-checkpoint-0'"),
        ("unbuildable.pt", "cannot build its saved config"),
        ("unknown_key.pt", "cannot build its saved config"),
    ]
    for file, message in cases:
        out = tmp_path / f"out_{file}"
        _fails([str(tmp_path / file), "--out", str(out)], capsys, message)
        assert not out.exists()
    _no_leftovers(tmp_path)


def test_a_non_empty_out_is_kept_unless_overwrite(runs, tmp_path, capsys):
    checkpoint = str(runs["acs"] / "checkpoints" / "best.pt")
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    _fails([checkpoint, "--out", str(out)], capsys, "exists and is not empty")
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    assert main([checkpoint, "--out", str(out), "--overwrite", "--samples", "4", *FAST]) == 0
    native = ["acs_native.so"] if native_kernels.available() else []
    assert sorted(p.name for p in out.iterdir()) == sorted(["deploy.json", "model.pt", *native])
    assert json.loads((out / "deploy.json").read_text())["accuracy_on"] == {"split": "test", "samples": 4, "of": 24}
    _no_leftovers(tmp_path)


def test_a_deployed_form_that_differs_is_an_error(runs, tmp_path, capsys, monkeypatch):
    convert = pipeline.convert

    def off_by_a_bit(*args, **kwargs):
        deployed = convert(*args, **kwargs)
        with torch.no_grad():
            deployed.module.fc.bias += 1e-3
        return deployed

    monkeypatch.setattr(pipeline, "convert", off_by_a_bit)
    out = tmp_path / "out"
    _fails([str(runs["static"] / "checkpoints" / "best.pt"), "--out", str(out)], capsys, "differ from the training")
    assert not out.exists()
    _no_leftovers(tmp_path)


def test_missing_test_data_is_one_error_line(runs, tmp_path, capsys):
    state = load_checkpoint(runs["none"] / "checkpoints" / "best.pt")
    dataset = {**state["config"]["dataset"], "name": "cifar10", "options": {}}
    save_checkpoint(tmp_path / "cifar.pt", {**state, "config": {**state["config"], "dataset": dataset}})
    out = tmp_path / "out"
    _fails([str(tmp_path / "cifar.pt"), "--out", str(out), "--data-root", str(tmp_path / "data")], capsys, "cifar10")
    assert not out.exists()
