"""The structured config schema (types, via Hydra's ConfigStore) and the value checks.

Types are enforced by OmegaConf when the config is composed; :func:`validate` checks values and
names, so that a bad run stops with one clear line before it writes anything: besides the values
themselves, what can be known without training is checked too (the model is built on the meta
device, the data files and checkpoints are looked for).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Tuple

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

MODES = ("train", "eval", "benchmark")
LOSSES = ("xent", "adjust")
OPTIMIZERS = ("sgd", "adamw")
SCHEDULERS = ("multistep", "step", "cosine", "linear", "constant")
REGULARIZERS = ("flops", "target_rate", "l1", "none")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("bf16", "fp16", "fp32")


class ConfigError(ValueError):
    """A config value that cannot work; the message is one line naming the key."""


@dataclass
class ModelConfig:
    name: str = "densenet40"
    conv: Optional[str] = None  # kind of 3×3 conv where the model offers one (dense, dgconv, group); None = its default
    groups: Optional[int] = None  # DenseNets with conv=group: the fixed group count
    growth_rate: Optional[int] = None  # DenseNets: channels each layer adds (thinner: a static baseline); None = own
    pretrained: bool = False


@dataclass
class GateConfig:
    """Every gate's options; each conf/gate/<name>.yaml sets its own and leaves the others unset
    (None), which the gate never sees. Setting an option the gate lacks is an error."""

    name: str = "acs"
    width: Optional[int] = None  # acs, ddi, aig: channels inside the gate
    init_keep: Optional[float] = None  # acs, ddi, aig, static: initial keep probability
    conv: Optional[str] = None  # acs: dgconv | dense | group, its 3×3 convolutions
    groups: Optional[int] = None  # acs with conv=group: the fixed group count
    estimator: Optional[str] = None  # acs, ddi, aig, static: ste | gumbel
    temperature: Optional[float] = None  # acs, ddi, aig, static: Gumbel temperature (estimator=gumbel)
    density: Optional[float] = None  # fbs: fraction of channels kept
    detach_input: Optional[bool] = None  # acs, ddi, aig, fbs: the gate's gradients stop at the features it reads


@dataclass
class DatasetConfig:
    name: str = "cifar10"
    root: Optional[str] = None  # None: $ACS_DATA, else ./data
    download: bool = True
    batch_size: int = 64
    eval_batch_size: Optional[int] = None
    num_workers: int = 4
    subset: Optional[int] = None
    val_split: float = 0.0
    augment: bool = True
    # Each split held as one tensor on the training device, batches made there (data sets that fit in
    # memory); None: so on CUDA where the splits fit, else the per-sample DataLoader pipeline.
    on_device: Optional[bool] = None
    options: Dict[str, Any] = field(default_factory=dict)


@dataclass
class OptimizerConfig:
    name: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    nesterov: bool = False
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    # DGConv2d's grouping gates form their own parameter group: they sit on a threshold, so a full
    # learning rate flips a whole group structure per step, and weight decay pulls them onto it.
    grouping_lr_scale: float = 1.0
    grouping_weight_decay: float = "${.weight_decay}"  # type: ignore[assignment]
    # Each gate's keep bias (acs.gates.keep_biases: the output bias of a gate network, a static gate's
    # logits) likewise: the compute term reaches one only through its channel's ~1/400 share of the MACs.
    keep_bias_lr_scale: float = 1.0
    keep_bias_weight_decay: float = "${.weight_decay}"  # type: ignore[assignment]


@dataclass
class SchedulerConfig:
    name: str = "multistep"
    milestones: List[float] = field(default_factory=lambda: [0.5, 0.75])  # fractions of max_epochs
    step_size: int = 30  # epochs, for name=step
    gamma: float = 0.1
    final_factor: float = 0.0  # cosine/linear: lr at the end as a fraction of the initial lr


@dataclass
class RegularizerConfig:
    name: str = "flops"
    beta: float = 0.5
    minimum: float = 50.0  # flops: target compute, % of the dense model's MACs
    target: float = 0.5  # target_rate: target keep rate of every gated layer, in [0, 1]


@dataclass
class TrainerConfig:
    max_epochs: int = 300
    device: str = "auto"
    precision: str = "bf16"  # autocast dtype on CUDA; CPU runs in fp32
    channels_last: bool = False
    grad_clip: Optional[float] = None
    deterministic: bool = False
    progress: bool = True
    sync_bn: bool = False  # torchrun: BatchNorm statistics over the global batch, not each process's share
    compile: bool = False  # torch.compile the training forward/backward
    # Before each evaluation, BatchNorm statistics recomputed over this many training batches with the
    # current weights (0: the running averages of training, which lag the weights in short runs).
    precise_bn_batches: int = 0


@dataclass
class BenchmarkConfig:
    warmup: int = 3
    steps: int = 10
    batch_size: Optional[int] = None  # None: dataset.batch_size


@dataclass
class WandbConfig:
    project: str = "acs"
    entity: Optional[str] = None
    mode: Optional[str] = None  # None: $WANDB_MODE, else offline
    group: Optional[str] = None  # None: a sweep's jobs share the sweep folder's group, a single run has none
    name: Optional[str] = None  # None: the job's swept values (a single run: its overrides); a sweep prefixes it
    tags: List[str] = field(default_factory=list)
    notes: Optional[str] = None
    log_checkpoints: bool = False  # best.pt as a model artifact, the run's summary as its metadata


@dataclass
class LoggerConfig:
    name: str = "wandb"
    wandb: WandbConfig = field(default_factory=WandbConfig)


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    gate: GateConfig = field(default_factory=GateConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    regularizer: RegularizerConfig = field(default_factory=RegularizerConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    benchmark: BenchmarkConfig = field(default_factory=BenchmarkConfig)
    mode: str = "train"
    loss: str = "xent"
    seed: int = 0
    ckpt_path: Optional[str] = None
    resume: bool = False
    overwrite: bool = False  # a run folder that holds another run: replace it (else the run refuses it)
    init_from: Optional[str] = None  # a checkpoint whose matching weights start a new run (not a resume)
    # Gate options an experiment preset sets for every gate design that has them (conf/gate/*.yaml read
    # them), so that a preset's ACS options leave gate=fbs alone; gate.<option> still sets one design's.
    gate_preset: Dict[str, Any] = field(default_factory=dict)
    name: Optional[str] = None  # run name shown in W&B; None: derived from the overrides


def register_schema() -> None:
    ConfigStore.instance().store(name="config_schema", node=Config)


def _choice(value: Any, key: str, choices) -> None:
    if value not in choices:
        raise ConfigError(f"{key}={value!r} is not one of: {', '.join(map(str, choices))}")


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _validate_gate(gate: DictConfig, preset: DictConfig) -> None:
    """The options that are set must be the gate's own and hold good values: the gate's own rules.
    A preset's options must be some gate's (a typo there would otherwise reach no gate, silently)."""
    from acs.gates import GATES, check_gate

    known = {option for name in GATES.names() for option in GATES.options(name)}
    unknown = sorted(set(preset) - known)
    _check(not unknown, f"gate_preset.{', gate_preset.'.join(unknown)} is no gate's option; gate options: "
           f"{', '.join(sorted(known))}")  # fmt: skip
    try:
        check_gate(OmegaConf.to_container(gate, resolve=True))
    except ValueError as error:
        raise ConfigError(str(error)) from error


def check_device(name: str) -> None:
    """ConfigError unless the device ``trainer.device`` names exists here."""
    import torch

    _check(name != "cuda" or torch.cuda.is_available(), "trainer.device=cuda but no CUDA device is available")


def validate(cfg: DictConfig) -> None:
    """Raises :class:`ConfigError` on the first bad value (names come from the live registries),
    DatasetNotFoundError when the data set's files are missing and will not be downloaded, and
    CheckpointError when ``ckpt_path`` or ``init_from`` is missing or no checkpoint."""
    from acs.data import check_files, fits_in_memory, list_datasets
    from acs.gates import list_gates
    from acs.models import list_models
    from acs.reporting.run_logger import LOGGERS
    from acs.training.checkpoint import load_checkpoint

    _choice(cfg.mode, "mode", MODES)
    _choice(cfg.loss, "loss", LOSSES)
    _choice(cfg.model.name, "model.name", list_models())
    _choice(cfg.gate.name, "gate.name", list_gates())
    _choice(cfg.dataset.name, "dataset.name", list_datasets())
    _choice(cfg.optimizer.name, "optimizer.name", OPTIMIZERS)
    _choice(cfg.scheduler.name, "scheduler.name", SCHEDULERS)
    _choice(cfg.regularizer.name, "regularizer.name", REGULARIZERS)
    _choice(cfg.trainer.device, "trainer.device", DEVICES)
    _choice(cfg.trainer.precision, "trainer.precision", PRECISIONS)
    _choice(cfg.logger.name, "logger.name", LOGGERS)
    _check_finite(cfg)
    reg = cfg.regularizer
    _check(math.isfinite(reg.beta) and reg.beta >= 0, f"regularizer.beta must be >= 0, got {reg.beta}")
    _check(0 <= reg.minimum <= 100, f"regularizer.minimum is a percentage in [0, 100], got {reg.minimum}")
    _check(0 <= reg.target <= 1, f"regularizer.target is a keep rate in [0, 1], got {reg.target}")
    opt = cfg.optimizer
    _check(opt.lr > 0, f"optimizer.lr must be > 0, got {opt.lr}")
    _check(opt.weight_decay >= 0, f"optimizer.weight_decay must be >= 0, got {opt.weight_decay}")
    _check(opt.momentum >= 0, f"optimizer.momentum must be >= 0, got {opt.momentum}")
    betas = list(opt.betas)
    _check(len(betas) == 2 and all(0 <= b < 1 for b in betas), f"optimizer.betas are two values in [0, 1), got {betas}")
    for group in ("grouping", "keep_bias"):
        scale, decay = opt[f"{group}_lr_scale"], opt[f"{group}_weight_decay"]
        _check(scale >= 0, f"optimizer.{group}_lr_scale must be >= 0, got {scale}")
        _check(decay >= 0, f"optimizer.{group}_weight_decay must be >= 0, got {decay}")
    _check(cfg.trainer.max_epochs >= 1, f"trainer.max_epochs must be >= 1, got {cfg.trainer.max_epochs}")
    _check(
        cfg.trainer.precise_bn_batches >= 0,
        f"trainer.precise_bn_batches must be >= 0, got {cfg.trainer.precise_bn_batches}",
    )
    ds = cfg.dataset
    _check(ds.batch_size >= 1, f"dataset.batch_size must be >= 1, got {ds.batch_size}")
    _check(
        ds.eval_batch_size is None or ds.eval_batch_size >= 1,
        f"dataset.eval_batch_size must be >= 1 (or null), got {ds.eval_batch_size}",
    )
    _check(ds.num_workers >= 0, f"dataset.num_workers must be >= 0, got {ds.num_workers}")
    _check(ds.subset is None or ds.subset >= 1, f"dataset.subset must be >= 1 (or null), got {ds.subset}")
    _check(0 <= ds.val_split < 1, f"dataset.val_split must lie in [0, 1), got {ds.val_split}")
    _check(
        not ds.on_device or fits_in_memory(ds.name),
        f"dataset.on_device=true, but {ds.name} is read sample by sample and cannot be held on the device: "
        "set dataset.on_device=false (or null)",
    )
    milestones = list(cfg.scheduler.milestones)
    _check(all(0 < m <= 1 for m in milestones), f"scheduler.milestones are fractions in (0, 1], got {milestones}")
    _check(cfg.scheduler.step_size >= 1, f"scheduler.step_size must be >= 1, got {cfg.scheduler.step_size}")
    _check(cfg.scheduler.gamma > 0, f"scheduler.gamma must be > 0, got {cfg.scheduler.gamma}")
    final = cfg.scheduler.final_factor
    _check(final >= 0, f"scheduler.final_factor must be >= 0, got {final}")
    clip = cfg.trainer.grad_clip
    _check(clip is None or clip > 0, f"trainer.grad_clip must be > 0 (or null), got {clip}")
    bench = cfg.benchmark
    _check(bench.warmup >= 0 and bench.steps >= 1, "benchmark.warmup must be >= 0 and benchmark.steps >= 1")
    _check(bench.batch_size is None or bench.batch_size >= 1, "benchmark.batch_size must be >= 1 (or null)")
    _validate_gate(cfg.gate, cfg.gate_preset)
    _check(cfg.mode != "eval" or cfg.ckpt_path, "mode=eval needs ckpt_path=<checkpoint file>")
    _check(cfg.mode == "train" or not cfg.init_from, f"init_from starts a training run, not mode={cfg.mode}")
    _check(
        not (cfg.resume and cfg.overwrite),
        "resume=true continues the run in the folder, overwrite=true replaces it: give one of them",
    )
    _check(
        not (cfg.init_from and cfg.ckpt_path),
        "init_from starts a new run from another run's weights, ckpt_path resumes a run: give one of them",
    )
    check_device(cfg.trainer.device)
    if cfg.logger.name == "wandb":
        _check_wandb(cfg.logger.wandb)
    for path in (cfg.ckpt_path, cfg.init_from):
        if path:  # exists and reads as a checkpoint: loaded to the meta device, which reads no tensor data
            load_checkpoint(path, map_location="meta")
    if cfg.mode != "eval":  # an evaluation takes model, gate and data from its checkpoint
        _check_model(cfg)
    if cfg.mode == "train":  # a benchmark reads no data
        ds_options = OmegaConf.to_container(ds.options, resolve=True)
        check_files(ds.name, ds.root, ds.download, **ds_options)


def _floats(node: Any, key: str) -> Iterator[Tuple[str, float]]:
    if isinstance(node, dict):
        for name, value in node.items():
            yield from _floats(value, f"{key}.{name}" if key else str(name))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _floats(value, f"{key}[{index}]")
    elif isinstance(node, float):
        yield key, node


def _check_finite(cfg: DictConfig) -> None:
    """Every float option is a finite number: inf and nan pass the range checks below (``lr > 0``)
    and would only show as a diverged or meaningless run."""
    for key, value in _floats(OmegaConf.to_container(cfg, resolve=True), ""):
        _check(math.isfinite(value), f"{key} must be a finite number, got {value}")


def _check_wandb(options: DictConfig) -> None:
    from acs.reporting.run_logger import resolve_mode

    try:
        resolve_mode(OmegaConf.to_container(options, resolve=True))
    except ValueError as error:
        raise ConfigError(str(error)) from error


def _check_model(cfg: DictConfig) -> None:
    """Builds the model on the meta device (no memory, no weights, no download), so that the model's
    and gates' own checks run now: a group count that does not divide a layer's channels, a gate on
    a model without gates, an option the model lacks. Anything else the build hits is left to the
    real build, which reports it (a model that cannot be built on the meta device is no config error)."""
    import torch

    from acs.data import dataset_info
    from acs.training.builders import build_model

    try:
        info = dataset_info(cfg.dataset.name, **OmegaConf.to_container(cfg.dataset.options, resolve=True))
    except ValueError as error:
        raise ConfigError(str(error)) from error
    model = OmegaConf.merge(cfg.model, {"pretrained": False})
    try:
        with torch.device("meta"):
            build_model(model, cfg.gate, info.num_classes, info.in_channels)
    except ConfigError:
        raise
    except Exception:  # noqa: BLE001 - see the docstring
        return
