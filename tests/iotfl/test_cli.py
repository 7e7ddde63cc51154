"""The ``iotfl`` command: help, and one clear line (exit code 2) instead of a traceback for bad input."""

from __future__ import annotations

from pathlib import Path

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
