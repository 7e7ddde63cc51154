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
from gateway.dedup import check_dedup_url
from gateway.device_keys import DeviceKeysError, load_device_keys
from gateway.pause import parse_pause


class UpstreamSettings(BaseSettings):
    """What every gateway (a device gateway, a fog gateway) has: its id and where its cloud is, with its token."""

    model_config = SettingsConfigDict(env_prefix="IOTFL_", extra="ignore")

    id: str
    cloud: str = "http://127.0.0.1:8000"
    token: str = Field(repr=False)
    # The CA certificates (PEM) the cloud's https:// certificate must chain to; the system's trust store when unset.
    cloud_ca: Path | None = None

    @field_validator("id", "fleet", check_fields=False)
    @classmethod
    def _valid_id(cls, value: str) -> str:
        return check_id(value)

    @field_validator("token")
    @classmethod
    def _non_empty_token(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("a gateway needs the bearer token the cloud knows it by (--token or IOTFL_TOKEN)")
        return value.strip()

    @field_validator("cloud")
    @classmethod
    def _cloud_url(cls, value: str) -> str:
        return check_http_url(value, "cloud")


class GatewaySettings(UpstreamSettings, RobustSettings):
    """One gateway: its id, where the broker and the cloud are, and the round limits it enforces."""

    broker: str = "mqtt://127.0.0.1:1883"
    # CA certificates (PEM) the broker's (mqtts://) certificate must chain to; the system's trust store when unset.
    # `iotfl provision fleet` writes the fleet's private CA next to gateway.env.
    broker_ca: Path | None = None
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
    # Scale-out (docs/scale-out.md): this process is worker `worker_id` of gateway `id`, sharing its `up` messages
    # with the other workers of `share_group` (MQTT 5 shared subscription); `dedup` is where they claim updates
    # (`local`: a lone gateway, or redis://host:port/db). A worker posts to the cloud as `<id>-<worker_id>`.
    worker_id: str = ""
    share_group: str = ""
    dedup: str = "local"
    # Fog tier: post to this parent gateway (`iotfl fog`, the cloud's API) instead of `cloud`.
    parent: str = ""

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

    @field_validator("worker_id", "share_group")
    @classmethod
    def _optional_id(cls, value: str) -> str:
        return check_id(value.strip()) if value.strip() else ""

    @field_validator("dedup")
    @classmethod
    def _dedup_url(cls, value: str) -> str:
        return check_dedup_url(value)

    @field_validator("parent")
    @classmethod
    def _parent_url(cls, value: str) -> str:
        return check_http_url(value, "parent") if value.strip() else ""

    @field_validator("broker")
    @classmethod
    def _broker_url(cls, value: str) -> str:
        parse_broker_url(value)
        return value.strip()

    @model_validator(mode="after")
    def _workers(self) -> GatewaySettings:
        if self.share_group and not self.worker_id:
            raise ValueError("a shared-subscription worker needs --worker-id (unique among the gateway's workers)")
        if self.share_group and self.dedup == "local":
            raise ValueError("workers on a shared subscription need a shared --dedup store (redis://host:port/db)")
        check_id(self.cloud_id)
        return self

    @model_validator(mode="after")
    def _ca_files(self) -> GatewaySettings:
        for name, ca, tls in (
            ("broker_ca", self.broker_ca, self.broker_address.tls),
            ("cloud_ca", self.cloud_ca, self.upstream.startswith("https:")),
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
    def cloud_id(self) -> str:
        """The gateway id the cloud (or parent) knows this process by: ``<id>-<worker_id>`` for a worker."""
        return f"{self.id}-{self.worker_id}" if self.worker_id else self.id

    @property
    def upstream(self) -> str:
        """Where rounds are polled and aggregates posted: the parent gateway when set, else the cloud."""
        return self.parent or self.cloud

    @property
    def broker_address(self) -> BrokerAddress:
        return parse_broker_url(self.broker)


def check_http_url(value: str, what: str) -> str:
    """An http(s)://host[:port] URL without its trailing slash, else ValueError naming ``what``."""
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{what} URL {value!r} must be http(s)://host[:port]")
    return value.strip().rstrip("/")


__all__ = ["GatewaySettings", "UpstreamSettings", "check_http_url"]
