"""Config groups compose, the schema rejects wrong types, validation rejects wrong values."""

import re
import subprocess
import sys

import pytest
from helpers import CONF, REPO, TINY, compose_config
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from acs.training.config import ConfigError, validate

GROUP_OPTIONS = sorted(
    (group.name, option.stem) for group in CONF.iterdir() if group.is_dir() for option in group.glob("*.yaml")
)


@pytest.mark.parametrize("group, option", GROUP_OPTIONS, ids=[f"{g}={o}" for g, o in GROUP_OPTIONS])
def test_every_option_composes_and_validates(group, option, tmp_path):
    # validate also checks what a run needs besides values: ImageNet's folders, gate=none on a model
    # without gates.
    extra = []
    if (group, option) == ("dataset", "imagenet"):
        for split in ("train", "val"):
            (tmp_path / "imagenet" / split).mkdir(parents=True)
        extra = [f"dataset.root={tmp_path}"]
    elif group == "model" and option.startswith("g_resnext"):
        extra = ["gate=none"]
    cfg = compose_config(f"{group}={option}", *extra)
    validate(cfg)
    if group in ("model", "gate", "dataset", "optimizer", "scheduler", "regularizer", "logger"):
        assert cfg[group].name == option


def test_defaults_are_the_paper_setting():
    cfg = compose_config()
    assert cfg.model.name == "densenet40" and cfg.gate.name == "acs" and cfg.dataset.name == "cifar10"
    assert (cfg.optimizer.name, cfg.optimizer.lr, cfg.optimizer.momentum, cfg.optimizer.weight_decay) == (
        "sgd",
        0.1,
        0.9,
        1e-4,
    )
    assert cfg.dataset.batch_size == 64 and cfg.trainer.max_epochs == 300
    assert cfg.scheduler.name == "multistep" and list(cfg.scheduler.milestones) == [0.5, 0.75]
    assert cfg.scheduler.gamma == 0.1


def test_acs_reference_preset():
    cfg = compose_config("experiment=acs_reference")
    assert cfg.dataset.batch_size == 128 and cfg.trainer.max_epochs == 120
    assert (cfg.scheduler.name, cfg.scheduler.step_size, cfg.scheduler.gamma) == ("step", 30, 0.01)
    assert cfg.loss == "adjust"


def test_every_experiment_preset_composes_and_validates():
    presets = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
    assert {"compare_gates", "compare_convs", "quickstart", "acs_reference"} <= set(presets)
    for preset in presets:
        validate(compose_config(f"experiment={preset}"))


@pytest.mark.parametrize(
    "arm",
    [[], ["gate.conv=dense"], ["gate.conv=group", "gate.groups=4"], ["gate=ddi"], ["gate=aig"],
     ["gate=aig", "regularizer=target_rate", "regularizer.target=0.5"],
     ["gate=fbs", "gate.density=0.5", "regularizer=none"]],
)
def test_compare_gates_arms_compose(arm):
    # The commands of experiments/compare_gates: each arm is the preset plus gate overrides.
    cfg = compose_config("experiment=compare_gates", *arm)
    validate(cfg)
    assert cfg.dataset.name == "cifar10" and cfg.model.name == "densenet40"


@pytest.mark.parametrize(
    "override, message, cause",
    [
        ("regularizer.beta=abc", "Error merging override", "'abc' of type 'str' could not be converted to Float"),
        ("trainer.max_epochs=1.5", "Error merging override", "'1.5' of type 'float' could not be converted to Integer"),
        ("dataset.batch_size=many", "Error merging override", "'many' of type 'str' could not be converted to Integer"),
        ("gate.widht=3", "Could not override", "Key 'widht' not in 'GateConfig'"),
        ("seed=x", "Error merging override", "'x' of type 'str' could not be converted to Integer"),
    ],
)
def test_schema_rejects_wrong_types_and_unknown_keys(override, message, cause):
    with pytest.raises(ConfigCompositionException, match=re.escape(message)) as error:
        compose_config(override)
    assert override.split("=")[0] in str(error.value)
    assert cause in str(error.value.__cause__)  # Hydra prints the schema's reason under its own line


