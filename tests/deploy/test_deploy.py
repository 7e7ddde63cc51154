"""The production configs in deploy/: a real mosquitto runs deploy/mosquitto.conf (adapted to a free loopback port
and temporary paths) with the example ACL, the systemd units verify, and the env examples build the settings."""

from __future__ import annotations

import getpass
import shutil
import signal
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from flcore.messages import MAX_UPDATE_BYTES
from iotfl.broker import free_port, mosquitto_path, wait_for_port

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
WAIT = 5.0  # seconds any single broker interaction may take
USERS = {"gw0": "gw0-secret", "d0001": "d0001-secret", "d0002": "d0002-secret"}


def directives(text: str) -> dict[str, list[str]]:
    """Active ``key value`` lines of a mosquitto config (comments and blanks skipped)."""
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.strip().partition(" ")
            out.setdefault(key, []).append(value.strip())
    return out


def adapt(text: str, port: int, tmp: Path, passwd: Path | None, acl: Path) -> str:
    """The production config with the listener on 127.0.0.1:``port`` and every path under ``tmp``."""
    out = []
    for line in text.splitlines():
        key = line.split(" ", 1)[0]
        if key == "listener":
            line = f"listener {port} 127.0.0.1"
        elif key == "persistence_location":
            line = f"persistence_location {tmp / 'data'}/"
        elif key == "password_file":
            line = f"password_file {passwd}" if passwd else "# password_file: mosquitto_passwd is missing"
        elif key == "acl_file":
            line = f"acl_file {acl}"
        out.append(line)
    # run as ourselves: as root, mosquitto would switch to the `mosquitto` user, which cannot write to tmp
    out.append(f"user {getpass.getuser()}")
    return "\n".join(out) + "\n"


