"""The cloud aggregator's settings: ``IOTFL_*`` environment variables, built by the caller (no singleton)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from flcore.quantize import DEFAULT_CHUNK, MAX_CHUNK
from flcore.resources import class_map_text, parse_class_map
from flcore.robust.settings import RobustSettings
from flcore.server_opt.settings import ServerOptSettings
from flcore.topics import is_valid_id


def parse_tokens(value: Any) -> dict[str, str]:
    """Gateway tokens from a mapping, ``"gw0=a,gw1=b"``, a JSON object, or a list of ``"gw=token"`` strings."""
    if value is None:
        return {}
    if isinstance(value, dict):
        pairs = list(value.items())
    elif isinstance(value, str):
        text = value.strip()
        if text.startswith("{"):
            try:
                loaded = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(f"gateway tokens are not valid JSON: {exc.msg}") from None
            if not isinstance(loaded, dict):
                raise ValueError("gateway tokens in JSON must be an object of id → token")
            pairs = list(loaded.items())
        else:
            pairs = [_split_pair(item) for item in text.split(",") if item.strip()]
    elif isinstance(value, list | tuple):
        pairs = [_split_pair(item) for item in value]
    else:
        raise ValueError(f"gateway tokens must be 'gw0=a,gw1=b' or a mapping, got {type(value).__name__}")
    tokens: dict[str, str] = {}
    for gw, token in pairs:
        if not is_valid_id(gw):
            raise ValueError(f"gateway id {gw!r} must match [A-Za-z0-9_-]{{1,64}}")
        if not isinstance(token, str) or not token.strip():
            raise ValueError(f"gateway {gw!r} has an empty token")
        if gw in tokens:
            raise ValueError(f"gateway {gw!r} is given twice")
        tokens[gw] = token.strip()
    owners: dict[str, str] = {}
    for gw, token in tokens.items():
        if token in owners:
            # A shared token could not tell the gateways apart, so one could post as the other.
            raise ValueError(f"gateways {owners[token]!r} and {gw!r} share a token; give each its own")
        owners[token] = gw
    return tokens


def _split_pair(item: Any) -> tuple[str, str]:
    if not isinstance(item, str) or "=" not in item:
        raise ValueError(f"gateway token {item!r} must look like gw0=SECRET")
    gw, _, token = item.partition("=")
    return gw.strip(), token


class CloudSettings(BaseSettings, RobustSettings, ServerOptSettings):
    """Everything ``iotfl cloud`` needs; every field also reads ``IOTFL_<NAME>`` from the environment. Its robust
    ``aggregation`` rule runs over the gateways' mean deltas; its mean delta is the pseudo-gradient of the
    ``server_opt`` server optimizer."""

    model_config = SettingsConfigDict(env_prefix="IOTFL_", extra="ignore")

    host: str = Field("127.0.0.1", min_length=1, description="address to listen on")
    port: int = Field(8000, ge=0, le=65535, description="TCP port (0 picks a free one)")
    db: str = Field("sqlite:///iotfl.db", min_length=1, description="SQLAlchemy URL: sqlite:///FILE or postgresql://…")
    fleet: str = Field("default", description="fleet name shown in the status")
    dataset: str = Field("digits", min_length=1, description="dataset name (the caller loads it)")
    seed: int = Field(0, ge=0, description="seed of the initial model")
    rounds: int = Field(20, ge=1, description="global rounds to run before the state becomes done")
    gateway_tokens: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict, description="gateway id → bearer token, also 'gw0=a,gw1=b'"
    )
    gateway_token_hashes: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict, description="gateway id → sha256 hex of its token (what provisioning writes), 'gw0=…'"
    )
    tls_cert: Path | None = Field(None, description="PEM server certificate: serve https (with tls_key)")
    tls_key: Path | None = Field(None, description="PEM private key of tls_cert")
    min_gateways: int = Field(1, ge=1, description="gateways that must check in before round 1's clock starts")
    round_timeout: float = Field(60.0, gt=0, le=86400, description="seconds a round stays open")
    lr: float = Field(0.05, gt=0, description="device learning rate")
    epochs: int = Field(2, ge=1, le=1000, description="local epochs per task")
    batch: int = Field(8, ge=1, le=65536, description="local batch size")
    chunk: int = Field(DEFAULT_CHUNK, ge=1, le=MAX_CHUNK, description="quantization chunk length")
    min_battery: float = Field(0.1, ge=0, le=1, description="battery a device needs to train")
    gateway_rounds: int = Field(1, ge=1, le=100, description="gateway sub-rounds per global round")
    select: float | None = Field(
        None, gt=0, le=1, description="fraction of each gateway's devices asked to train a round (none = every device)"
    )
    widths: str | None = Field(
        None, description="width-sliced sub-models per RAM class, e.g. class1=0.5 (HeteroFL; none = whole model)"
    )
    personal_epochs: int = Field(
        0, ge=0, le=1000, description="epochs devices fine-tune a personal head and report local accuracies (0 = off)"
    )
    max_samples: int = Field(
        100_000, ge=1, description="samples one device update may claim (as at the gateways): agg n ≤ k × this"
    )
    workers: int = Field(
        1, ge=1, le=64, description="uvicorn worker processes (more than one needs PostgreSQL: they share its locks)"
    )
    mode: Literal["sync", "async"] = Field(
        "sync", description="sync: updates of a closed round are late; async: gateways take them, staleness-weighted"
    )

    @field_validator("gateway_tokens", mode="before")
    @classmethod
    def _tokens(cls, value: Any) -> dict[str, str]:
        return parse_tokens(value)

    @field_validator("gateway_token_hashes", mode="before")
    @classmethod
    def _token_hashes(cls, value: Any) -> dict[str, str]:
        hashes = {gw: digest.lower() for gw, digest in parse_tokens(value).items()}
        for gw, digest in hashes.items():
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                raise ValueError(f"gateway {gw!r}: a token hash is the 64 hex digits of its sha256")
        return hashes

    @model_validator(mode="after")
    def _auth_and_tls(self) -> CloudSettings:
        both = set(self.gateway_tokens) & set(self.gateway_token_hashes)
        if both:
            raise ValueError(f"gateway {sorted(both)[0]!r} has both a token and a token hash; give one")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("TLS needs both tls_cert and tls_key (--tls-cert and --tls-key)")
        if self.workers > 1 and not self.db.startswith("postgres"):
            raise ValueError(
                f"{self.workers} workers need PostgreSQL (--db postgresql://USER@HOST/DB): SQLite keeps a single "
                "worker, as one file takes one writer at a time"
            )
        return self

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        # Tokens are secrets: a logged or printed settings object shows only the gateway ids.
        for name, value in super().__repr_args__():
            yield name, ({gw: "***" for gw in value} if name == "gateway_tokens" else value)

    @field_validator("fleet")
    @classmethod
    def _fleet(cls, value: str) -> str:
        if not is_valid_id(value):
            raise ValueError(f"fleet {value!r} must match [A-Za-z0-9_-]{{1,64}}")
        return value

    @field_validator("widths")
    @classmethod
    def _widths(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        return class_map_text(parse_class_map(value, what="widths", lo=0.0, hi=1.0))

    @property
    def width_map(self) -> dict[str, float] | None:
        """The widths the tasks name per RAM class (``flcore.hetero``), None when every class trains it all."""
        return parse_class_map(self.widths, what="widths", lo=0.0, hi=1.0) if self.widths else None


__all__ = ["CloudSettings", "parse_tokens"]
