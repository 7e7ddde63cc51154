"""CloudSettings: defaults, the token forms, validation messages, secrets kept out of reprs; no tokens, no start."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from cloud.app import create_app
from cloud.errors import CloudError
from cloud.settings import CloudSettings, parse_tokens
from flcore.datasets import sensors


def test_defaults_match_the_contract() -> None:
    s = CloudSettings()
    assert (s.host, s.port, s.db, s.fleet, s.dataset, s.seed, s.rounds) == (
        "127.0.0.1",
        8000,
        "sqlite:///iotfl.db",
        "default",
        "digits",
        0,
        20,
    )
    assert s.gateway_tokens == {} and (s.min_gateways, s.round_timeout) == (1, 60.0)
    assert (s.lr, s.epochs, s.batch, s.chunk, s.min_battery, s.gateway_rounds, s.server_lr) == (
        0.05,
        2,
        8,
        256,
        0.1,
        1,
        None,
    )
    assert (s.server_opt, s.opt_params.eta, s.select) == ("fedavg", 1.0, None)


def test_tokens_from_the_environment_string(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IOTFL_GATEWAY_TOKENS", "gw0=a, gw1=b=c")
    monkeypatch.setenv("IOTFL_ROUNDS", "5")
    monkeypatch.setenv("IOTFL_SOMETHING_ELSE", "ignored")
    s = CloudSettings()
    assert s.gateway_tokens == {"gw0": "a", "gw1": "b=c"} and s.rounds == 5
    monkeypatch.setenv("IOTFL_GATEWAY_TOKENS", '{"gw2": "z"}')
    assert CloudSettings().gateway_tokens == {"gw2": "z"}


def test_token_forms_agree() -> None:
    expected = {"gw0": "a", "gw1": "b"}
    assert parse_tokens("gw0=a,gw1=b") == parse_tokens(["gw0=a", "gw1=b"]) == parse_tokens(expected) == expected
    assert parse_tokens("") == parse_tokens(None) == {}


@pytest.mark.parametrize(
    ("tokens", "message"),
    [
        ("gw 0=a", "must match"),
        ("gw0=", "empty token"),
        ("gw0", "gw0=SECRET"),
        ("gw0=a,gw1=a", "share a token"),
        ("gw0=a,gw0=b", "given twice"),
        ('{"gw0": 3}', "empty token"),
        ("{oops", "not valid JSON"),
    ],
)
def test_bad_tokens_are_refused_with_a_clear_message(tokens: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        CloudSettings(gateway_tokens=tokens)


@pytest.mark.parametrize(
    "field",
    [
        {"rounds": 0},
        {"round_timeout": 0},
        {"round_timeout": -1},
        {"min_gateways": 0},
        {"port": 70000},
        {"min_battery": 1.5},
        {"chunk": 0},
        {"server_lr": 0},
        {"server_opt": "sgd"},
        {"server_momentum": 1},
        {"server_beta2": -0.5},
        {"server_eps": 0},
        {"select": 0},
        {"select": 1.5},
        {"fleet": "a/b"},
        {"gateway_rounds": 0},
    ],
)
def test_out_of_range_values_are_refused(field: dict) -> None:
    with pytest.raises(ValidationError, match=next(iter(field))):
        CloudSettings(**field)


def test_repr_hides_the_tokens() -> None:
    s = CloudSettings(gateway_tokens="gw0=supersecret")
    assert "supersecret" not in repr(s) and "supersecret" not in str(s) and "gw0" in repr(s)
    assert s.gateway_tokens["gw0"] == "supersecret"


def test_no_gateway_tokens_no_cloud(tmp_path) -> None:
    with pytest.raises(CloudError, match="no gateway tokens"):
        create_app(CloudSettings(db=f"sqlite:///{tmp_path / 'x.db'}"), sensors(0, samples=100))
    assert not (tmp_path / "x.db").exists()


def test_a_bad_database_url_is_a_clear_error(tmp_path) -> None:
    for url, message in [
        ("mysql://x@y/z", "unsupported database"),
        ("not a url", "cannot parse"),
        (f"sqlite:///{tmp_path}/missing/dir/x.db", "cannot open database"),
    ]:
        with pytest.raises(CloudError, match=message):
            create_app(CloudSettings(db=url, gateway_tokens="gw0=a"), sensors(0, samples=100))


def test_several_workers_need_postgresql() -> None:
    with pytest.raises(ValidationError, match="3 workers need PostgreSQL.*SQLite keeps a single worker"):
        CloudSettings(workers=3, db="sqlite:///x.db")
    assert CloudSettings(workers=3, db="postgresql://postgres@127.0.0.1/test").workers == 3
    assert CloudSettings().workers == 1
