"""The ``iotfl`` command: help, and one clear line (exit code 2) instead of a traceback for bad input."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from iotfl.broker import free_port
from iotfl.cli import app

runner = CliRunner()


def test_help_lists_every_command() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("demo", "broker", "cloud", "gateway", "fleet", "status"):
        assert command in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["gateway"], "id is required (--id or IOTFL_ID); token is required (--token or IOTFL_TOKEN)"),
        (["gateway", "--id", "gw/0", "--token", "t"], "gw/0"),
        (["gateway", "--id", "gw0", "--token", "t", "--broker", "http://h"], "must start with mqtt://"),
        (["cloud", "--gateway-token", "gw0"], "gw0=SECRET"),
        (["demo", "--dataset", "mnist"], "unknown dataset 'mnist'"),
        (["fleet", "--dataset", "csv:/nonexistent.csv"], "cannot read /nonexistent.csv"),
        (["demo", "--sim", "batched", "--attack", "sign-flip:10%"], "--sim batched does not simulate attacks"),
        (["fleet", "--sim", "batched", "--dp-clip", "1"], "sim=batched does not simulate dp_clip"),
        (["fleet", "--sim", "vectorized"], "sim"),
        (["demo", "--energy-policy", "greedy"], "energy_policy: Input should be 'off', 'naive' or 'aware'"),
    ],
)
def test_bad_input_is_one_clear_error(args: list[str], message: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("IOTFL_TOKEN", "IOTFL_ID", "IOTFL_BROKER", "IOTFL_GATEWAY_TOKENS"):
        monkeypatch.delenv(name, raising=False)
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "error:" in result.output and message in " ".join(result.output.split())
    assert "Traceback" not in result.output


def test_config_file_errors_are_reported(tmp_path: Path) -> None:
    broken = tmp_path / "iotfl.toml"
    broken.write_text("[gateway\n")
    result = runner.invoke(app, ["gateway", "--config", str(broken)])
    assert result.exit_code == 2 and "cannot read config file" in result.output


def test_status_of_an_unreachable_cloud_exits_1() -> None:
    result = runner.invoke(app, ["status", "--cloud", f"http://127.0.0.1:{free_port()}"])
    assert result.exit_code == 1 and "cannot read" in result.output


def test_version_is_the_installed_one() -> None:
    from importlib.metadata import version

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"iotfl {version('iotfl')}"


def all_commands() -> list[list[str]]:
    """The path of every command and group: ["demo"], ["provision", "fleet"], …"""
    import typer.main

    paths: list[list[str]] = []

    def walk(command: Any, path: list[str]) -> None:
        paths.append(path)
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, [*path, name])

    walk(typer.main.get_command(app), [])
    return paths


@pytest.mark.parametrize("path", all_commands(), ids=lambda p: " ".join(p) or "iotfl")
def test_every_command_explains_itself(path: list[str]) -> None:
    result = runner.invoke(app, [*path, "--help"], terminal_width=120)
    assert result.exit_code == 0, result.output
    # rich help: a usage line, a description paragraph and boxed option panels
    assert "Usage:" in result.output and "╭─ Options" in result.output
    usage_and_text = [line for line in result.output.splitlines() if line.strip() and "─" not in line]
    assert len(usage_and_text) >= 2, result.output


def test_config_file_from_the_environment_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("IOTFL_TOKEN", "IOTFL_ID"):
        monkeypatch.delenv(name, raising=False)
    config = tmp_path / "site.toml"
    config.write_text('[gateway]\nid = "gw/bad"\ntoken = "t"\n')
    result = runner.invoke(app, ["gateway"], env={"IOTFL_CONFIG": str(config)})
    assert result.exit_code == 2 and "gw/bad" in result.output


def test_usage_errors_exit_2_like_clicks_own() -> None:
    assert runner.invoke(app, ["gateway", "--no-such-flag"]).exit_code == 2
    assert runner.invoke(app, ["no-such-command"]).exit_code == 2


def test_shell_completion_completes_commands_and_flags() -> None:
    # what the script of `iotfl --install-completion bash` runs on every <TAB>
    beside = Path(sys.executable).parent / "iotfl"  # this environment's, not another one on PATH
    exe = str(beside) if beside.is_file() else shutil.which("iotfl") or "iotfl"
    script = subprocess.run([exe, "--show-completion", "bash"], capture_output=True, text=True, timeout=60)
    assert script.returncode == 0 and "_IOTFL_COMPLETE=complete_bash" in script.stdout

    def complete(words: str) -> list[str]:
        env = {**os.environ, "_IOTFL_COMPLETE": "complete_bash", "COMP_WORDS": words}
        env["COMP_CWORD"] = str(len(words.split()) - 1)
        done = subprocess.run([exe], capture_output=True, text=True, env=env, timeout=60)
        return done.stdout.split()

    assert complete("iotfl gat") == ["gateway"]
    assert set(complete("iotfl gateway --broker")) == {"--broker", "--broker-ca"}
    assert complete("iotfl provision fl") == ["fleet"]
