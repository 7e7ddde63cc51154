"""Settings precedence for every command: command-line flags > ``IOTFL_*`` environment > ``iotfl.toml`` > defaults.

One TOML file serves every command. The ``[common]`` table (and plain top-level keys) apply to every command that
has a setting of that name; a table named after the command (``[gateway]``, ``[cloud]``, ``[provision.fleet]``, …)
applies to that command only and wins. Other tables are other commands' and ignored here. The file is
``--config FILE`` (or ``IOTFL_CONFIG``), else ``./iotfl.toml`` when it exists. docs/configuration.md lists every key.
"""

from __future__ import annotations

import importlib
import tomllib
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError
from pydantic_settings import BaseSettings, InitSettingsSource, PydanticBaseSettingsSource

S = TypeVar("S", bound=BaseSettings)

DEFAULT_CONFIG = Path("iotfl.toml")
# Settings every command shares. A table, because `fleet` and `cloud` are both settings and command tables.
COMMON = "common"

# The table of each command that reads settings, and its settings class (imported only when asked for: the cloud's
# and the simulator's live in extras). docs/configuration.md is checked against these by tests/iotfl/test_config_doc.py.
SECTIONS = {
    "demo": "iotfl.demo_settings:DemoSettings",
    "cloud": "cloud.settings:CloudSettings",
    "gateway": "gateway.settings:GatewaySettings",
    "fleet": "device_sim.settings:FleetSettings",
    "provision.device": "iotfl.provision:ProvisionSettings",
    "provision.fleet": "iotfl.provision_fleet:FleetProvisionSettings",
}


class ConfigError(ValueError):
    """A settings problem worth one clear line to the user, not a traceback."""


def settings_class(section: str) -> type[BaseSettings]:
    """The settings class of a ``SECTIONS`` table (imports its module)."""
    module, _, name = SECTIONS[section].partition(":")
    cls: type[BaseSettings] = getattr(importlib.import_module(module), name)
    return cls


def config_path(config: Path | None) -> Path | None:
    """The file to read: the one given, else ``./iotfl.toml`` when it exists, else none."""
    if config is not None:
        return config
    return DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None


def read_section(cls: type[BaseSettings], config: Path, section: str) -> dict[str, Any]:
    """The values ``config`` gives the command ``section`` (dotted for subcommands): top-level keys, ``[common]``,
    then its own table, each winning over the one before."""
    try:
        data = tomllib.loads(Path(config).read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read config file {config}: {exc}") from None
    values = {k: v for k, v in data.items() if not isinstance(v, dict)}
    common = data.get(COMMON, {})
    if not isinstance(common, dict):
        raise ConfigError(f"{config}: [{COMMON}] must be a table")
    values.update(common)
    table: Any = data
    for part in section.split("."):
        table = table.get(part, {}) if isinstance(table, dict) else {}
    if not isinstance(table, dict):
        raise ConfigError(f"{config}: [{section}] must be a table")
    table = {k.replace("-", "_"): v for k, v in table.items()}
    # a typo in the command's own table would otherwise be ignored silently (top-level keys may be other commands')
    unknown = sorted(set(table) - set(cls.model_fields))
    if unknown:
        raise ConfigError(f"{config}: unknown key {unknown[0]!r} in [{section}] (docs/configuration.md lists them)")
    values = {k.replace("-", "_"): v for k, v in values.items()}
    return {k: v for k, v in {**values, **table}.items() if k in cls.model_fields}


def build(cls: type[S], config: Path | None, section: str, **flags: Any) -> S:
    """Settings of ``cls`` from the given flags (None means not given), the environment and the config file's
    values for ``section`` (see the module docstring)."""
    given = {k: v for k, v in flags.items() if v is not None}
    path = config_path(config)
    from_file = read_section(cls, path, section) if path is not None else {}

    class _WithFile(cls):  # type: ignore[valid-type,misc]
        @classmethod
        def settings_customise_sources(
            cls_,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return init_settings, env_settings, InitSettingsSource(settings_cls, init_kwargs=from_file)

    try:
        return _WithFile(**given)
    except ValidationError as exc:
        problems = "; ".join(_describe(e) for e in exc.errors())
        raise ConfigError(f"invalid {section} settings: {problems}") from None


def _describe(error: Any) -> str:
    name = ".".join(map(str, error["loc"])) or "settings"
    if error["type"] == "missing":
        return f"{name} is required (--{name.replace('_', '-')} or IOTFL_{name.upper()})"
    return f"{name}: {error['msg']}"


__all__ = ["DEFAULT_CONFIG", "SECTIONS", "ConfigError", "build", "config_path", "settings_class"]
