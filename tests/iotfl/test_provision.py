"""``iotfl provision device``: the board's config.json, file modes, overwrite rules, id checks, and a generated
password whose printed mosquitto line a real mosquitto accepts."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import os
import pwd
import re
import stat
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from typer.testing import CliRunner

from iotfl.broker import free_port, mosquitto_path, wait_for_port
from iotfl.cli import app
from iotfl.provision import (
    ProvisionError,
    ProvisionSettings,
    parse_battery,
    provision_device,
)

runner = CliRunner()
REPO = Path(__file__).resolve().parents[2]
KEY = "0123456789abcdef" * 4
PEM = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n-----END CERTIFICATE-----\n"
PASSWORD_SHAPE = re.compile(r"[A-Za-z0-9_-]{24}")


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test in its own working directory (the default output is ./provision/...), with no IOTFL_* set."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ca.pem").write_text(PEM)
    for name in list(os.environ):
        if name.startswith("IOTFL_") and name != "IOTFL_MICROPYTHON":
            monkeypatch.delenv(name)


def provision(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["provision", "device", *args])
    return result.exit_code, result.output


BASE = ("--id", "dev7", "--gateway", "gw0", "--broker", "mqtt://192.168.10.1:1883")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_config_json_has_the_documented_keys(tmp_path: Path) -> None:
    code, output = provision(
        *BASE, "--fleet", "farm", "--password", "s3cret-pass", "--wifi-ssid", "site-net",
        "--wifi-password", "wifi-pass-1", "--ram-class", "constrained", "--battery", "adc:34:2.0", "--ota-key", KEY,
    )  # fmt: skip
    assert code == 0, output
    path = tmp_path / "provision" / "farm" / "dev7" / "config.json"
    assert json.loads(path.read_text()) == {
        "dev": "dev7",
        "gw": "gw0",
        "fleet": "farm",
        "broker": {"host": "192.168.10.1", "port": 1883, "tls": False, "user": "dev7", "password": "s3cret-pass"},
        "wifi": {"ssid": "site-net", "password": "wifi-pass-1"},
        "ram_class": "constrained",
        "battery": {"source": "adc", "pin": 34, "divider": 2.0, "v_empty": 3.3, "v_full": 4.2},
        "ota": {"key": KEY},
    }
    assert f"wrote {Path('provision/farm/dev7/config.json')}" in output
    assert not (tmp_path / "provision" / "farm" / "ota.key").exists()  # --ota-key given: no key file


def test_defaults_tls_and_no_wifi(tmp_path: Path) -> None:
    out = tmp_path / "boards" / "dev8"
    code, output = provision(
        "--id", "dev8", "--gateway", "gw1", "--broker", "mqtts://broker.example", "--ca-cert", "ca.pem",
        "--out", str(out),
    )  # fmt: skip
    assert code == 0, output
    config = json.loads((out / "config.json").read_text())
    assert config["broker"]["host"] == "broker.example"
    assert config["broker"]["port"] == 8883 and config["broker"]["tls"] is True
    assert config["broker"]["ca"] == "ca.crt"  # the board's copy, which `iotfl flash` puts beside config.json
    assert (out / "ca.crt").read_text() == PEM and mode(out / "ca.crt") == 0o600
    assert config["wifi"] is None
    assert config["ram_class"] == "class2" and config["fleet"] == "default"
    assert config["battery"] == {"source": "fixed", "value": 1.0}


def test_files_are_private(tmp_path: Path) -> None:
    code, output = provision(*BASE)
    assert code == 0, output
    fleet_dir = tmp_path / "provision" / "default"
    assert mode(fleet_dir / "dev7" / "config.json") == 0o600
    assert mode(fleet_dir / "ota.key") == 0o600
    assert mode(fleet_dir / "dev7") == 0o700
    assert not [p for p in (fleet_dir / "dev7").iterdir() if p.name != "config.json"]  # no temp files left


def test_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    path = tmp_path / "provision" / "default" / "dev7" / "config.json"
    assert provision(*BASE, "--password", "first-password")[0] == 0
    before = path.read_text()
    code, output = provision(*BASE, "--password", "second-password")
    assert code == 2
    assert output.startswith("error:") and "already exists (pass --force to overwrite it)" in " ".join(output.split())
    assert path.read_text() == before
    path.chmod(0o644)
    code, output = provision(*BASE, "--password", "second-password", "--force")
    assert code == 0, output
    assert json.loads(path.read_text())["broker"]["password"] == "second-password"
    assert mode(path) == 0o600


def test_the_fleet_ota_key_is_created_once_and_shared(tmp_path: Path) -> None:
    code, output = provision(*BASE)
    assert code == 0 and "created the fleet OTA key" in output
    key = (tmp_path / "provision" / "default" / "ota.key").read_text().strip()
    assert re.fullmatch(r"[0-9a-f]{64}", key)
    code, output = provision("--id", "dev9", "--gateway", "gw0", "--broker", "mqtt://h:1883")
    assert code == 0 and "created the fleet OTA key" not in output
    for dev in ("dev7", "dev9"):
        assert json.loads((tmp_path / "provision" / "default" / dev / "config.json").read_text())["ota"]["key"] == key


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--id", "dev/7", "--gateway", "gw0", "--broker", "mqtt://h"], "device id 'dev/7' must match"),
        (["--id", "dev7", "--gateway", "gw 0", "--broker", "mqtt://h"], "gateway id 'gw 0' must match"),
        (["--id", "dev7", "--gateway", "gw0", "--fleet", "a+b", "--broker", "mqtt://h"], "fleet 'a+b' must match"),
        (["--id", "d" * 65, "--gateway", "gw0", "--broker", "mqtt://h"], "must match [A-Za-z0-9_-]{1,64}"),
        (["--id", "dev7", "--broker", "mqtt://h"], "gateway is required (--gateway or IOTFL_GATEWAY)"),
        (["--id", "dev7", "--gateway", "gw0", "--broker", "http://h"], "must start with mqtt:// or mqtts://"),
        (["--id", "dev7", "--gateway", "gw0", "--broker", "mqtts://h"], "an mqtts:// broker needs --ca-cert FILE"),
        (["--id", "dev7", "--gateway", "gw0", "--broker", "mqtt://h", "--ca-cert", "ca.pem"], "is for an mqtts://"),
        (["--id", "dev7", "--gateway", "gw0", "--broker", "mqtts://h", "--ca-cert", "nope.pem"], "cannot read the CA"),
        (["--id", "dev7", "--gateway", "gw0", "--broker", "mqtts://h", "--ca-cert", "."], "cannot read the CA"),
        (["--id", "dev7", "--gateway", "gw0", "--broker", "mqtt://h", "--username", "a:b"], "username 'a:b'"),
        (["--id", "dev7", "--gateway", "gw0", "--broker", "mqtt://h", "--ram-class", "big"], "unknown RAM class"),
        (["--id", "dev7", "--gateway", "gw0", "--broker", "mqtt://h", "--battery", "fixed:2"], "fixed:LEVEL"),
        (["--id", "dev7", "--gateway", "gw0", "--broker", "mqtt://h", "--ota-key", "xyz"], "must be hexadecimal"),
        (["--id", "dev7", "--gateway", "gw0", "--broker", "mqtt://h", "--ota-key", "abcd"], "at least 16 bytes"),
        (["--id", "dev7", "--gateway", "gw0", "--broker", "mqtt://h", "--wifi-password", "12345678"], "--wifi-ssid"),
    ],
)
def test_bad_input_is_one_clear_line(args: list[str], message: str, tmp_path: Path) -> None:
    code, output = provision(*args)
    assert code == 2, output
    assert output.startswith("error:") and message in " ".join(output.split()), output
    assert "Traceback" not in output
    assert not (tmp_path / "provision").exists()  # nothing written, not even a fleet key


def test_generated_password_shape_and_printed_line(tmp_path: Path) -> None:
    code, output = provision(*BASE)
    assert code == 0, output
    password = json.loads((tmp_path / "provision/default/dev7/config.json").read_text())["broker"]["password"]
    assert PASSWORD_SHAPE.fullmatch(password)
    assert "generated a password" in output
    line = next(x for x in output.splitlines() if x.startswith("dev7:"))
    user, _, hashed = line.partition(":")
    _, kind, iterations, salt, digest = hashed.split("$")
    assert (user, kind) == ("dev7", "7")  # mosquitto 2's PBKDF2-SHA512 format
    expected = hashlib.pbkdf2_hmac("sha512", password.encode(), base64.b64decode(salt), int(iterations))
    assert base64.b64decode(digest) == expected and len(base64.b64decode(salt)) == 12
    assert provision("--id", "dev8", "--gateway", "gw0", "--broker", "mqtt://h")[0] == 0
    other = json.loads((tmp_path / "provision/default/dev8/config.json").read_text())["broker"]["password"]
    assert PASSWORD_SHAPE.fullmatch(other) and other != password


def test_given_credentials_are_used(tmp_path: Path) -> None:
    code, output = provision(*BASE, "--username", "sensor7", "--password", "pw-from-flag", "--ota-key", KEY)
    assert code == 0, output
    broker = json.loads((tmp_path / "provision/default/dev7/config.json").read_text())["broker"]
    assert (broker["user"], broker["password"]) == ("sensor7", "pw-from-flag")
    assert "generated" not in output and "sensor7:$7$" in output
    assert "expects the user name to be the device id" in " ".join(output.split())


def test_environment_supplies_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IOTFL_BROKER", "mqtt://10.1.2.3:1884")
    monkeypatch.setenv("IOTFL_WIFI_SSID", "from-env")
    assert provision("--id", "dev7", "--gateway", "gw0", "--ota-key", KEY)[0] == 0
    config = json.loads((tmp_path / "provision/default/dev7/config.json").read_text())
    assert (config["broker"]["host"], config["broker"]["port"]) == ("10.1.2.3", 1884)
    assert config["wifi"] == {"ssid": "from-env", "password": ""}


def test_provision_device_function(tmp_path: Path) -> None:
    settings = ProvisionSettings(id="dev7", gateway="gw0", broker="mqtt://h", out=tmp_path / "x", ota_key=KEY)
    done = provision_device(settings)
    assert done.config_path == tmp_path / "x" / "config.json" and done.password_generated
    assert done.ota_key_file is None and not done.ota_key_created
    with pytest.raises(ProvisionError, match="already exists"):
        provision_device(settings)
    assert provision_device(settings, force=True).config_path == done.config_path


def test_a_ca_file_that_is_not_pem_is_refused(tmp_path: Path) -> None:
    (tmp_path / "ca.der").write_bytes(b"0\x82\x01\xb3")
    code, output = provision("--id", "dev7", "--gateway", "gw0", "--broker", "mqtts://h", "--ca-cert", "ca.der")
    assert code == 2 and "is not a PEM certificate" in " ".join(output.split())


def test_battery_specs() -> None:
    assert parse_battery("fixed:0.8") == {"source": "fixed", "value": 0.8}
    assert parse_battery("adc:26:3:3.0:4.1") == {
        "source": "adc",
        "pin": 26,
        "divider": 3.0,
        "v_empty": 3.0,
        "v_full": 4.1,
    }
    for bad in ("adc:34", "adc:x:2", "adc:34:0", "adc:34:2:4.2:3.3", "fixed:-0.1", "fixed", "solar:1"):
        with pytest.raises(ValueError, match="adc:PIN:DIVIDER"):
            parse_battery(bad)


def firmware_config() -> Any:
    """firmware/config.py itself (plain MicroPython that also runs on CPython): the board's own rules."""
    spec = importlib.util.spec_from_file_location("fw_config_under_test", REPO / "firmware" / "config.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


VARIANTS = [
    ("--battery", "adc:34:2.0", "--wifi-ssid", "site", "--wifi-password", "wifi-pass-1", "--ram-class", "class1"),
    (
        "--battery",
        "fixed:0.5",
        "--username",
        "sensor7",
        "--password",
        "pw-123456",
        "--broker",
        "mqtts://b:8884",
        "--ca-cert",
        "ca.pem",
    ),
    ("--battery", "adc:26:3:3.0:4.1", "--ota-key", KEY, "--fleet", "farm"),
]


@pytest.mark.parametrize("extra", VARIANTS)
def test_firmware_config_py_accepts_what_provision_writes(extra: tuple[str, ...], tmp_path: Path) -> None:
    code, output = provision(*BASE, *extra, "--out", str(tmp_path / "out"))
    assert code == 0, output
    raw = json.loads((tmp_path / "out" / "config.json").read_text())
    cfg = firmware_config().validate(raw)
    assert (cfg["dev"], cfg["gw"]) == ("dev7", "gw0")
    assert cfg["broker"]["user"] == raw["broker"]["user"] and cfg["broker"]["port"] == raw["broker"]["port"]
    assert cfg["ota"]["key"] == raw["ota"]["key"] and cfg["battery"]["source"] == raw["battery"]["source"]


def test_firmware_config_py_accepts_it_under_real_micropython(tmp_path: Path) -> None:
    binary = os.environ.get("IOTFL_MICROPYTHON")
    if not binary:
        pytest.skip("IOTFL_MICROPYTHON is not set (the CPython run of firmware/config.py above still checks it)")
    for i, extra in enumerate(VARIANTS):
        assert provision(*BASE, *extra, "--out", str(tmp_path / str(i)))[0] == 0
    script = tmp_path / "check.py"
    script.write_text(
        "import config\n"
        f"for i in range({len(VARIANTS)}):\n"
        f"    c = config.load({str(tmp_path)!r} + '/' + str(i) + '/config.json')\n"
        "    print(c['dev'], c['gw'], c['battery']['source'])\n"
    )
    env = dict(os.environ, MICROPYPATH=f"{REPO / 'firmware'}:.frozen")
    done = subprocess.run(
        [binary, "-X", "heapsize=64K", str(script)], capture_output=True, text=True, timeout=30, env=env
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.split("\n")[:3] == ["dev7 gw0 adc", "dev7 gw0 fixed", "dev7 gw0 adc"]


@pytest.fixture
def password_broker(tmp_path: Path) -> Iterator[Callable[[str], int]]:
    """Starts a real mosquitto that only lets in the users of the given password-file text; returns its port."""
    exe = mosquitto_path()
    if exe is None:
        pytest.fail("mosquitto is not installed: run `apt-get install -y mosquitto`")
    procs: list[subprocess.Popen] = []

    def start(passwd_text: str) -> int:
        port, passwd, conf = free_port(), tmp_path / "passwd", tmp_path / "mosquitto.conf"
        passwd.write_text(passwd_text)
        # as root mosquitto would drop to the `mosquitto` user, which cannot read a private tmp dir
        user = f"user {pwd.getpwuid(os.geteuid()).pw_name}\n" if os.geteuid() == 0 else ""
        conf.write_text(f"{user}listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {passwd}\n")
        procs.append(subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_for_port(port, 10, procs[-1])
        return port

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(5)


def _connect(port: int, user: str, password: str) -> int:
    """The CONNACK reason code (0 = accepted), within 5 seconds."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    client.username_pw_set(user, password)
    got = threading.Event()
    result: list[int] = []

    def on_connect(c: mqtt.Client, userdata: object, flags: object, reason: mqtt.ReasonCode, props: object) -> None:
        result.append(reason.value)
        got.set()

    client.on_connect = on_connect
    client.connect("127.0.0.1", port, keepalive=10)
    client.loop_start()
    try:
        assert got.wait(5), "no CONNACK within 5 s"
    finally:
        client.disconnect()
        client.loop_stop()
    return result[0]


def test_a_real_mosquitto_accepts_the_printed_password_line(
    tmp_path: Path, password_broker: Callable[[str], int]
) -> None:
    code, output = provision(*BASE)
    assert code == 0, output
    password = json.loads((tmp_path / "provision/default/dev7/config.json").read_text())["broker"]["password"]
    port = password_broker(next(x for x in output.splitlines() if x.startswith("dev7:")) + "\n")
    assert _connect(port, "dev7", password) == 0
    assert _connect(port, "dev7", password + "x") != 0
    assert _connect(port, "dev8", password) != 0


def test_a_site_toml_supplies_shared_settings(tmp_path: Path) -> None:
    (tmp_path / "site.toml").write_text(
        '[provision.device]\nbroker = "mqtt://192.168.10.1:1883"\n'
        'wifi_ssid = "site-net"\nwifi_password = "wifi-password"\n'
    )
    for dev in ("dev1", "dev2"):
        code, output = provision("--config", "site.toml", "--id", dev, "--gateway", "gw0")
        assert code == 0, output
        config = json.loads((tmp_path / "provision/default" / dev / "config.json").read_text())
        assert config["broker"]["host"] == "192.168.10.1" and config["wifi"]["ssid"] == "site-net"
