"""Settings precedence for every service: command-line flags > ``IOTFL_*`` environment > TOML file > defaults."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

S = TypeVar("S", bound=BaseSettings)


class ConfigError(ValueError):
    """A settings problem worth one clear line to the user, not a traceback."""


def build(cls: type[S], config: Path | None, section: str, **flags: Any) -> S:
    """Settings of ``cls`` from the given flags (None means not given), the environment and ``config``'s
    ``[section]`` table (or its top level when the file has no such table)."""
    given = {k: v for k, v in flags.items() if v is not None}
    table: dict[str, Any] = {}
    if config is not None:
        try:
            data = tomllib.loads(Path(config).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config file {config}: {exc}") from None
        table = data.get(section, data) if isinstance(data.get(section, data), dict) else {}

    class _WithToml(cls):  # type: ignore[valid-type,misc]
        @classmethod
        def settings_customise_sources(
            cls_,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            toml = _DictSource(settings_cls, table)
            return init_settings, env_settings, toml

    try:
        return _WithToml(**given)
    except ValidationError as exc:
        problems = "; ".join(_describe(e) for e in exc.errors())
        raise ConfigError(f"invalid {section} settings: {problems}") from None


def _describe(error: Any) -> str:
    name = ".".join(map(str, error["loc"])) or "settings"
    if error["type"] == "missing":
        return f"{name} is required (--{name.replace('_', '-')} or IOTFL_{name.upper()})"
    return f"{name}: {error['msg']}"


class _DictSource(PydanticBaseSettingsSource):
    def __init__(self, settings_cls: type[BaseSettings], values: dict[str, Any]):
        super().__init__(settings_cls)
        self.values = {k.replace("-", "_"): v for k, v in values.items()}

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self.values.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return {k: v for k, v in self.values.items() if k in self.settings_cls.model_fields}


__all__ = ["ConfigError", "build"]
