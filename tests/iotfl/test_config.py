"""Settings precedence: flags > IOTFL_* environment > TOML file > defaults."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from iotfl.config import ConfigError, build


class Example(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="IOTFL_", extra="ignore")

    broker: str = "mqtt://127.0.0.1:1883"
    quorum: int = Field(0, ge=0)
    fleet: str = "default"


def test_defaults_without_flags_env_or_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IOTFL_BROKER", raising=False)
    assert build(Example, None, "gateway").broker == "mqtt://127.0.0.1:1883"


def test_flag_beats_env_beats_file_beats_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "iotfl.toml"
    config.write_text('[gateway]\nbroker = "mqtt://file:1883"\nquorum = 7\nfleet = "from-file"\n')
    monkeypatch.setenv("IOTFL_BROKER", "mqtt://env:1883")
    monkeypatch.setenv("IOTFL_QUORUM", "3")
    settings = build(Example, config, "gateway", quorum=5, fleet=None)
    assert settings.quorum == 5  # flag
    assert settings.broker == "mqtt://env:1883"  # env over file
    assert settings.fleet == "from-file"  # file over default; a None flag means "not given"


def test_top_level_keys_serve_when_the_file_has_no_section(tmp_path: Path) -> None:
    config = tmp_path / "iotfl.toml"
    config.write_text("quorum = 9\n")
    assert build(Example, config, "gateway").quorum == 9


def test_bad_values_and_files_give_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="quorum"):
        build(Example, None, "gateway", quorum=-1)
    broken = tmp_path / "broken.toml"
    broken.write_text("quorum = = 1\n")
    with pytest.raises(ConfigError, match="cannot read config file"):
        build(Example, broken, "gateway")
    with pytest.raises(ConfigError, match="cannot read config file"):
        build(Example, tmp_path / "missing.toml", "gateway")


def test_top_level_keys_are_shared_and_the_command_table_wins(tmp_path: Path) -> None:
    config = tmp_path / "iotfl.toml"
    # [cloud] is another command's table: ignored here even though a `cloud` key could mean something else
    config.write_text('fleet = "site1"\nquorum = 1\n[gateway]\nquorum = 4\n[cloud]\nport = 9\n')
    settings = build(Example, config, "gateway")
    assert (settings.fleet, settings.quorum) == ("site1", 4)


def test_subcommand_tables_are_dotted(tmp_path: Path) -> None:
    config = tmp_path / "iotfl.toml"
    config.write_text("[provision.fleet]\nquorum = 6\n[fleet]\nquorum = 2\n")
    assert build(Example, config, "provision.fleet").quorum == 6
    assert build(Example, config, "fleet").quorum == 2


def test_an_unknown_key_in_the_command_table_is_an_error(tmp_path: Path) -> None:
    config = tmp_path / "iotfl.toml"
    config.write_text("quorom_typo_top = 1\n[gateway]\nquorom = 3\n")
    with pytest.raises(ConfigError, match="unknown key 'quorom' in \\[gateway\\]"):
        build(Example, config, "gateway")


def test_iotfl_toml_in_the_working_directory_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IOTFL_QUORUM", raising=False)
    monkeypatch.chdir(tmp_path)
    assert build(Example, None, "gateway").quorum == 0
    (tmp_path / "iotfl.toml").write_text("[gateway]\nquorum = 11\n")
    assert build(Example, None, "gateway").quorum == 11
    other = tmp_path / "other.toml"
    other.write_text("quorum = 12\n")
    assert build(Example, other, "gateway").quorum == 12  # --config replaces ./iotfl.toml, no merging


def test_common_table_is_shared_where_fleet_and_cloud_are_command_tables(tmp_path: Path) -> None:
    config = tmp_path / "iotfl.toml"
    config.write_text('[common]\nfleet = "site1"\nquorum = 1\n[fleet]\nquorum = 5\n[gateway]\nbroker = "mqtt://g:1"\n')
    assert (build(Example, config, "gateway").fleet, build(Example, config, "gateway").quorum) == ("site1", 1)
    assert build(Example, config, "fleet").quorum == 5
    assert build(Example, config, "fleet").broker == "mqtt://127.0.0.1:1883"
