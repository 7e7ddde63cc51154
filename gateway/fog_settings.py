"""Settings of a fog (parent) gateway, ``iotfl fog`` (``IOTFL_*`` environment, TOML file and flags)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from flcore.topics import check_id
from gateway.settings import UpstreamSettings


class FogSettings(UpstreamSettings):
    """One fog node: its id and token upstream (``cloud``: the cloud or another fog node), and its children."""

    host: str = "127.0.0.1"
    port: int = Field(8100, ge=0, le=65535)
    # Child gateway id → the bearer token it posts with: "site0=a,site1=b" (IOTFL_CHILD_TOKENS).
    child_tokens: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict, repr=False)
    round_timeout: float = Field(30.0, gt=0)
    # The children see the upstream deadline this much earlier, leaving the fog time to forward their sum upward.
    forward_margin: float = Field(4.0, ge=0, le=3600)
    poll_interval: float = Field(0.5, gt=0, le=60)
    state_dir: Path = Path(".")

    @field_validator("child_tokens", mode="before")
    @classmethod
    def _children(cls, value: Any) -> dict[str, str]:
        items = value.split(",") if isinstance(value, str) else list(value or [])
        if isinstance(value, dict):
            items = [f"{k}={v}" for k, v in value.items()]
        children: dict[str, str] = {}
        for item in (i.strip() for i in items if i.strip()):
            child, sep, token = item.partition("=")
            if not sep or not token.strip():
                raise ValueError(f"child token {item.split('=')[0]!r} must be written child=TOKEN")
            children[check_id(child.strip(), "child id")] = token.strip()
        if not children:
            raise ValueError("a fog node needs its children's tokens (--child-token site0=SECRET, repeatable)")
        return children


__all__ = ["FogSettings"]
