"""Async mode on the broker: an update that reaches a gateway between two rounds waits unanswered, then is
accepted as stale (and journaled first) once the next round opens."""

from __future__ import annotations

import time
from pathlib import Path

from gateway_peers import WAIT, devices, make_task, make_up, started_node

from flcore.messages import Status
from gateway.journal import Journal
from iotfl.broker import Broker


def test_an_update_between_rounds_is_answered_when_the_next_round_opens(mosquitto: Broker, tmp_path: Path) -> None:
    journal = Journal(tmp_path, "gw0")
    journal.begin(1, 0, "m")
    with started_node(mosquitto.url, journal=journal) as node, devices(mosquitto.url, "s") as (s,):
        node.set_mode("async")
        s.status(Status("s", "online", gw="gw0"))
        node.open_sub_round(make_task(round=1))
        node.close_sub_round()
        s.send(make_up("s", round=1, base=0, n=8, seq=4))
        assert s.no_ack(within=0.7)  # parked: no ack while no round is open
        assert node.counters["parked"] == 1
        journal.begin(2, 1, "m")
        node.open_sub_round(make_task(round=2, base=1))
        ack = s.ack()
        assert (ack.status, ack.round, ack.seq) == ("accepted", 1, 4)
        assert node.totals is not None and (node.totals.k, node.totals.stale, node.totals.n) == (1, 1, 8)
        assert journal.accepted() == {1: {("s", 0)}}  # journaled under its own round's key before the ack
        s.send(make_up("s", round=1, base=0, n=8, seq=4))
        assert s.ack().status == "duplicate"
        start = time.monotonic()
        assert node.wait_closed(time.time() + 0.5) == "deadline"  # a stale update does not answer round 2's task
        assert time.monotonic() - start < WAIT
    journal.close()
