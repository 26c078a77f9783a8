"""From a training checkpoint to a folder of deployable files, checked against the model as trained.

:func:`deploy` rebuilds the model from the checkpoint's saved config, converts it to its deployed
form (:func:`convert`), writes that form as TorchScript (and as ONNX where it is static), runs the
written file on the run's test split beside the training form (every sample's logits within
``ATOL``, its executed MACs equal to the training form's ``Output.macs`` and, on the first samples, to
what ``torch.utils.flop_counter`` counts), times both at batch 1, and describes it all in
``deploy.json``. A file calling the native kernels gets their compiled library beside it, which
``torch.ops.load_library`` loads in a process with torch alone. The folder appears complete or not
at all.
"""

from __future__ import annotations

import contextlib
import io
import os
import secrets
import shutil
import statistics
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple, Union

import torch
from omegaconf import OmegaConf
from torch import Tensor, nn
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode

from acs.data import build_datasets, make_loader
from acs.deploy import native as native_kernels
from acs.deploy import to_dynamic, to_thin
from acs.deploy.export import deployable, export_onnx
from acs.deploy.script import script_executor, trace_static
from acs.files import write_json
from acs.gates import Gate, StaticGate
from acs.messages import one_line
from acs.models.densenet import DenseNet
from acs.models.resnext import GResNeXt
from acs.provenance import collect as collect_provenance
from acs.timing import time_interleaved
from acs.training.checkpoint import TrainedModel, load_trained_model

ATOL = 1e-4
SCRIPT_FILE, ONNX_FILE, REPORT_FILE = "model.pt", "model.onnx", "deploy.json"
NATIVE_NAME = "acs_native"  # the native kernels' library, with the suffix of its platform (.so)
# Test samples run under torch.utils.flop_counter, whose per-operation Python hook would make a
# whole split of per-sample executor calls take minutes.
FLOP_SAMPLES = 2


class DeployError(RuntimeError):
    """A checkpoint that cannot be deployed, or a deployed form that is not the trained model; one line."""


class Deployed(NamedTuple):
    """A converted model: its ``kind``, the eager ``module`` (returns ``acs.Output``), whether it is
    ``static`` (the same convolutions for every sample: ONNX-exportable) and what it is."""

    kind: str
    module: nn.Module
    static: bool
    description: str


def convert(model: nn.Module, input_size: Tuple[int, int, int], native: Optional[bool] = None) -> Deployed:
    """The deployed form of a trained ``model``: the dynamic executor for per-sample gates, the
    thinner ungated DenseNet for static gates, the materialized grouping for G-ResNeXt and
    DGConv DenseNets, an ungated model as it is. ``native`` as in :func:`acs.deploy.to_dynamic`."""
    gates = [m for m in model.modules() if isinstance(m, Gate)]
    if isinstance(model, DenseNet) and any(type(g) is not StaticGate for g in gates):
        executor = to_dynamic(model, script=False, native=native)
        engine = "native kernels" if executor.native else "tensor operations"
        return Deployed("dynamic", executor, False, f"dynamic executor ({engine}): skipped channels are not computed")
    if isinstance(model, DenseNet) and gates:
        return Deployed("thin", to_thin(model, input_size), True, "thinner ungated DenseNet: dropped channels removed")
    if isinstance(model, (DenseNet, GResNeXt)):
        materialized = deployable(model)
        if materialized is model:
            return Deployed("ungated", model, True, "the ungated model as trained")
        return Deployed("materialized", materialized.eval(), True, "grouping materialized as grouped convolutions")
    raise DeployError(f"no deployed form for {type(model).__name__}")


def to_script(deployed: Deployed, input_size: Tuple[int, int, int]) -> torch.jit.ScriptModule:
    """``deployed`` as one TorchScript module for ``input_size`` (C, H, W): ``forward(x)`` returns
    ``(logits, macs)`` (see :mod:`acs.deploy.script`)."""
    if not deployed.static:
        return script_executor(deployed.module, input_size)
    with torch.no_grad():
        macs = float(deployed.module(torch.zeros(1, *input_size)).macs[0])
    return trace_static(deployed.module, input_size, macs)


