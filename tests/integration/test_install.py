"""A plain ``pip install .`` (no extras) gives a gateway and a cloud CLI that work without torch."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration


def test_plain_install_has_gateway_and_cloud_help_without_torch(tmp_path: Path) -> None:
    # build from a clean copy: an in-tree build/ left by an earlier install would be packaged instead
    source = tmp_path / "src"
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(".venv", "build", "*.egg-info", ".git", "tests", "__pycache__", ".*_cache"),
    )
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", str(source)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    assert pip.returncode == 0, pip.stderr[-3000:]
    python = str(venv / "bin" / "python")
    probe = subprocess.run(
        [python, "-c", "import importlib.util as u; print(u.find_spec('torch'))"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert probe.stdout.strip() == "None"
    for command in ("gateway", "cloud"):
        shown = subprocess.run(
            [str(venv / "bin" / "iotfl"), command, "--help"], capture_output=True, text=True, timeout=60, cwd=tmp_path
        )
        assert shown.returncode == 0, shown.stderr
        assert "IOTFL_" in shown.stdout
        assert ("--broker" if command == "gateway" else "--db") in shown.stdout
    # the gateway's modules import on the light install (no torch, no FastAPI)
    shipped = subprocess.run(
        [python, "-c", "from iotfl.flash import firmware_dir; print(firmware_dir())"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert shipped.returncode == 0, shipped.stderr
    assert (Path(shipped.stdout.strip()) / "main.py").is_file() and "site-packages" in shipped.stdout
    imported = subprocess.run(
        [python, "-c", "import gateway.service, gateway.settings, flcore; print('ok')"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert imported.stdout.strip() == "ok", imported.stderr
