"""Provenance: the commit, packages, host and device that produced a run, in its summary and W&B config."""

import json
import subprocess
from importlib import metadata

import torch
from helpers import REPO, compose_config

import acs.training.runner as runner
from acs import provenance
from acs.reporting import RunLogger
from acs.training.app import execute

KEYS = {"git_commit", "git_dirty", "versions", "host", "device_name"}
PACKAGES = {"python", "torch", "torchvision", "hydra-core", "wandb"}


def _git(folder, *args):
    command = ["git", "-C", str(folder), "-c", "user.name=t", "-c", "user.email=t@t", *args]
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip()


def test_provenance_names_commit_packages_host_and_cpu():
    found = provenance.collect(torch.device("cpu"))
    assert set(found) == KEYS and set(found["versions"]) == PACKAGES
    assert found["versions"]["torch"] == metadata.version("torch")
    assert found["device_name"] and found["host"]
    if (REPO / ".git").exists():  # the tests run from a checkout: acs's own commit
        assert found["git_commit"] == _git(REPO, "rev-parse", "HEAD")
        assert isinstance(found["git_dirty"], bool)


def test_git_state_commit_and_dirty_of_a_checkout(tmp_path):
    code = tmp_path / "repo" / "pkg"
    code.mkdir(parents=True)
    (code / "__init__.py").write_text("x = 1\n")
    _git(tmp_path / "repo", "init", "-q")
    _git(tmp_path / "repo", "add", ".")
    _git(tmp_path / "repo", "commit", "-qm", "c")
    head = _git(tmp_path / "repo", "rev-parse", "HEAD")
    (tmp_path / "repo" / "outputs.txt").write_text("untracked: not a change to the code\n")
    assert provenance.git_state(code) == {"git_commit": head, "git_dirty": False}
    (code / "__init__.py").write_text("x = 2\n")
    assert provenance.git_state(code) == {"git_commit": head, "git_dirty": True}


def test_git_state_unknown_outside_a_checkout_or_without_git(tmp_path, monkeypatch):
    assert provenance.git_state(tmp_path) == {"git_commit": None, "git_dirty": None}
    # A copy of the package inside an ignored folder of another repository is not that repository's code.
    _git(tmp_path, "init", "-q")
    (tmp_path / ".gitignore").write_text("venv/\n")
    _git(tmp_path, "add", ".gitignore")
    _git(tmp_path, "commit", "-qm", "c")
    copy = tmp_path / "venv" / "acs"
    copy.mkdir(parents=True)
    (copy / "__init__.py").write_text("")
    assert provenance.git_state(copy) == {"git_commit": None, "git_dirty": None}
    monkeypatch.setenv("PATH", str(tmp_path / "no-git-here"))
    assert provenance.git_state(REPO / "acs") == {"git_commit": None, "git_dirty": None}


def test_package_not_installed_is_none():
    assert provenance.package_version("surely-no-such-package-acs") is None


def test_run_outside_a_git_checkout_records_provenance(tmp_path, tiny_overrides, monkeypatch):
    monkeypatch.setattr(provenance, "SOURCE", tmp_path / "code")  # the code, as if copied out of its checkout
    (tmp_path / "code").mkdir()
    sent = {}

    def logger(name, options, run_dir, config, **kwargs):
        sent.update(config)
        return RunLogger()

    monkeypatch.setattr(runner, "create_logger", logger)
    overrides = [*tiny_overrides, "trainer.max_epochs=1"]
    execute(compose_config(*overrides), str(tmp_path / "run"), overrides)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    for record in (summary["provenance"], sent["provenance"]):  # summary.json and the W&B config
        assert set(record) == KEYS and set(record["versions"]) == PACKAGES
        assert record["git_commit"] is None and record["git_dirty"] is None
        assert record["device_name"] == provenance.cpu_model()
    assert sent["model"]["name"] == "densenet40"  # the run's config, with the provenance beside it

    best = tmp_path / "run" / "checkpoints" / "best.pt"
    execute(compose_config("mode=eval", f"ckpt_path={best}", "logger=none", "trainer=cpu"), str(tmp_path / "eval"), [])
    evaluation = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert evaluation["provenance"] == summary["provenance"]
