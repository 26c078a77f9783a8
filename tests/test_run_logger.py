"""RunLogger / create_logger: offline W&B runs, resume, mode rule, failure handling.

Only two real (offline) W&B runs are started; everything else uses a fake ``wandb.init``.
wandb 0.31 writes no files/config.yaml or wandb-summary.json offline: everything is in the
run's ``run-<id>.wandb`` transaction log, which ``helpers.wandb_records`` decodes.
"""
import json
from pathlib import Path

import pytest
from helpers import finished_wandb_records, records_of, wandb_history

wandb = pytest.importorskip("wandb")

from acs.reporting import RunLogger, create_logger  # noqa: E402

_WANDB_ENV = {
    "WANDB_SILENT": "true",
    "WANDB_CONSOLE": "off",
    "WANDB_DISABLE_GIT": "true",
    "WANDB_DISABLE_CODE": "true",
    "WANDB_ERROR_REPORTING": "false",
}


def _hermetic_env(mp: pytest.MonkeyPatch, home: Path) -> None:
    for key, value in _WANDB_ENV.items():
        mp.setenv(key, value)
    for key in ("CONFIG", "CACHE", "DATA", "ARTIFACT"):
        mp.setenv(f"WANDB_{key}_DIR", str(home / key.lower()))
    for key in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_BASE_URL", "WANDB_RUN_ID", "WANDB_RESUME", "WANDB_PROJECT"):
        mp.delenv(key, raising=False)


@pytest.fixture(autouse=True)
def _env(monkeypatch, tmp_path_factory):
    _hermetic_env(monkeypatch, tmp_path_factory.mktemp("wandb_home"))


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    """One real offline run, shared by the offline and resume tests to keep W&B starts down."""
    root = tmp_path_factory.mktemp("run1")
    with pytest.MonkeyPatch.context() as mp:
        _hermetic_env(mp, tmp_path_factory.mktemp("wandb_home"))
        logger = create_logger("wandb", {}, root, config={"a": 1, "nested": {"b": 2}}, group="g")
        logger.log_metrics({"loss": 1.0}, step=0)
        logger.log_metrics({"loss": 0.5}, step=1)
        logger.log_summary({"acc": 91.5})
        logger.finish()
        logger.finish()  # idempotent
    return root, logger.run_id


def test_offline_run_writes_config_history_summary(first_run):
    root, run_id = first_run
    assert isinstance(run_id, str) and run_id
    records = finished_wandb_records(root, run_id)
    (run,) = records_of(records, "run")
    assert run.run_id == run_id and run.project == "acs" and run.run_group == "g" and run.job_type == "train"
    config = {u.key: json.loads(u.value_json) for u in run.config.update}
    assert config["a"] == 1 and config["nested"] == {"b": 2}
    steps, losses = wandb_history(records, "_step"), wandb_history(records, "loss")
    assert steps == [0, 1] and losses == [1.0, 0.5]
    summary = {u.key: json.loads(u.value_json) for s in records_of(records, "summary") for u in s.update if u.key}
    assert summary["acc"] == 91.5
    assert [e.exit_code for e in records_of(records, "exit")] == [0]


def test_resume_continues_run_and_context_manager_marks_failure(first_run, tmp_path):
    _, run_id = first_run
    with pytest.raises(RuntimeError, match="boom"):
        with create_logger("wandb", {"mode": "offline"}, tmp_path, config={"a": 1}, resume_id=run_id) as logger:
            assert logger.run_id == run_id
            logger.log_metrics({"loss": 0.25}, step=2)
            raise RuntimeError("boom")
    records = finished_wandb_records(tmp_path, run_id)
    assert records_of(records, "run")[0].run_id == run_id
    assert wandb_history(records, "_step") == [2]
    assert [e.exit_code for e in records_of(records, "exit")] == [1]


def test_none_writes_nothing_and_unknown_name_fails(tmp_path):
    with create_logger("none", {}, tmp_path, config={"a": 1}) as logger:
        assert type(logger) is RunLogger and logger.run_id is None
        logger.log_metrics({"loss": 1.0}, step=0)
        logger.log_summary({"acc": 1.0})
    logger.finish()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="none, wandb"):
        create_logger("tensorboard", {}, tmp_path, config={})


class _FakeRun:
    def __init__(self, fail_log: bool = False):
        self.id, self.summary, self.logged, self.finished = "fake123", {}, [], []
        self.defined = []
        self._fail_log = fail_log

    def define_metric(self, name, **options):
        self.defined.append((name, options))

    def log(self, data, step=None):
        if self._fail_log:
            raise OSError("disk full")
        self.logged.append((data, step))

    def finish(self, exit_code=None):
        self.finished.append(exit_code)


@pytest.fixture
def fake_init(monkeypatch):
    calls, runs = [], []

    def init(**kwargs):
        calls.append(kwargs)
        runs.append(_FakeRun(fail_log=kwargs.get("notes") == "fail-log"))
        return runs[-1]

    monkeypatch.setattr(wandb, "init", init)
    return calls, runs


