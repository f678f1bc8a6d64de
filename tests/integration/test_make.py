"""The Makefile's environment rules (issue 36): .venv by default, an activated conda environment (not base) used as
it is, and `make lab` starting as root, the usual case in containers and cloud notebooks."""
from __future__ import annotations

import os
import subprocess

from cmr_lib.core.paths import repo_root


def _dry(target, **env):
    full = {k: v for k, v in os.environ.items() if not k.startswith("CONDA_")}
    full.update(env)
    run = subprocess.run(["make", "-n", "-C", str(repo_root()), target, "-W", "pyproject.toml"], capture_output=True,
                         text=True, env=full, timeout=60)
    assert run.returncode == 0, run.stderr
    return run.stdout


def test_make_installs_into_an_activated_conda_environment_and_otherwise_into_venv(tmp_path):
    conda = _dry("venv", CONDA_PREFIX=str(tmp_path / "env"), CONDA_DEFAULT_ENV="cmr-stylize")
    assert f"{tmp_path / 'env'}/bin/python -m pip install" in conda and ".venv" not in conda
    base = _dry("venv", CONDA_PREFIX=str(tmp_path / "base"), CONDA_DEFAULT_ENV="base")
    assert ".venv/bin/python -m pip install" in base and str(tmp_path) not in base
    assert ".venv/bin/python -m pip install" in _dry("venv")


def test_make_lab_starts_as_root_only_when_root():
    line = [ln for ln in _dry("lab").splitlines() if "jupyter lab" in ln][0]
    assert ("--allow-root" in line) == (os.geteuid() == 0)
