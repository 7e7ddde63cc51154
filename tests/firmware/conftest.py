"""Fixtures for the firmware tests: a real MicroPython (unix port, else the WebAssembly port) or a clean skip."""

from __future__ import annotations

import pytest
from micropython_runner import ENV, MicroPythonError, MicroPythonRunner, find_runner


def _runner() -> tuple[MicroPythonRunner | None, str]:
    try:
        return find_runner()
    except MicroPythonError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="session")
def mpy() -> MicroPythonRunner:
    """Any MicroPython that can run compute-only scripts (codec, quantization, training)."""
    runner, reason = _runner()
    if runner is None:
        pytest.skip(reason)
    return runner


@pytest.fixture(scope="session")
def mpy_unix() -> MicroPythonRunner:
    """The unix-port MicroPython from ``IOTFL_MICROPYTHON``: sockets, heap caps, a real process."""
    runner, reason = _runner()
    if runner is None or runner.kind != "unix":
        reason = reason or f"{ENV} is unset: only the WebAssembly port is here"
        pytest.skip(f"needs the unix MicroPython via {ENV} (sockets, heap figures); {reason}")
    return runner
