"""The batched fleet's outbox: keep until acked, re-send after the timeout while online, give up, bonus re-sends."""

from __future__ import annotations

import random

from device_sim.batch_outbox import Kept, SharedOutbox


def kept(dev: str, seq: int, gw: str = "gw0", due: float = 10.0) -> Kept:
    return Kept(dev, gw, seq, 1, 0, f"{dev}:{seq}".encode(), due)


def online(_gw: str) -> bool:
    return True


def test_settle_takes_the_update_out() -> None:
    box = SharedOutbox(5.0, 2)
    box.add(kept("d1", 1))
    box.add(kept("d2", 1))
    assert box.settle("d1", 2) is None
    settled = box.settle("d1", 1)
    assert settled is not None and settled.payload == b"d1:1"
    assert box.settle("d1", 1) is None and len(box) == 1


def test_resends_until_max_then_gives_up() -> None:
    box = SharedOutbox(5.0, 2)
    box.add(kept("d1", 1, due=10.0))
    assert box.due(9.9, online) == ([], [])
    sends = []
    now = 10.0
    for _ in range(2):
        resend, gave_up = box.due(now, online)
        assert [k.dev for k in resend] == ["d1"] and gave_up == []
        sends.append(resend[0].sends)
        assert box.due(now + 4.9, online) == ([], [])  # the next timeout starts at the re-send
        now += 5.0
    resend, gave_up = box.due(now, online)
    assert resend == [] and [k.sends for k in gave_up] == [3]
    assert sends == [2, 3] and len(box) == 0


def test_offline_gateway_waits_without_counting() -> None:
    box = SharedOutbox(5.0, 0)
    box.add(kept("d1", 1, gw="gw1", due=0.0))
    assert box.due(1.0, lambda gw: gw != "gw1") == ([], [])
    assert len(box) == 1
    resend, gave_up = box.due(6.0, lambda gw: False)
    assert resend == [] and gave_up == []
    _, gave_up = box.due(11.0, online)
    assert [k.dev for k in gave_up] == ["d1"]  # max_resends 0: the first timeout online gives up


def test_rearm_spreads_bonus_resends_of_one_gateway() -> None:
    box = SharedOutbox(5.0, 0, rng=random.Random(1))
    box.add(kept("d1", 1, gw="gw0", due=100.0))
    box.add(kept("d2", 1, gw="gw1", due=100.0))
    box.rearm("gw0", within=1.0, now=50.0)
    resend, gave_up = box.due(51.0, online)
    assert [k.dev for k in resend] == ["d1"] and gave_up == []
    assert resend[0].sends == 1  # a bonus re-send does not count against max_resends
