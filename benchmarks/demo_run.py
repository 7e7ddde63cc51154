"""One ``iotfl demo`` in a subprocess for the benchmarks that compare whole runs (poisoning, bytes, batched)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path


def demo_env(**extra: str) -> dict[str, str]:
    """The environment without any ``IOTFL_*`` left in the shell (a benchmark sets every option it varies)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOTFL_")}
    env.update(extra)
    return env


def run_demo(
    options: list[str],
    log: Path,
    timeout: float,
    env: dict[str, str] | None = None,
    on_workdir: Callable[[Path], None] | None = None,
) -> int:
    """``python -m iotfl demo OPTIONS`` in a fresh workdir with its output in ``log``; its exit code, -1 when it ran
    past ``timeout`` seconds. ``on_workdir`` reads the workdir (its logs) before it is removed."""
    with open(log, "wb") as out, tempfile.TemporaryDirectory(prefix="iotfl-bench-") as workdir:
        argv = [sys.executable, "-m", "iotfl", "demo", *options, "--workdir", workdir]
        try:
            code = subprocess.run(
                argv, stdout=out, stderr=subprocess.STDOUT, env=demo_env() if env is None else env, timeout=timeout
            ).returncode
        except subprocess.TimeoutExpired:
            code = -1
        if on_workdir is not None:
            on_workdir(Path(workdir))
    return code


__all__ = ["demo_env", "run_demo"]