@pytest.mark.parametrize(
    "override, message",
    [
        ("regularizer.beta=-0.1", "regularizer.beta must be >= 0"),
        ("regularizer.minimum=120", "regularizer.minimum is a percentage"),
        ("regularizer.minimum=-1", "regularizer.minimum is a percentage"),
        ("model.name=resnet18", "model.name='resnet18' is not one of"),
        ("dataset.name=imagenet21k", "dataset.name='imagenet21k' is not one of"),
        ("gate.name=gumbel", "gate.name='gumbel' is not one of"),
        ("mode=serve", "mode='serve' is not one of"),
        ("mode=eval", "mode=eval needs ckpt_path"),
        ("loss=focal", "loss='focal' is not one of"),
        ("optimizer.lr=0", "optimizer.lr must be > 0"),
        ("optimizer.grouping_lr_scale=-0.1", "optimizer.grouping_lr_scale must be >= 0"),
        ("optimizer.grouping_weight_decay=-1", "optimizer.grouping_weight_decay must be >= 0"),
        ("dataset.batch_size=0", "dataset.batch_size must be >= 1"),
        ("dataset.val_split=1.0", "dataset.val_split must lie in [0, 1)"),
        ("dataset.subset=0", "dataset.subset must be >= 1"),
        ("trainer.max_epochs=0", "trainer.max_epochs must be >= 1"),
        ("trainer.device=tpu", "trainer.device='tpu' is not one of"),
        ("trainer.precision=fp8", "trainer.precision='fp8' is not one of"),
        ("scheduler.milestones=[0.5,2]", "scheduler.milestones are fractions"),
        ("gate.init_keep=1.0", "gate.init_keep must lie in (0, 1)"),
    ],
)
def test_bad_values_are_one_clear_error(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)) as error:
        validate(compose_config(override))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_bad_value_on_the_command_line_exits_before_writing(tmp_path):
    run_dir = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "run.py", *TINY, "regularizer.beta=-1", f"hydra.run.dir={run_dir}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert result.stderr.strip() == "error: regularizer.beta must be >= 0, got -1.0"
    assert not run_dir.exists()


def test_help_lists_the_groups():
    result = subprocess.run([sys.executable, "run.py", "--help"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0
    for group in [
        "model",
        "gate",
        "dataset",
        "optimizer",
        "scheduler",
        "regularizer",
        "trainer",
        "logger",
        "experiment",
    ]:
        assert f"{group}: " in result.stdout


def test_resolved_config_is_plain_data():
    cfg = compose_config(*TINY)
    container = OmegaConf.to_container(cfg, resolve=True)
    assert container["dataset"]["options"]["image_size"] == 8


def test_the_quick_start_runs_ungated_as_typed():
    # The ungated baselines of the digits studies: the preset's ACS gate options do not apply to gate=none.
    from acs.training.builders import build_model

    cfg = compose_config("experiment=quickstart", "gate=none", "regularizer=none")
    validate(cfg)
    model = build_model(cfg.model, cfg.gate, 10, 1)
    assert cfg.gate.width is None and all(layer.gate is None for block in model.blocks for layer in block)


DETACH = {"detach_input": True}  # the quick start's, for every design that reads its input


@pytest.mark.parametrize(
    "gate, expected",
    [
        ("acs", {"width": 16, "init_keep": 0.55, "conv": "dgconv", "estimator": "ste", "temperature": 1.0, **DETACH}),
        ("ddi", {"width": 16, "init_keep": 0.55, "estimator": "ste", "temperature": 1.0, **DETACH}),
        # its own estimator, the preset's width
        ("aig", {"width": 16, "init_keep": 0.55, "estimator": "gumbel", "temperature": 1.0, **DETACH}),
        ("fbs", {"density": 0.5, **DETACH}),  # no width, no init_keep: the preset's do not reach it
    ],
)
def test_a_presets_gate_options_reach_only_the_designs_that_have_them(gate, expected):
    cfg = compose_config("experiment=quickstart", f"gate={gate}")
    validate(cfg)
    options = {k: v for k, v in OmegaConf.to_container(cfg.gate, resolve=True).items() if v is not None}
    assert options == {"name": gate, **expected}


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["experiment=quickstart", "gate=fbs", "gate.width=8"], "gate 'fbs' has no option width; its options: density"),
        (
            ["+gate_preset.widht=8"],
            "gate_preset.widht is no gate's option; gate options: conv, density, detach_input, estimator",
        ),
    ],
)
def test_a_gate_option_typed_for_a_design_without_it_is_still_an_error(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate(compose_config(*overrides))


def test_a_typed_gate_option_wins_over_the_preset():
    cfg = compose_config("experiment=quickstart", "gate=ddi", "gate.width=8")
    assert (cfg.gate.width, cfg.gate.init_keep) == (8, 0.55)
