"""Gateway settings (``IOTFL_*`` environment, TOML file and flags via ``iotfl.config.build``)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from flcore.encodings import ACCEPTED_BY_DEFAULT, DEFAULT_TOPK, check_encoding, parse_encodings
from flcore.endpoints import BrokerAddress, parse_broker_url
from flcore.robust.settings import RobustSettings
from flcore.topics import check_id
from gateway.device_keys import DeviceKeysError, load_device_keys
from gateway.pause import parse_pause


class GatewaySettings(BaseSettings, RobustSettings):
    """One gateway: its id, where the broker and the cloud are, and the round limits it enforces."""

    model_config = SettingsConfigDict(env_prefix="IOTFL_", extra="ignore")

    id: str
    broker: str = "mqtt://127.0.0.1:1883"
    cloud: str = "http://127.0.0.1:8000"
    token: str = Field(repr=False)
    # CA certificates (PEM) the broker's (mqtts://) and the cloud's (https://) certificates must chain to; the
    # system's trust store when unset. `iotfl provision fleet` writes the fleet's private CA next to gateway.env.
    broker_ca: Path | None = None
    cloud_ca: Path | None = None
    fleet: str = "default"
    quorum: int = Field(0, ge=0)
    # Close a (sub-)round once ceil(quorum_fraction × live devices) updates were accepted (0 = off).
    quorum_fraction: float = Field(0.0, ge=0, le=1)
    round_timeout: float = Field(30.0, gt=0)
    # An aggregate posted at the cloud's deadline arrives after the round closed and its acked updates would be
    # lost; closing this much earlier leaves time for the post.
    forward_margin: float = Field(
        2.0, ge=0, le=3600, description="seconds before the cloud's deadline at which the gateway closes its round"
    )
    state_dir: Path = Path(".")
    poll_interval: float = Field(0.5, gt=0, le=60, description="seconds between polls of the cloud's current round")
    report_interval: float = Field(
        2.0,
        ge=0,
        le=3600,
        description="seconds between reports of round progress and device statuses to the cloud's dashboard (0 = none)",
    )
    max_update_bytes: int = Field(
        1 << 20, ge=64, description="largest update accepted (keep equal to the broker's message_size_limit)"
    )
    max_samples: int = Field(100_000, ge=1, description="samples one device update may claim")
    # JSON {dev: 64 hex} of this gateway's device keys: when set, every update must be signed (docs/protocol.md).
    device_keys: Path | None = None
    # The update encoding this gateway's tasks name (flcore.encodings; empty: none named, devices use their own) and,
    # for topk, the fraction of values each update keeps. The gateway always accepts the encoding it names.
    enc: str = ""
    topk: float = Field(DEFAULT_TOPK, gt=0, le=1)
    # Comma-separated encodings accepted from devices, besides `enc` (an update in another is rejected `enc`).
    accept_enc: str = ",".join(ACCEPTED_BY_DEFAULT)
    # Prometheus metrics (GET /metrics, docs/operations.md) on metrics_host:metrics_port; 0 = off, the default, so
    # several gateways on one machine never clash (9108 is the usual choice when a single gateway runs there).
    metrics_port: int = Field(0, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"
    # Test hook for fault tests (gateway/pause.py): hold at a named point so a test can kill -9 there. Off when empty.
    pause_at: str = Field("", description="test hook: hold at a named point (gateway/pause.py); empty in production")

    @field_validator("id", "fleet")
    @classmethod
    def _valid_id(cls, value: str) -> str:
        return check_id(value)

    @field_validator("token")
    @classmethod
    def _non_empty_token(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("a gateway needs the bearer token the cloud knows it by (--token or IOTFL_TOKEN)")
        return value.strip()

    @field_validator("device_keys")
    @classmethod
    def _key_file(cls, value: Path | None) -> Path | None:
        if value is not None:
            try:
                load_device_keys(value)
            except DeviceKeysError as exc:
                raise ValueError(str(exc)) from None
        return value

    @field_validator("enc")
    @classmethod
    def _encoding(cls, value: str) -> str:
        return check_encoding(value.strip()) if value.strip() else ""

    @field_validator("accept_enc")
    @classmethod
    def _encodings(cls, value: str) -> str:
        return ",".join(parse_encodings(value))

    @field_validator("pause_at")
    @classmethod
    def _pause_point(cls, value: str) -> str:
        parse_pause(value)
        return value.strip()

    @field_validator("broker")
    @classmethod
    def _broker_url(cls, value: str) -> str:
        parse_broker_url(value)
        return value.strip()

    @field_validator("cloud")
    @classmethod
    def _cloud_url(cls, value: str) -> str:
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"cloud URL {value!r} must be http(s)://host[:port]")
        return value.strip().rstrip("/")

    @model_validator(mode="after")
    def _ca_files(self) -> GatewaySettings:
        for name, ca, tls in (
            ("broker_ca", self.broker_ca, self.broker_address.tls),
            ("cloud_ca", self.cloud_ca, self.cloud.startswith("https:")),
        ):
            if ca is None:
                continue
            if not tls:
                raise ValueError(f"{name} is for a TLS endpoint (mqtts:// or https://)")
            if not ca.is_file():
                raise ValueError(f"{name} {ca} is not a readable file")
        return self

    @property
    def accepted_encodings(self) -> tuple[str, ...]:
        """The encodings accepted from devices: ``accept_enc`` and the one the tasks name."""
        return tuple(dict.fromkeys([*parse_encodings(self.accept_enc), *([self.enc] if self.enc else [])]))

    @property
    def broker_address(self) -> BrokerAddress:
        return parse_broker_url(self.broker)


__all__ = ["GatewaySettings"]