@dataclass
class ProdBroker:
    conf: Path
    port: int
    data: Path
    proc: subprocess.Popen | None = None

    def start(self) -> None:
        exe = mosquitto_path()
        assert exe is not None
        log = open(self.conf.parent / "broker.log", "ab")  # the child process keeps its own copy of the handle
        self.proc = subprocess.Popen([exe, "-c", str(self.conf)], stdout=log, stderr=subprocess.STDOUT)
        log.close()
        try:
            wait_for_port(self.port, WAIT, self.proc)
        except (RuntimeError, TimeoutError):
            self.stop()
            pytest.fail(f"mosquitto refused deploy/mosquitto.conf:\n{(self.conf.parent / 'broker.log').read_text()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(WAIT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(WAIT)


@pytest.fixture
def prod_broker(tmp_path: Path) -> Iterator[tuple[ProdBroker, bool]]:
    """deploy/mosquitto.conf running on a free port; the flag says whether a password file could be made."""
    if mosquitto_path() is None:
        pytest.skip("mosquitto is not installed (apt-get install mosquitto): broker config not exercised")
    passwd: Path | None = tmp_path / "iotfl.passwd"
    tool = shutil.which("mosquitto_passwd")
    if tool is None:
        passwd = None
    else:
        for i, (user, password) in enumerate(USERS.items()):
            flags = ["-b", "-c"] if i == 0 else ["-b"]
            subprocess.run([tool, *flags, str(passwd), user, password], check=True, timeout=30, capture_output=True)
    acl = tmp_path / "iotfl.acl"
    shutil.copy(DEPLOY / "acl.example", acl)
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(adapt((DEPLOY / "mosquitto.conf").read_text(), port, tmp_path, passwd, acl))
    (tmp_path / "data").mkdir()
    broker = ProdBroker(conf, port, tmp_path / "data")
    broker.start()
    yield broker, passwd is not None
    broker.stop()


@dataclass
class Client:
    """A paho client with bounded waits on CONNACK, SUBACK and PUBACK, recording what it receives."""

    port: int
    user: str | None
    client: paho.Client = field(init=False)
    connected: threading.Event = field(default_factory=threading.Event)
    reason: object = None
    received: list[tuple[str, bytes]] = field(default_factory=list)
    got: threading.Condition = field(default_factory=threading.Condition)
    subacks: dict[int, list[int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"test-{self.user}-{id(self)}")
        if self.user is not None:
            self.client.username_pw_set(self.user, USERS.get(self.user, "wrong"))
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe

    def _on_connect(self, _c: object, _u: object, _flags: object, reason: object, _props: object) -> None:
        self.reason = reason
        self.connected.set()

    def _on_message(self, _c: object, _u: object, msg: paho.MQTTMessage) -> None:
        with self.got:
            self.received.append((msg.topic, msg.payload))
            self.got.notify_all()

    def _on_subscribe(self, _c: object, _u: object, mid: int, codes: list, _props: object) -> None:
        with self.got:
            self.subacks[mid] = [int(getattr(c, "value", c)) for c in codes]
            self.got.notify_all()

    def connect(self) -> bool:
        """True when the broker accepted the connection (within WAIT seconds)."""
        self.client.connect("127.0.0.1", self.port, keepalive=10)
        self.client.loop_start()
        assert self.connected.wait(WAIT), "no CONNACK"
        return not getattr(self.reason, "is_failure", True)

    def subscribe(self, topic: str) -> int:
        """The granted QoS (128 when refused)."""
        _, mid = self.client.subscribe(topic, qos=1)
        with self.got:
            assert self.got.wait_for(lambda: mid in self.subacks, WAIT), "no SUBACK"
            return self.subacks[mid][0]

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(WAIT)

    def wait_for(self, payload: bytes) -> list[tuple[str, bytes]]:
        with self.got:
            assert self.got.wait_for(lambda: any(p == payload for _, p in self.received), WAIT), payload
            return list(self.received)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def clients() -> Iterator[list[Client]]:
    made: list[Client] = []
    yield made
    for c in made:
        c.close()


def test_config_holds_the_production_settings() -> None:
    text = (DEPLOY / "mosquitto.conf").read_text()
    conf = directives(text)
    assert conf["persistence"] == ["true"] and conf["persistence_location"] == ["/var/lib/mosquitto/"]
    assert int(conf["autosave_interval"][0]) > 0
    assert int(conf["max_queued_messages"][0]) >= 10000 and int(conf["max_inflight_messages"][0]) > 20
    assert int(conf["message_size_limit"][0]) == MAX_UPDATE_BYTES  # the gateway's default max_update_bytes
    assert conf["allow_anonymous"] == ["false"]
    assert conf["password_file"] and conf["acl_file"]
    assert len(conf["listener"]) == 1 and conf["listener"][0].startswith("1883 ")
    commented = directives("\n".join(line.lstrip("#") for line in text.splitlines() if line.startswith("#")))
    assert "8883" in commented["listener"] and commented["tls_version"] == ["tlsv1.2"]
    assert {"cafile", "certfile", "keyfile"} <= commented.keys()


def test_broker_refuses_anonymous_and_accepts_credentials(
    prod_broker: tuple[ProdBroker, bool], clients: list[Client]
) -> None:
    broker, have_passwords = prod_broker
    anonymous = Client(broker.port, None)
    clients.append(anonymous)
    assert not anonymous.connect(), "an anonymous client was let in"
    if not have_passwords:
        pytest.skip("mosquitto_passwd not found: the authenticated-client check needs it (apt-get install mosquitto)")
    stranger = Client(broker.port, "nobody")
    clients.append(stranger)
    assert not stranger.connect(), "a client with a wrong password was let in"
    gw = Client(broker.port, "gw0")
    clients.append(gw)
    assert gw.connect()


def test_acl_ties_devices_to_their_own_topics(prod_broker: tuple[ProdBroker, bool], clients: list[Client]) -> None:
    broker, have_passwords = prod_broker
    if not have_passwords:
        pytest.skip("mosquitto_passwd not found: the ACL check needs authenticated clients")
    gw, dev = Client(broker.port, "gw0"), Client(broker.port, "d0001")
    clients.extend([gw, dev])
    assert gw.connect() and dev.connect()
    assert gw.subscribe("iotfl/default/gw/gw0/up/+") == 1
    assert gw.subscribe("iotfl/default/dev/+/status") == 1
    assert dev.subscribe("iotfl/default/gw/gw0/task") == 1
    assert dev.subscribe("iotfl/default/gw/gw0/ack/d0001") == 1
    # mosquitto's acl_file grants any subscription and filters each delivery by the read rules
    dev.subscribe("iotfl/default/gw/gw0/ack/d0002")
    dev.subscribe("iotfl/default/gw/gw0/up/+")

    dev.publish("iotfl/default/gw/gw0/up/d0002", b"impersonation")  # dropped by the ACL
    dev.publish("iotfl/default/dev/d0002/status", b"fake status")  # dropped by the ACL
    dev.publish("iotfl/default/gw/gw0/up/d0001", b"x" * (MAX_UPDATE_BYTES + 1))  # over message_size_limit
    dev.publish("iotfl/default/dev/d0001/status", b"own status")
    dev.publish("iotfl/default/gw/gw0/up/d0001", b"own update")
    # QoS 1 from one publisher arrives in order: once the last one is in, the dropped ones would have been too
    received = gw.wait_for(b"own update")
    assert received == [
        ("iotfl/default/dev/d0001/status", b"own status"),
        ("iotfl/default/gw/gw0/up/d0001", b"own update"),
    ]

    gw.publish("iotfl/default/gw/gw0/ack/d0002", b"ack for d0002")
    gw.publish("iotfl/default/gw/gw0/up/d0001", b"gateway writes under its own subtree")
    gw.publish("iotfl/default/gw/gw0/ack/d0001", b"ack")
    gw.publish("iotfl/default/gw/gw0/task", b"task", retain=True)
    # the device saw neither another device's ack nor any update (not even its own, echoed back)
    assert dev.wait_for(b"task") == [("iotfl/default/gw/gw0/ack/d0001", b"ack"), ("iotfl/default/gw/gw0/task", b"task")]


def test_retained_task_survives_a_restart(prod_broker: tuple[ProdBroker, bool], clients: list[Client]) -> None:
    broker, have_passwords = prod_broker
    if not have_passwords:
        pytest.skip("mosquitto_passwd not found: the persistence check needs authenticated clients")
    gw = Client(broker.port, "gw0")
    assert gw.connect()
    gw.publish("iotfl/default/gw/gw0/task", b"round 7", retain=True)
    gw.close()
    broker.stop()  # a clean shutdown writes the persistence database
    assert (broker.data / "mosquitto.db").is_file()
    broker.start()
    dev = Client(broker.port, "d0001")
    clients.append(dev)
    assert dev.connect()
    dev.subscribe("iotfl/default/gw/gw0/task")
    assert dev.wait_for(b"round 7") == [("iotfl/default/gw/gw0/task", b"round 7")]


UNITS = {"iotfl-gateway.service": "gateway", "iotfl-cloud.service": "cloud"}


def unit_keys(path: Path) -> dict[str, dict[str, list[str]]]:
    """``{section: {key: [values]}}`` of a systemd unit (keys may repeat, so not configparser)."""
    out: dict[str, dict[str, list[str]]] = {}
    section = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            out.setdefault(section, {})
            continue
        key, sep, value = line.partition("=")
        assert sep and section, f"{path.name}: not a key=value line inside a section: {raw!r}"
        out[section].setdefault(key.strip(), []).append(value.strip())
    return out


@pytest.mark.parametrize("name,command", UNITS.items())
def test_unit_has_the_required_keys(name: str, command: str) -> None:
    unit = unit_keys(DEPLOY / "systemd" / name)
    assert set(unit) == {"Unit", "Service", "Install"}
    service = unit["Service"]
    (exec_start,) = service["ExecStart"]
    assert exec_start.split()[0].endswith("/iotfl") and exec_start.split()[1] == command
    assert service["EnvironmentFile"] == [f"/etc/iotfl/{command}.env"]
    assert service["Restart"] == ["on-failure"] and int(service["RestartSec"][0]) > 0
    assert int(unit["Unit"]["StartLimitIntervalSec"][0]) > 0 and int(unit["Unit"]["StartLimitBurst"][0]) > 1
    assert service["DynamicUser"] == ["yes"] and service["StateDirectory"] == [f"iotfl-{command}"]
    assert service["ProtectSystem"] == ["strict"] and service["NoNewPrivileges"] == ["yes"]
    assert service["ProtectHome"] == ["yes"] and service["PrivateTmp"] == ["yes"]
    # every secret file the service reads is a credential (root-owned 0600 at its source) whose copy in %d the
    # flag points at: the dynamic user could not read the source
    for credential in service.get("LoadCredential", []):
        name, _, source = credential.partition(":")
        assert source.startswith("/etc/iotfl/") and f"%d/{name}" in exec_start.split()
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]
    assert "network-online.target" in unit["Unit"]["After"][0]


def test_gateway_unit_hands_the_device_keys_to_the_dynamic_user() -> None:
    service = unit_keys(DEPLOY / "systemd" / "iotfl-gateway.service")["Service"]
    assert service["LoadCredential"] == ["device-keys.json:/etc/iotfl/device-keys.json"]
    assert service["ExecStart"][0].split()[1:] == ["gateway", "--device-keys", "%d/device-keys.json"]


def analyzable_unit(name: str, tmp_path: Path) -> tuple[str, Path]:
    """systemd-analyze and a copy of the unit whose ExecStart is this machine's iotfl, or a skip saying why not."""
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze not found: units only parsed, not verified")
    iotfl = shutil.which("iotfl") or str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "iotfl")
    if not Path(iotfl).is_file():
        pytest.skip("no iotfl executable to stand in for /usr/local/bin/iotfl: unit not verified")
    # verify checks that ExecStart's binary exists, so point it at this machine's iotfl
    text = (DEPLOY / "systemd" / name).read_text().replace("/usr/local/bin/iotfl", iotfl)
    unit = tmp_path / name
    unit.write_text(text)
    return tool, unit