def _roundtrip(scripted: torch.jit.ScriptModule, path: Path) -> torch.jit.ScriptModule:
    """Saves ``scripted`` at ``path`` and loads it back: what is checked and timed is the file."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.jit.*deprecated", category=FutureWarning)
        torch.jit.save(scripted, str(path))
        return torch.jit.load(str(path))


def _counted_macs(module: nn.Module, x: Tensor) -> float:
    """The MACs ``torch.utils.flop_counter`` sees ``module`` execute on ``x`` (FLOPs ÷ 2)."""
    counter = FlopCounterMode(display=False)
    with counter:
        module(x)
    return counter.get_total_flops() / 2


class Evaluation(NamedTuple):
    samples: int
    correct: Dict[str, int]
    macs: Dict[str, float]
    max_error: float
    counted_macs: float  # by torch.utils.flop_counter, on the first counted_samples test samples
    counted_samples: int


@torch.no_grad()
def _evaluate(model: nn.Module, scripted: nn.Module, loader: DataLoader, limit: Optional[int]) -> Evaluation:
    """Top-1 hits and MACs of the training form and of the deployed file on the test split (its
    first ``limit`` samples); raises DeployError at the first sample they disagree on."""
    samples, max_error, counted, counted_samples = 0, 0.0, 0.0, 0
    correct, macs = {"training": 0, "deployed": 0}, {"training": 0.0, "deployed": 0.0}
    for x, y in loader:
        if limit is not None:
            x, y = x[: limit - samples], y[: limit - samples]
        out = model(x)
        logits, executed = scripted(x)
        if samples == 0:
            counted_samples = min(FLOP_SAMPLES, len(x))
            counted = _counted_macs(scripted, x[:counted_samples])
            if counted != executed[:counted_samples].sum().item():
                raise DeployError(
                    f"the deployed model executes {counted:.0f} MACs by torch.utils.flop_counter on the first "
                    f"{counted_samples} test samples but reports {executed[:counted_samples].sum().item():.0f}"
                )
        errors = (logits - out.logits).abs().amax(1)
        for index in range(len(x)):
            if not errors[index] <= ATOL:
                raise DeployError(
                    f"the deployed model's logits differ from the training form's by {errors[index].item():.3g} "
                    f"(> {ATOL:g}) on test sample {samples + index}"
                )
            if executed[index].item() != out.macs[index].item():
                raise DeployError(
                    f"the deployed model executes {executed[index].item():.0f} MACs on test sample {samples + index}, "
                    f"the training form's Output.macs say {out.macs[index].item():.0f}"
                )
        max_error = max(max_error, errors.max().item())
        for name, predicted, sample_macs in (("training", out.logits, out.macs), ("deployed", logits, executed)):
            correct[name] += int((predicted.argmax(1) == y).sum())
            macs[name] += sample_macs.sum().item()
        samples += len(x)
        if limit is not None and samples >= limit:
            break
    means = {name: total / samples for name, total in macs.items()}
    return Evaluation(samples, correct, means, max_error, counted, counted_samples)


def _latency_ms(modules: List[nn.Module], x: Tensor, runs: int, warmup: int) -> List[float]:
    """Median batch-1 latency of each module, timed interleaved."""
    calls = [(lambda module=module: module(x)) for module in modules]
    with torch.no_grad():
        times = time_interleaved(calls, warmup, runs)
    return [1000.0 * statistics.median(seconds) for seconds in times]


def _how_to_load(files: Dict[str, str]) -> str:
    load = f"torch.jit.load('{files['torchscript']}')"
    if "native_library" not in files:
        return load
    return f"torch.ops.load_library('{files['native_library']}') (torch alone) or import acs.deploy, then {load}"


def _test_loader(trained: TrainedModel, data_root: Optional[str]) -> DataLoader:
    dataset = trained.config.dataset
    options = OmegaConf.to_container(dataset.options, resolve=True)
    sets = build_datasets(
        dataset.name, data_root or dataset.root, download=False, subset=dataset.subset, augment=False, **options
    )
    return make_loader(sets.test, dataset.eval_batch_size or dataset.batch_size, shuffle=False)


def _prepare_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise DeployError(f"--out {out} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise DeployError(f"--out {out} exists and is not empty: choose another folder or pass --overwrite")


def _publish(tmp: Path, out: Path) -> None:
    """Moves the finished folder ``tmp`` to ``out``, replacing what was there only once it is complete."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.{secrets.token_hex(6)}.old")
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old)


