"""The round mode: `sync` by default, `async` from settings, the environment or `iotfl cloud --mode`, served as an
optional key of rounds/current that old gateways ignore and ours reads."""

from __future__ import annotations

import pytest
from cloud_client import Cloud
from conftest import StartCloud
from pydantic import ValidationError
from typer.testing import CliRunner

from cloud.settings import CloudSettings
from gateway.cloud_client import RoundInfo
from iotfl.cli import app


def test_default_is_sync(cloud: Cloud) -> None:
    assert CloudSettings().mode == "sync"
    body = cloud.http.get("/api/v1/rounds/current").json()
    assert body["mode"] == "sync" and RoundInfo.from_json(body).mode == "sync"


def test_async_is_served_to_gateways(start_cloud: StartCloud) -> None:
    body = start_cloud(mode="async").http.get("/api/v1/rounds/current").json()
    assert body["mode"] == "async" and body["state"] == "open"
    assert RoundInfo.from_json(body).mode == "async"


def test_gateways_read_a_missing_or_unknown_mode_as_sync(cloud: Cloud) -> None:
    body = cloud.http.get("/api/v1/rounds/current").json()
    assert RoundInfo.from_json({k: v for k, v in body.items() if k != "mode"}).mode == "sync"
    assert RoundInfo.from_json({**body, "mode": "eventual"}).mode == "sync"


def test_mode_from_the_environment_and_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IOTFL_MODE", "async")
    assert CloudSettings().mode == "async"
    with pytest.raises(ValidationError, match="mode"):
        CloudSettings(mode="eventual")


def test_cli_refuses_an_unknown_mode() -> None:
    result = CliRunner().invoke(app, ["cloud", "--mode", "eventual", "--rounds", "1"])
    assert result.exit_code != 0 and "mode" in result.output
