"""One ``iotfl demo`` in a subprocess for the benchmarks that compare whole runs (poisoning, bytes, batched)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


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


def run_report(options: list[str], name: str, logs: Path, timeout: float) -> tuple[dict[str, Any] | None, str | None]:
    """``run_demo`` with ``--json logs/NAME.json`` (log in ``logs/NAME.log``): the demo's report, or None and why."""
    report = logs / f"{name}.json"
    report.unlink(missing_ok=True)
    code = run_demo([*options, "--json", str(report)], logs / f"{name}.log", timeout)
    if code != 0 or not report.exists():
        return None, f"demo exited with {code}" if code != -1 else f"timed out after {timeout:.0f} s"
    return json.loads(report.read_text()), None


def comma_list(value: str, convert: Callable[[str], T], option: str) -> list[T]:
    """The distinct items of a comma-separated option, converted; a typer ``BadParameter`` naming ``option`` when
    one does not convert or none is given."""
    import typer

    try:
        items = list(dict.fromkeys(convert(v.strip()) for v in value.split(",") if v.strip()))
    except ValueError as exc:
        raise typer.BadParameter(f"{option}: {exc}") from None
    if not items:
        raise typer.BadParameter(f"{option} needs at least one value")
    return items


__all__ = ["comma_list", "demo_env", "run_demo", "run_report"]
