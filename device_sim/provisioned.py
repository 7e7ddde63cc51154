"""A simulated fleet on a provisioned broker: each device logs in with the credentials ``iotfl provision fleet``
wrote into its ``devices/<dev>/config.json`` (the same file a real board gets)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Login:
    """A device's broker login and the gateway it was provisioned for."""

    gw: str
    user: str
    password: str


def read_logins(folder: Path) -> dict[str, Login]:
    """Every device's login under ``folder/devices``; ValueError (one line) for a missing or malformed file."""
    devices = folder / "devices"
    if not devices.is_dir():
        raise ValueError(f"{folder} holds no devices/ folder: is it an `iotfl provision fleet` output?")
    logins = {}
    for config in sorted(devices.glob("*/config.json")):
        try:
            data = json.loads(config.read_text())
            logins[data["dev"]] = Login(str(data["gw"]), str(data["broker"]["user"]), str(data["broker"]["password"]))
        except OSError as exc:
            raise ValueError(f"cannot read {config}: {exc.strerror or exc}") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{config} is not a provisioned device config ({type(exc).__name__}: {exc})") from None
    return logins


def check_layout(logins: dict[str, Login], layout: dict[str, str], folder: Path) -> None:
    """ValueError unless every simulated device (dev → gateway) was provisioned, for that gateway."""
    missing = [dev for dev in layout if dev not in logins]
    if missing:
        raise ValueError(
            f"{len(missing)} simulated devices have no config under {folder / 'devices'} (first: {missing[0]}); "
            "provision them or run fewer devices"
        )
    moved = [dev for dev, gw in layout.items() if logins[dev].gw != gw]
    if moved:
        dev = moved[0]
        raise ValueError(
            f"device {dev} runs on gateway {layout[dev]} in the simulator but was provisioned for "
            f"{logins[dev].gw} ({len(moved)} such devices): match --gateways to the provisioned layout"
        )


def logins_for(folder: Path | None, layout: dict[str, str]) -> dict[str, tuple[str, str]]:
    """(user, password) of each simulated device (dev → gateway) from ``folder``; none without a folder."""
    if folder is None:
        return {}
    logins = read_logins(folder)
    check_layout(logins, layout, folder)
    return {dev: (logins[dev].user, logins[dev].password) for dev in layout}


__all__ = ["Login", "check_layout", "logins_for", "read_logins"]
