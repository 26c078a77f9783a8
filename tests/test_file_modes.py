"""Files the platform writes are readable by colleagues: they follow the umask like any open()."""
import os
import stat

import pytest
from helpers import compose_config

from acs.files import atomic_write
from acs.reporting import write_report
from acs.training.app import execute


@pytest.fixture
def umask():
    """Sets the process umask for one test and restores it after."""
    previous = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(previous)


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_atomic_write_follows_the_umask(tmp_path, umask, mask, expected):
    umask(mask)
    atomic_write(tmp_path / "out.json", lambda file: file.write(b"{}"))
    assert mode(tmp_path / "out.json") == expected
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]  # no temporary file left beside it


def test_run_folder_and_sweep_report_are_readable_by_others(tmp_path, umask, tiny_overrides):
    run_dir = tmp_path / "sweep" / "0"
    overrides = [*tiny_overrides, "trainer.max_epochs=1"]
    execute(compose_config(*overrides), str(run_dir), overrides)
    write_report(tmp_path / "sweep")
    written = [p for p in (tmp_path / "sweep").rglob("*") if p.is_file()]
    names = {p.relative_to(tmp_path / "sweep").as_posix() for p in written}
    assert {
        "0/summary.json",
        "0/metrics.jsonl",
        "0/checkpoints/last.pt",
        "0/checkpoints/best.pt",
        "results.csv",
        "results.md",
        "pareto.png",
    } <= names
    assert {p.relative_to(tmp_path).as_posix(): oct(mode(p)) for p in written} == {
        p.relative_to(tmp_path).as_posix(): oct(0o644) for p in written
    }
