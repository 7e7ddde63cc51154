"""The round journal: what a restarted gateway replays, a torn tail, another base, old rounds removed."""

from __future__ import annotations

from pathlib import Path

from gateway.journal import Journal


def test_replay_of_the_same_round(tmp_path: Path) -> None:
    j = Journal(tmp_path, "gw0")
    assert j.begin(5, 4) is None
    j.update(0, "t/a", b"A")
    j.update(0, "t/b", b"B")
    j.closed(0)
    j.update(1, "t/a", b"A1")
    j.close()
    replay = Journal(tmp_path, "gw0").begin(5, 4)
    assert replay is not None
    assert replay.ups == {0: [("t/a", b"A"), ("t/b", b"B")], 1: [("t/a", b"A1")]} and replay.closed == {0}


def test_torn_tail_is_dropped_and_appending_continues(tmp_path: Path) -> None:
    j = Journal(tmp_path, "gw0")
    j.begin(1, 0)
    j.update(0, "t/a", b"A")
    j.close()
    with open(j.path(1), "ab") as f:
        f.write(b"\x84\xa2op\xa2up")  # a record cut short by a power loss
    j2 = Journal(tmp_path, "gw0")
    assert j2.begin(1, 0).ups == {0: [("t/a", b"A")]}
    j2.update(0, "t/b", b"B")
    j2.close()
    assert Journal(tmp_path, "gw0").begin(1, 0).ups == {0: [("t/a", b"A"), ("t/b", b"B")]}


def test_other_base_or_round_starts_afresh(tmp_path: Path) -> None:
    j = Journal(tmp_path / "state", "gw0")
    j.begin(1, 0)
    j.update(0, "t/a", b"A")
    assert j.begin(1, 7) is None  # the cloud restarted the round from another model
    assert j.begin(2, 1) is None
    assert sorted(p.name for p in (tmp_path / "state").iterdir()) == ["gw0-round-2.journal"]
    j.close()
