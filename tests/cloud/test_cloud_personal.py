"""Personalization at the cloud: ``personal`` in rounds/current from the setting, the gateways' ``pers`` sums
stored per aggregate, and each closed round's mean local accuracies in its view and the status history."""

from __future__ import annotations

import pytest
from cloud_client import Cloud
from rich.console import Console
from typer.testing import CliRunner

from cloud.settings import CloudSettings
from cloud.storage import AggregateRow, Storage
from flcore.personal import Pers
from iotfl.cli import app
from iotfl.status import history_table


def test_rounds_current_names_the_personal_epochs(start_cloud) -> None:
    assert start_cloud().current()["personal"] == 0


def test_closed_round_holds_the_mean_local_accuracies(start_cloud, db_url: str) -> None:
    cloud: Cloud = start_cloud(rounds=2, personal_epochs=4)
    assert cloud.current()["personal"] == 4
    cloud.checkin("gw0", "gw1")
    assert cloud.post(cloud.agg("gw0", 1, k=3, pers=Pers(2.4, 1.5, 3))).json()["accepted"]
    open_round = cloud.round(1)
    assert open_round["state"] == "open" and open_round["p_accuracy"] is None
    assert cloud.post(cloud.agg("gw1", 1, k=2, pers=Pers(0.6, 0.5, 1))).json()["accepted"]
    r1 = cloud.round(1)
    assert r1["state"] == "closed" and r1["p_devices"] == 4
    assert r1["p_accuracy"] == pytest.approx(3.0 / 4) and r1["l_accuracy"] == pytest.approx(2.0 / 4)
    [h1] = cloud.status()["history"]
    assert (h1["p_accuracy"], h1["l_accuracy"], h1["p_devices"]) == (r1["p_accuracy"], r1["l_accuracy"], 4)

    # Round 2: one gateway's devices report no accuracies (an old fleet), the other's do.
    cloud.post(cloud.agg("gw0", 2, k=2))
    cloud.post(cloud.agg("gw1", 2, k=2, pers=Pers(1.8, 1.0, 2)))
    r2 = cloud.round(2)
    assert (r2["p_accuracy"], r2["l_accuracy"], r2["p_devices"]) == (pytest.approx(0.9), pytest.approx(0.5), 2)
    cloud.stop()
    storage = Storage(db_url)
    try:
        with storage.transaction() as s:
            rows = {(a.gw, a.round): a.pers for a in s.query(AggregateRow)}
    finally:
        storage.close()
    assert rows[("gw0", 1)] == {"p": pytest.approx(2.4), "g": 1.5, "c": 3}
    assert rows[("gw0", 2)] is None and rows[("gw1", 2)] == {"p": 1.8, "g": 1.0, "c": 2}


def test_a_round_without_accuracies_keeps_them_null(cloud: Cloud) -> None:
    cloud.post(cloud.agg("gw0", 1))
    r1 = cloud.round(1)
    assert r1["state"] == "closed" and (r1["p_accuracy"], r1["l_accuracy"], r1["p_devices"]) == (None, None, None)


def test_personal_epochs_setting_is_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    assert CloudSettings(personal_epochs=3).personal_epochs == 3
    for bad in (-1, 1001):
        with pytest.raises(ValueError):
            CloudSettings(personal_epochs=bad)
    monkeypatch.setenv("IOTFL_PERSONAL_EPOCHS", "7")
    assert CloudSettings().personal_epochs == 7


@pytest.mark.parametrize("command", ["cloud", "demo"])
def test_cli_refuses_negative_personal_epochs(command: str) -> None:
    result = CliRunner().invoke(app, [command, "--personal-epochs", "-1"])
    assert result.exit_code == 2 and "--personal-epochs" in result.output and "Traceback" not in result.output


def _table_text(history: list[dict]) -> str:
    console = Console(width=200, record=True)
    console.print(history_table(history))
    return console.export_text()


def test_status_table_shows_local_accuracies_only_when_reported() -> None:
    row = {"round": 1, "accuracy": 0.5, "loss": 1.0, "k": 4, "n": 40, "bytes_up": 100}
    plain = _table_text([{**row, "p_accuracy": None, "l_accuracy": None, "p_devices": None}])
    assert "local" not in plain
    text = _table_text([{**row, "p_accuracy": 0.875, "l_accuracy": 0.625, "p_devices": 4}])
    assert "local: global" in text and "local: personalized" in text
    assert "62.5 %" in text and "87.5 %" in text
