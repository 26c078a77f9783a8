"""RunLogger / create_logger: offline W&B runs, resume, mode rule, failure handling.

Only two real (offline) W&B runs are started; everything else uses a fake ``wandb.init``.
wandb 0.31 writes no files/config.yaml or wandb-summary.json offline: everything is in the
run's ``run-<id>.wandb`` transaction log, which ``_read_records`` decodes.
"""
import json
import struct
import time
from pathlib import Path

import pytest

wandb = pytest.importorskip("wandb")
from wandb.proto import wandb_internal_pb2 as pb  # noqa: E402

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


def _read_records(path: Path) -> list:
    """Decode a .wandb file: ':W&B' header (7 bytes), then LevelDB-log chunks in 32 KiB blocks."""
    data = path.read_bytes()
    assert len(data) < 7 or data[:4] == b":W&B"  # an empty file is one not flushed yet
    pos, block, buf, records = 7, 32768, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # block trailer too short for a chunk header: padding
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if (length == 0 and kind == 0) or pos + 7 + length > len(data):  # end, or still being written
            break
        buf += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST chunk: a whole record
            record = pb.Record()
            record.ParseFromString(buf)
            records.append(record)
            buf = b""
    return records


def _finished_records(root: Path, run_id: str) -> list:
    """Records of the run's .wandb file once complete: wandb-core flushes it shortly *after*
    run.finish() returns (when the stream closes), so wait for the exit record."""
    files = list((root / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb"))
    assert len(files) == 1, list((root / "wandb").glob("*"))
    deadline = time.monotonic() + 20
    while True:
        records = _read_records(files[0])
        if _of(records, "exit") or time.monotonic() > deadline:
            return records
        time.sleep(0.05)


def _of(records, kind):
    return [getattr(r, kind) for r in records if r.WhichOneof("record_type") == kind]


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
    records = _finished_records(root, run_id)
    (run,) = _of(records, "run")
    assert run.run_id == run_id and run.project == "acs" and run.run_group == "g" and run.job_type == "train"
    config = {u.key: json.loads(u.value_json) for u in run.config.update}
    assert config["a"] == 1 and config["nested"] == {"b": 2}
    steps = [json.loads(i.value_json) for h in _of(records, "history") for i in h.item if i.nested_key == ["_step"]]
    losses = [json.loads(i.value_json) for h in _of(records, "history") for i in h.item if i.nested_key == ["loss"]]
    assert steps == [0, 1] and losses == [1.0, 0.5]
    summary = {u.key: json.loads(u.value_json) for s in _of(records, "summary") for u in s.update if u.key}
    assert summary["acc"] == 91.5
    assert [e.exit_code for e in _of(records, "exit")] == [0]


def test_resume_continues_run_and_context_manager_marks_failure(first_run, tmp_path):
    _, run_id = first_run
    with pytest.raises(RuntimeError, match="boom"):
        with create_logger("wandb", {"mode": "offline"}, tmp_path, config={"a": 1}, resume_id=run_id) as logger:
            assert logger.run_id == run_id
            logger.log_metrics({"loss": 0.25}, step=2)
            raise RuntimeError("boom")
    records = _finished_records(tmp_path, run_id)
    assert _of(records, "run")[0].run_id == run_id
    steps = [json.loads(i.value_json) for h in _of(records, "history") for i in h.item if i.nested_key == ["_step"]]
    assert steps == [2]
    assert [e.exit_code for e in _of(records, "exit")] == [1]


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
        self._fail_log = fail_log

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
