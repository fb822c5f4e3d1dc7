"""The installed command: packaging metadata, the wheel's contents, and ``hetfedlora`` from an installed copy."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from sweeps.cli import main as cli_main
from sweeps.spec import available_presets

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "workers", "orchestrator", "analysis", "sweeps")


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_pyproject_dependencies_are_the_runtime_pins_of_requirements_txt():
    runtime = (REPO / "requirements.txt").read_text().split("# Development")[0]
    pins = dict(re.findall(r"^([A-Za-z0-9_.\-\[\],]+)==([^\s#]+)", runtime, flags=re.M))
    declared = dict(re.match(r"([A-Za-z0-9_.\-\[\],]+)>=(.+)", d).groups() for d in _pyproject()["project"]
                    ["dependencies"])
    assert declared == pins
    assert _pyproject()["project"]["scripts"] == {"hetfedlora": "sweeps.cli:main"}


def test_cli_subcommands_are_the_module_entry_points(capsys):
    from orchestrator.run import main as run_main

    assert cli_main(["run", "--print-config", "--set", "rounds=3"]) == 0
    via_cli = capsys.readouterr().out
    assert run_main(["--print-config", "--set", "rounds=3"]) == 0
    assert via_cli == capsys.readouterr().out and "rounds: 3" in via_cli
    assert cli_main(["presets"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in listed] == available_presets()
    assert cli_main(["presets", "quick"]) == 0
    assert "axes:" in capsys.readouterr().out
    assert cli_main(["presets", "quik"]) == 2
    assert "did you mean 'quick'" in capsys.readouterr().err
    assert cli_main(["swep"]) == 2
    assert "unknown command 'swep'" in capsys.readouterr().err
    assert cli_main(["sweep", "--preset", "nope", "--out", "x"]) == 2  # sweeps.run's own check
    assert "unknown preset 'nope'" in capsys.readouterr().err


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kw)


@pytest.mark.slow
def test_wheel_holds_the_presets_and_an_installed_copy_runs_hetfedlora(tmp_path):
    """``pip wheel`` of the project's files only; installed (not editable) outside the repo, the command works."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    for pkg in PACKAGES:
        shutil.copytree(REPO / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    built = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                  str(tmp_path / "dist"), str(src)])
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "dist").glob("hetfedlora-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"sweeps/presets/{p}.yaml" for p in available_presets()} <= names
    assert {f"{pkg}/__init__.py" for pkg in PACKAGES} <= names
    assert "orchestrator/methods/fedplora.py" in names and not any(n.startswith("tests/") for n in names)
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "hetfedlora = sweeps.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()

    site = tmp_path / "site"
    installed = _run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target",
                      str(site), str(wheel)])
    assert installed.returncode == 0, installed.stderr
    env = {**os.environ, "PYTHONPATH": str(site)}
    exe = [str(site / "bin" / "hetfedlora")]
    outside = tmp_path  # not the repo: the code and the presets come from the installed copy
    where = _run([sys.executable, "-c", "import sweeps.spec as s; print(s.PRESET_DIR)"], env=env, cwd=outside)
    assert Path(where.stdout.strip()) == (site / "sweeps" / "presets").resolve()
    presets = _run(exe + ["presets"], env=env, cwd=outside)
    assert presets.returncode == 0, presets.stderr
    assert [line.split()[0] for line in presets.stdout.splitlines()] == available_presets()
    helped = _run(exe + ["run", "--help"], env=env, cwd=outside)
    assert helped.returncode == 0 and "--log" in helped.stdout, helped.stderr


def test_the_environments_hetfedlora_command_when_installed():
    """``quickstart.sh setup`` installs the project (``pip install --no-deps -e .``): ``.venv/bin/hetfedlora``."""
    exe = Path(sys.executable).parent / "hetfedlora"
    if not exe.is_file():
        pytest.skip("the project is not installed in this environment (pip install --no-deps -e .)")
    presets = _run([str(exe), "presets"], cwd=REPO)
    assert presets.returncode == 0 and "quick" in presets.stdout.split()
    helped = _run([str(exe), "run", "--help"], cwd=REPO)
    assert helped.returncode == 0 and "--resume" in helped.stdout
