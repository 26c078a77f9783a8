"""The package as a user installs it: a built wheel holds every module and works outside the checkout."""
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from helpers import REPO


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from a copy of the source (the checkout stays free of build folders), offline."""
    source = tmp_path_factory.mktemp("source")
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "acs", source / "acs", ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("wheel")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation", "-q", "-w", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    (built,) = out.glob("acs-*.whl")
    return built


def test_wheel_holds_every_source_file(wheel):
    source = {
        path.relative_to(REPO).as_posix()
        for path in (REPO / "acs").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    with zipfile.ZipFile(wheel) as archive:
        packaged = {name for name in archive.namelist() if name.startswith("acs/")}
    assert "acs/deploy/native/executor.cpp" in packaged
    assert packaged == source


def test_installed_wheel_imports_every_module_outside_the_checkout(wheel, tmp_path):
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    script = (
        "import importlib, pkgutil, acs\n"
        f"assert acs.__file__.startswith({str(site)!r}), acs.__file__\n"
        "names = [m.name for m in pkgutil.walk_packages(acs.__path__, 'acs.')]\n"
        "for name in names: importlib.import_module(name)\n"
        "print(len(names))\n"
    )
    # Run from an empty folder with only the installed copy on the path: the checkout is invisible.
    env = {**os.environ, "PYTHONPATH": str(site)}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) >= 60  # every module of acs/, the subpackages included