@pytest.mark.parametrize("name", UNITS)
def test_unit_verifies_with_systemd_analyze(name: str, tmp_path: Path) -> None:
    tool, unit = analyzable_unit(name, tmp_path)
    result = subprocess.run([tool, "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60)
    # systemd-analyze also reports unrelated units of the host; only lines about this unit count
    problems = [line for line in (result.stdout + result.stderr).splitlines() if name in line]
    assert result.returncode == 0 and not problems, result.stdout + result.stderr


@pytest.mark.parametrize("name", UNITS)
def test_unit_exposure_stays_low(name: str, tmp_path: Path) -> None:
    tool, unit = analyzable_unit(name, tmp_path)
    # the offline sandboxing audit (systemd ≥ 250): exits non-zero above the threshold (exposure 2.5 of 10)
    result = subprocess.run(
        [tool, "security", "--offline=yes", "--threshold=25", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if "Unknown option" in result.stderr or "unrecognized option" in result.stderr:
        pytest.skip(f"this systemd-analyze has no offline security audit: {result.stderr.strip()}")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr


def env_file(path: Path) -> dict[str, str]:
    """``KEY=value`` lines of a systemd EnvironmentFile (comments and blanks skipped)."""
    values = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep and key == key.strip() and key.isupper(), f"{path.name}: bad line {raw!r}"
            values[key] = value
    return values


def test_gateway_env_example_builds_gateway_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway.settings import GatewaySettings

    values = env_file(DEPLOY / "gateway.env.example")
    assert {"IOTFL_ID", "IOTFL_BROKER", "IOTFL_CLOUD", "IOTFL_TOKEN", "IOTFL_STATE_DIR"} <= values.keys()
    assert {k.removeprefix("IOTFL_").lower() for k in values} <= GatewaySettings.model_fields.keys()
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    settings = GatewaySettings()
    assert settings.id == "gw0" and settings.broker_address.username == "gw0"
    assert str(settings.state_dir) == "/var/lib/iotfl-gateway"
    assert settings.max_update_bytes == int(
        directives((DEPLOY / "mosquitto.conf").read_text())["message_size_limit"][0]
    )


def test_cloud_env_example_builds_cloud_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from cloud.settings import CloudSettings

    values = env_file(DEPLOY / "cloud.env.example")
    assert {"IOTFL_HOST", "IOTFL_PORT", "IOTFL_DB", "IOTFL_GATEWAY_TOKENS"} <= values.keys()
    assert {k.removeprefix("IOTFL_").lower() for k in values} <= CloudSettings.model_fields.keys()
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    settings = CloudSettings()
    assert settings.db == "sqlite:////var/lib/iotfl-cloud/iotfl.db" and settings.host == "127.0.0.1"
    assert set(settings.gateway_tokens) == {"gw0", "gw1"}
