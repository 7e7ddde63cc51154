"""Live devices from retained statuses and updates, and the sub-round close rule."""

from __future__ import annotations

from flcore.messages import Status
from gateway.roster import Roster


def online(dev: str, gw: str = "gw0", **kw: object) -> Status:
    return Status(dev, "online", gw=gw, **kw)  # type: ignore[arg-type]


def test_live_set_follows_statuses_and_updates() -> None:
    r = Roster("gw0")
    r.on_status("a", online("a"))
    r.on_status("b", Status("b", "sleeping", gw="gw0"))
    r.on_status("c", online("c", gw="gw1"))
    r.on_status("d", Status("d", "online"))  # names no gateway
    r.on_update("e")
    assert r.live == {"a", "b", "e"}
    r.on_status("a", Status("a", "offline", gw="gw0"))  # the Last Will
    r.on_status("e", Status("e", "offline"))
    r.on_status("b", None)  # retained status cleared
    assert r.live == set()


def test_close_rule() -> None:
    r = Roster("gw0")
    for dev in ("a", "b", "c"):
        r.on_status(dev, online(dev))
    assert r.close_reason(1, 0, set(), 0, quorum=0) is None
    assert r.close_reason(1, 0, {"a", "b"}, 2, quorum=0) is None
    # c declines (1, 0): everyone answered.
    r.on_status("c", online("c", round=1, sub=0, skip="battery"))
    assert r.close_reason(1, 0, {"a", "b"}, 2, quorum=0) == "all_answered"
    # A skip for another (round, sub) does not count.
    assert r.close_reason(1, 1, {"a", "b"}, 2, quorum=0) is None
    # A later status without skip keeps the remembered skip.
    r.on_status("c", online("c"))
    assert r.close_reason(1, 0, {"a", "b"}, 2, quorum=0) == "all_answered"
    # Everyone skipped: nothing will come, so close now rather than at the deadline.
    for dev in ("a", "b"):
        r.on_status(dev, online(dev, round=1, sub=0, skip="ram"))
    assert r.skipped(1, 0) == r.live == {"a", "b", "c"}
    assert r.close_reason(1, 0, set(), 0, quorum=0) == "all_answered"
    # No live device and no update: nothing is known yet, keep waiting.
    assert Roster("gw0").close_reason(1, 0, set(), 0, quorum=0) is None
    assert r.close_reason(1, 1, {"a"}, 1, quorum=1) == "quorum"
    assert r.close_reason(1, 1, {"a"}, 1, quorum=2) is None


def test_no_live_device_closes_after_first_update() -> None:
    r = Roster("gw0")
    r.on_update("x")
    assert r.close_reason(1, 0, {"x"}, 1, quorum=0) == "all_answered"