def deploy(
    checkpoint: Union[str, Path],
    out: Union[str, Path],
    overwrite: bool = False,
    data_root: Optional[str] = None,
    samples: Optional[int] = None,
    native: Optional[bool] = None,
    runs: int = 50,
    warmup: int = 10,
    progress: Callable[[str], None] = print,
) -> Dict[str, Any]:
    """Deploys the model of ``checkpoint`` into the folder ``out`` (see the module docstring);
    returns what it writes to ``deploy.json``. ``samples`` limits the accuracy pass to the first
    test samples (default: the whole split); ``runs``/``warmup``: batch-1 timing calls. Raises
    DeployError, CheckpointError or DatasetNotFoundError, leaving ``out`` as it was."""
    out = Path(out)
    _prepare_out(out, overwrite)
    progress(f"[1/5] rebuilding the model from {checkpoint}")
    trained = load_trained_model(checkpoint)
    input_size = tuple(trained.info.input_size)
    loader = _test_loader(trained, data_root)
    progress("[2/5] converting it")
    try:
        deployed = convert(trained.model, input_size, native)
    except (NotImplementedError, ValueError, TypeError) as error:
        raise DeployError(f"cannot deploy this {trained.config.model.name}: {error}") from error
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{secrets.token_hex(6)}.tmp")
    tmp.mkdir()
    try:
        report = _write(trained, deployed, input_size, loader, tmp, samples, runs, warmup, progress)
        report["checkpoint"] = str(checkpoint)
        write_json(tmp / REPORT_FILE, report)
        _publish(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    progress(f"written: {out}/ ({', '.join(sorted(p.name for p in out.iterdir()))})")
    return report


def _write(
    trained: TrainedModel, deployed: Deployed, input_size: Tuple[int, int, int], loader: DataLoader, tmp: Path,
    samples: Optional[int], runs: int, warmup: int, progress: Callable[[str], None],
) -> Dict[str, Any]:  # fmt: skip
    progress(f"[3/5] writing {deployed.kind} form: TorchScript{' and ONNX' if deployed.static else ''}")
    scripted = _roundtrip(to_script(deployed, input_size), tmp / SCRIPT_FILE)
    files = {"torchscript": SCRIPT_FILE}
    native = bool(getattr(deployed.module, "native", False))
    if native:  # the library this process loaded, which the file was scripted against
        library = native_kernels.library()
        files["native_library"] = NATIVE_NAME + library.suffix
        shutil.copyfile(library, tmp / files["native_library"])
    if deployed.static:
        try:
            # The exporter reports its steps on stdout and warns about torch internals.
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
                warnings.simplefilter("ignore")
                export_onnx(deployed.module, tmp / ONNX_FILE, input_size, atol=ATOL)
            files["onnx"] = ONNX_FILE
        except ImportError as error:
            progress(f"      no ONNX file: {error}")
        except RuntimeError as error:  # the exporter failed, or onnxruntime disagrees with PyTorch
            raise DeployError(f"ONNX export failed: {one_line(error)}") from error
    progress(f"[4/5] checking it against the training form on the test split (logits within {ATOL:g}, same MACs)")
    evaluation = _evaluate(trained.model, scripted, loader, samples)
    progress(f"[5/5] timing both at batch 1 ({runs} runs)")
    x = next(iter(loader))[0][:1]
    latency = _latency_ms([trained.model, scripted], x, runs, warmup)
    n, state = evaluation.samples, trained.state
    forms = [
        {
            "form": "training",
            "description": "the model as trained (masked computation), from the checkpoint",
            "files": {},
            "acc1": 100.0 * evaluation.correct["training"] / n,
            "macs": evaluation.macs["training"],
            "latency_ms": latency[0],
        },
        {
            "form": deployed.kind,
            "description": deployed.description,
            "files": files,
            "native_kernels": native,
            "load": _how_to_load(files),
            "acc1": 100.0 * evaluation.correct["deployed"] / n,
            "macs": evaluation.macs["deployed"],
            "latency_ms": latency[1],
        },
    ]
    config = trained.config
    return {
        "model": config.model.name,
        "gate": config.gate.name,
        "dataset": config.dataset.name,
        "epoch": state.get("epoch"),
        "input": list(input_size),
        "classes": trained.info.num_classes,
        "dense_macs": state.get("dense_macs"),
        "accuracy_on": {"split": "test", "samples": n, "of": len(loader.dataset)},
        "check": {
            "samples": n,
            "atol": ATOL,
            "max_logit_error": evaluation.max_error,
            "flop_counter_macs": evaluation.counted_macs / evaluation.counted_samples,
            "flop_counter_samples": evaluation.counted_samples,
        },
        "latency": {
            "batch": 1,
            "runs": runs,
            "warmup": warmup,
            "threads": torch.get_num_threads(),
        },
        # The code, packages, host and CPU, as a run's summary.json records them.
        "provenance": collect_provenance(torch.device("cpu")),
        "outputs": "forward(x: N×C×H×W) -> (logits N×classes, macs N float64)",
        "forms": forms,
    }
