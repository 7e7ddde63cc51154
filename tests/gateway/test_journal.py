"""The round journal: what a restarted gateway replays, another base or model, old rounds reduced to dedup keys."""

from __future__ import annotations

from pathlib import Path

from gateway_peers import make_up

from gateway.collector import REMEMBERED_ROUNDS
from gateway.journal import Journal


def test_replay_of_the_same_round(tmp_path: Path) -> None:
    j = Journal(tmp_path, "gw0")
    assert j.begin(5, 4, "m") is None
    j.update(make_up("a", round=5, base=4), "t/a", b"A")
    j.update(make_up("b", round=5, base=4), "t/b", b"B")
    j.closed(0)
    j.update(make_up("a", round=5, base=4, sub=1), "t/a", b"A1")
    j.close()
    replay = Journal(tmp_path, "gw0").begin(5, 4, "m")
    assert replay is not None
    assert replay.ups == {0: [("t/a", b"A"), ("t/b", b"B")], 1: [("t/a", b"A1")]} and replay.closed == {0}


def test_other_base_or_model_starts_afresh(tmp_path: Path) -> None:
    j = Journal(tmp_path / "state", "gw0")
    j.begin(1, 0, "m0")
    j.update(make_up("a"), "t/a", b"A")
    assert j.begin(1, 7, "m0") is None  # the cloud restarted the round from another model version
    j.update(make_up("a"), "t/a", b"A")
    assert j.begin(1, 7, "other weights") is None  # a fresh cloud reusing the round numbers
    assert j.begin(1, 7, "other weights") is not None
    assert sorted(p.name for p in (tmp_path / "state").iterdir() if p.suffix == ".sqlite3") == ["gw0-state.sqlite3"]
    j.close()


def test_new_round_keeps_only_the_dedup_keys_of_recent_rounds(tmp_path: Path) -> None:
    j = Journal(tmp_path, "gw0")
    for r in range(1, REMEMBERED_ROUNDS + 3):
        j.begin(r, r - 1)
        j.update(make_up(f"d{r}", round=r, base=r - 1, sub=1), "t", b"payload")
    last = REMEMBERED_ROUNDS + 2
    keys = j.accepted()
    assert sorted(keys) == list(range(last - REMEMBERED_ROUNDS + 1, last + 1))
    assert keys[last] == {(f"d{last}", 1)}
    assert j.begin(last - 1, last - 2) is None  # an earlier round's payloads are gone: nothing to replay
    assert max(j.accepted()) == last - 2  # its own keys and those of later rounds are dropped
    j.close()