def test_mode_rule(monkeypatch, tmp_path, fake_init):
    calls, _ = fake_init
    monkeypatch.setenv("WANDB_MODE", "disabled")
    logger = create_logger("wandb", {}, tmp_path, config={})
    assert type(logger) is RunLogger and logger.run_id is None and calls == []
    assert list(tmp_path.iterdir()) == []
    create_logger("wandb", {"mode": "offline"}, tmp_path, config={}).finish()  # explicit beats env
    monkeypatch.setenv("WANDB_MODE", "online")
    create_logger("wandb", {"mode": None}, tmp_path, config={}).finish()  # None = not given
    monkeypatch.delenv("WANDB_MODE")
    create_logger("wandb", {}, tmp_path, config={}).finish()  # default
    assert [c["mode"] for c in calls] == ["offline", "online", "offline"]
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert type(create_logger("wandb", {"mode": "disabled"}, tmp_path, config={})) is RunLogger
    with pytest.raises(ValueError, match="not one of"):
        create_logger("wandb", {"mode": "dryrun"}, tmp_path, config={})


def test_init_arguments(tmp_path, fake_init):
    calls, runs = fake_init
    options = {"project": "p", "entity": "e", "tags": ["x"], "notes": "n"}
    logger = create_logger("wandb", options, tmp_path, config={"a": 1}, group="sweep", resume_id="abc", run_name="job3")
    logger.log_metrics({"loss": 2.0}, step=7)
    logger.log_summary({"acc": 50.0})
    assert runs[0].logged == [({"loss": 2.0}, 7)] and runs[0].summary == {"acc": 50.0}
    (kw,) = calls
    assert kw["dir"] == str(tmp_path) and kw["config"] == {"a": 1} and kw["group"] == "sweep"
    assert (kw["id"], kw["resume"], kw["name"], kw["job_type"]) == ("abc", "allow", "job3", "train")
    assert (kw["project"], kw["entity"], kw["tags"], kw["notes"]) == ("p", "e", ["x"], "n")
    assert kw["reinit"] == "create_new"


def test_group_and_name_options(tmp_path, fake_init):
    calls, _ = fake_init
    # A single run joins the group it is given (a sweep's baseline) under the name it is given.
    options = {"group": "2026-12-02/10-00-00", "name": "baseline"}
    create_logger("wandb", options, tmp_path, config={}, run_name="gate=none")
    # A sweep's group is the sweep folder unless the options name one; a given name prefixes each job's.
    create_logger("wandb", {"name": "study"}, tmp_path, config={}, group="d/t", run_name="beta=3, seed=1")
    create_logger("wandb", {"group": "mine"}, tmp_path, config={}, group="d/t", run_name="beta=3, seed=1")
    assert [(c["group"], c["name"]) for c in calls] == [
        ("2026-12-02/10-00-00", "baseline"), ("d/t", "study: beta=3, seed=1"), ("mine", "beta=3, seed=1"),
    ]  # fmt: skip


def test_training_runs_define_epoch_as_x_axis_and_summaries(tmp_path, fake_init):
    _, runs = fake_init
    create_logger("wandb", {}, tmp_path, config={})
    defined = dict(runs[0].defined)
    assert list(defined)[:2] == ["epoch", "*"] and defined["*"] == {"step_metric": "epoch"}
    assert defined["val/acc1"] == defined["test/acc5"] == {"summary": "max,last"}
    assert defined["train/loss"] == {"summary": "min,last"}
    assert defined["test/keep/*"] == {"step_metric": "epoch", "hidden": True}
    # Other runs log no history: a sweep summary or an evaluation defines nothing.
    create_logger("wandb", {}, tmp_path, config={}, job_type="eval")
    assert runs[1].defined == []


def test_finish_once_with_exit_code(tmp_path, fake_init):
    _, runs = fake_init
    with pytest.raises(KeyError, match="'x'"):
        with create_logger("wandb", {}, tmp_path, config={}) as logger:
            raise KeyError("x")
    logger.finish(0)
    assert runs[0].finished == [1]
    with create_logger("wandb", {}, tmp_path, config={}):
        pass
    assert runs[1].finished == [0]


def _our_warnings(caplog) -> list:
    return [r.getMessage() for r in caplog.records if r.name == "acs.reporting.run_logger" and r.levelname == "WARNING"]


def test_init_failure_is_a_warning(monkeypatch, tmp_path, caplog):
    def broken(**kwargs):
        raise wandb.errors.UsageError("api_key not configured (no-tty)\nsecond line")

    monkeypatch.setattr(wandb, "init", broken)
    with caplog.at_level("WARNING"):
        logger = create_logger("wandb", {"mode": "online"}, tmp_path, config={})
    assert type(logger) is RunLogger and logger.run_id is None
    (message,) = _our_warnings(caplog)
    assert "W&B init failed" in message and "UsageError" in message and "\n" not in message
    logger.log_metrics({"loss": 1.0}, step=0)
    logger.finish(0)
    logger.finish(0)


def test_log_failure_is_a_warning_and_run_still_finishes(tmp_path, fake_init, caplog):
    _, runs = fake_init
    logger = create_logger("wandb", {"notes": "fail-log"}, tmp_path, config={})
    with caplog.at_level("WARNING"):
        for step in range(3):
            logger.log_metrics({"loss": 1.0}, step=step)
    (message,) = _our_warnings(caplog)
    assert "W&B log failed" in message and "OSError: disk full" in message
    logger.finish(0)
    assert runs[0].finished == [0]
