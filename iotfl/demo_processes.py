"""What the demo hands the processes it starts beyond their settings: per-device signing keys, the fleet's
differential-privacy flags and its environment."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from iotfl.demo_settings import DemoSettings


def write_demo_keys(settings: DemoSettings, folder: Path) -> dict[str, Path]:
    """With ``signed``: a random key per device, written (mode 0600) for the whole fleet (``fleet.json``) and for
    each gateway (``gw<i>.json``, its own devices); returns the files by part name, empty when not signed."""
    if not settings.signed:
        return {}
    from device_sim.population import device_id, gateway_id
    from iotfl.provision import write_private

    keys = {device_id(i): secrets.token_hex(32) for i in range(settings.devices)}
    files: dict[str, dict[str, str]] = {"fleet": keys}
    files.update({gateway_id(g, settings.gateways): {} for g in range(settings.gateways)})
    for i, (dev, key) in enumerate(keys.items()):
        files[gateway_id(i, settings.gateways)][dev] = key
    paths = {name: folder / f"{name}.json" for name in files}
    for name, subset in files.items():
        write_private(paths[name], json.dumps(subset, indent=2), force=True)
    return paths


def batched_env(settings: DemoSettings) -> dict[str, str]:
    """A batched fleet's updates queue behind each other at their gateway (thousands per shared connection), so the
    last ack comes long after the first: wait a round for it, not the per-device default, before re-sending (unless
    the user set IOTFL_ACK_TIMEOUT)."""
    if settings.sim != "batched" or "IOTFL_ACK_TIMEOUT" in os.environ:
        return {}
    return {"IOTFL_ACK_TIMEOUT": str(max(settings.round_timeout, 10.0))}


def key_flag(keys: dict[str, Path], part: str) -> list[str]:
    return ["--device-keys", str(keys[part])] if part in keys else []


def dp_flags(settings: DemoSettings) -> list[str]:
    """The fleet's differential-privacy flags: none when DP is off."""
    if settings.dp_clip <= 0:
        return []
    s = settings
    return ["--dp-clip", str(s.dp_clip), "--dp-noise", str(s.dp_noise), "--dp-delta", str(s.dp_delta)]


__all__ = ["batched_env", "dp_flags", "key_flag", "write_demo_keys"]
