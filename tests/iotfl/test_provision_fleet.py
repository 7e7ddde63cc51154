"""``iotfl provision fleet``: layout, idempotent re-runs, adding devices, rotation, file modes, the generated ACL and
configs, and one-line errors for bad input."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cloud.auth import token_hash
from iotfl.cli import app
from iotfl.pki import cert_hosts

runner = CliRunner()
REPO = Path(__file__).resolve().parents[2]
BASE = ["provision", "fleet", "--fleet", "F", "--broker", "mqtts://broker.example:8883", "--cloud",
        "https://fl.example:8443"]  # fmt: skip


def run(out: Path, *args: str) -> str:
    result = runner.invoke(app, [*BASE, "--out", str(out), *args])
    assert result.exit_code == 0, result.output
    return result.output


def snapshot(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def state(out: Path) -> dict:
    return json.loads((out / "fleet.json").read_text())


def firmware_config():
    spec = importlib.util.spec_from_file_location("fw_config", REPO / "firmware" / "config.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_layout_files_and_modes(tmp_path: Path) -> None:
    out = tmp_path / "F"
    text = run(out, "--gateway", "gw0:3", "--gateway", "gw1:2", "--gateway", "gw2=pump1,pump2")
    assert "gw0 (new)" in text and "gw2 (new)" in text
    gateways = state(out)["gateways"]
    # dealt round-robin like the simulator (device i on gw{i mod G}), named devices as given
    assert {gw: list(g["devices"]) for gw, g in gateways.items()} == {
        "gw0": ["d0000", "d0002", "d0004"],
        "gw1": ["d0001", "d0003"],
        "gw2": ["pump1", "pump2"],
    }
    private = {"fleet.json", "ota.key", "ca/ca.key", "mosquitto/passwd", "mosquitto/server.key", "cloud/cloud.env",
               "cloud/server.key", "ops.env", "device-keys.json", "gateways/gw0/gateway.env",
               "gateways/gw0/device-keys.json", "devices/d0000/config.json"}  # fmt: skip
    for name in private:
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o600, name
    assert stat.S_IMODE((out / "mosquitto" / "acl").stat().st_mode) == 0o644
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    assert cert_hosts((out / "mosquitto" / "server.crt").read_text()) == ["broker.example", "localhost", "127.0.0.1"]
    assert cert_hosts((out / "cloud" / "server.crt").read_text()) == ["fl.example", "localhost", "127.0.0.1"]


def test_configs_passwords_tokens_and_keys_agree(tmp_path: Path) -> None:
    out = tmp_path / "F"
    run(out, "--gateway", "gw0:2")
    s = state(out)
    gw = s["gateways"]["gw0"]
    fw = firmware_config()
    for dev, secrets in gw["devices"].items():
        config = fw.validate(json.loads((out / "devices" / dev / "config.json").read_text()))
        assert (config["dev"], config["gw"], config["fleet"]) == (dev, "gw0", "F")
        assert config["broker"]["user"] == dev and config["broker"]["password"] == secrets["password"]
        assert config["broker"]["tls"] and config["broker"]["ca"] == "ca.crt"
        assert config["hmac"] == secrets["hmac"] and len(bytes.fromhex(config["hmac"])) == 32
        assert (out / "devices" / dev / "ca.crt").read_text() == (out / "ca" / "ca.crt").read_text()
    # every password-file line verifies its login's password
    lines = dict(line.split(":", 1) for line in (out / "mosquitto" / "passwd").read_text().splitlines())
    assert set(lines) == {"ops", "gw0", *gw["devices"]}
    for user, password in [("gw0", gw["password"]), *((d, x["password"]) for d, x in gw["devices"].items())]:
        _, _, iterations, salt, digest = lines[user].split("$")
        expected = hashlib.pbkdf2_hmac("sha512", password.encode(), base64.b64decode(salt), int(iterations))
        assert base64.b64decode(digest) == expected
    env = dict(line.split("=", 1) for line in (out / "gateways/gw0/gateway.env").read_text().splitlines()[1:])
    assert env["IOTFL_TOKEN"] == gw["token"] and env["IOTFL_BROKER"].startswith(f"mqtts://gw0:{gw['password']}@")
    assert json.loads(Path(env["IOTFL_DEVICE_KEYS"]).read_text()) == {d: x["hmac"] for d, x in gw["devices"].items()}
    cloud_env = (out / "cloud" / "cloud.env").read_text()
    assert f"IOTFL_GATEWAY_TOKEN_HASHES=gw0={token_hash(gw['token'])}\n" in cloud_env
    assert gw["token"] not in cloud_env  # the cloud holds only the hash


def test_acl_rules(tmp_path: Path) -> None:
    out = tmp_path / "F"
    run(out, "--gateway", "gw0:1", "--gateway", "gw1:1")
    rules = [line for line in (out / "mosquitto" / "acl").read_text().splitlines() if line and line[0] != "#"]
    assert rules[0] == "pattern write iotfl/F/dev/%u/status"  # the only rule before the first user: none for anonymous
    assert rules[1].startswith("user ")
    block = rules[rules.index("user d0001") + 1 : rules.index("user d0001") + 5]
    assert block == [
        "topic write iotfl/F/gw/gw1/up/d0001",
        "topic read iotfl/F/gw/gw1/task",
        "topic read iotfl/F/gw/gw1/ack/d0001",
        "topic read iotfl/F/ota/#",
    ]
    assert rules[rules.index("user gw1") + 1] == "topic readwrite iotfl/F/gw/gw1/#"
    conf = (out / "mosquitto" / "iotfl.conf").read_text().splitlines()
    assert "allow_anonymous false" in conf and "tls_version tlsv1.2" in conf and "listener 8883" in conf


def test_broker_tuning_matches_deploy_config() -> None:
    from iotfl.fleet_files import BROKER_TUNING

    deploy = {}
    for line in (REPO / "deploy" / "mosquitto.conf").read_text().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition(" ")
            deploy[key] = value
    assert {k: deploy[k] for k, _ in BROKER_TUNING} == dict(BROKER_TUNING)


def test_rerun_is_byte_identical_and_adds_devices_without_touching_others(tmp_path: Path) -> None:
    out = tmp_path / "F"
    run(out, "--gateway", "gw0:2", "--gateway", "gw1:2")
    first = snapshot(out)
    # the same command again, and a run with no options (broker and cloud come from fleet.json)
    run(out, "--gateway", "gw0:2", "--gateway", "gw1:2")
    assert snapshot(out) == first
    assert runner.invoke(app, ["provision", "fleet", "--fleet", "F", "--out", str(out)]).exit_code == 0
    assert snapshot(out) == first
    text = run(out, "--gateway", "gw0:3")
    assert "d0004" in text
    second = snapshot(out)
    added = {k for k in second if k not in first}
    assert added == {"devices/d0004/config.json", "devices/d0004/ca.crt"}
    changed = {k for k in first if first[k] != second[k]}
    # only the files that list every login or every key of gw0 change; every other device's config is untouched
    assert changed == {"fleet.json", "mosquitto/passwd", "mosquitto/acl", "gateways/gw0/device-keys.json",
                       "device-keys.json"}  # fmt: skip
    old, new = state(tmp_path / "F")["gateways"], json.loads(first["fleet.json"])["gateways"]
    assert {gw: {d: v for d, v in g["devices"].items() if d != "d0004"} for gw, g in old.items()} == {
        gw: g["devices"] for gw, g in new.items()
    }


def test_rotate_changes_exactly_that_one(tmp_path: Path) -> None:
    out = tmp_path / "F"
    run(out, "--gateway", "gw0:2", "--gateway", "gw1:1")
    before, files = state(out), snapshot(out)
    text = run(out, "--rotate", "d0002")
    assert "d0002" in text
    after = state(out)
    dev_before, dev_after = before["gateways"]["gw0"]["devices"], after["gateways"]["gw0"]["devices"]
    assert dev_after["d0002"]["password"] != dev_before["d0002"]["password"]
    assert dev_after["d0002"]["hmac"] != dev_before["d0002"]["hmac"]
    dev_before.pop("d0002"), dev_after.pop("d0002")
    assert after == before
    changed = {k for k, v in snapshot(out).items() if files[k] != v}
    assert changed == {"fleet.json", "mosquitto/passwd", "devices/d0002/config.json",
                       "gateways/gw0/device-keys.json", "device-keys.json"}  # fmt: skip
    run(out, "--rotate", "gw1")
    gw1_before, gw1_after = before["gateways"]["gw1"], state(out)["gateways"]["gw1"]
    assert gw1_after["token"] != gw1_before["token"] and gw1_after["password"] != gw1_before["password"]
    assert gw1_after["devices"] == gw1_before["devices"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--gateway", "gw0:x"], "must be GW, GW:COUNT or GW=DEV1,DEV2"),
        (["--gateway", "bad/id:2"], "must be GW, GW:COUNT or GW=DEV1,DEV2"),
        (["--broker", "mqtts://u:p@h:8883", "--gateway", "gw0:1"], "without credentials"),
        (["--cloud", "ftp://h", "--gateway", "gw0:1"], "must be http(s)://host[:port]"),
        (["--gateway", "gw0=gw0"], "name of a gateway"),
        (["--rotate", "nobody"], "no such device, gateway or ops user"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(tmp_path: Path, args: list[str], message: str) -> None:
    out = tmp_path / "F"
    result = runner.invoke(app, [*BASE, "--out", str(out), *args])
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())
    assert not out.exists()


def test_refusals_on_an_existing_fleet_change_nothing(tmp_path: Path) -> None:
    out = tmp_path / "F"
    run(out, "--gateway", "gw0:2", "--gateway", "gw1=pump")
    files = snapshot(out)
    for args, message in [
        (["--gateway", "gw0:1"], "never removes one"),
        (["--gateway", "gw0=pump"], "belongs to gateway 'gw1'"),
        (["--gateway", "d0000:1"], "already a device"),
    ]:
        result = runner.invoke(app, [*BASE, "--out", str(out), *args])
        assert result.exit_code == 2 and message in " ".join(result.output.split()), result.output
    result = runner.invoke(app, ["provision", "fleet", "--fleet", "G", "--out", str(out)])
    assert result.exit_code == 2 and "holds fleet 'F'" in result.output
    assert snapshot(out) == files


def test_a_new_fleet_needs_its_endpoints(tmp_path: Path) -> None:
    result = runner.invoke(app, ["provision", "fleet", "--out", str(tmp_path / "F"), "--gateway", "gw0:1"])
    assert result.exit_code == 2 and "needs --broker" in result.output


def test_progress_counts_every_device_once(tmp_path: Path) -> None:
    from iotfl.provision_fleet import FleetProvisionSettings, provision_fleet

    calls: list[tuple[int, int]] = []
    settings = FleetProvisionSettings(
        gateway=["gw0:3", "gw1:2"], broker="mqtt://127.0.0.1:1883", cloud="http://127.0.0.1:8000", out=tmp_path / "p"
    )
    provision_fleet(settings, progress=lambda n, total: calls.append((n, total)))
    assert calls == [(1, 5), (2, 5), (3, 5), (4, 5), (5, 5)]
    assert len(list((tmp_path / "p" / "devices").iterdir())) == 5
