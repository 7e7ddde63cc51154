"""GatewayNode over a real mosquitto: retained tasks, acks, the close rule, reconnects, the journal."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
from gateway_peers import WAIT, devices, make_task, make_up, started_node

from flcore.messages import Status, Task
from gateway.journal import Journal
from iotfl.broker import Broker, start_broker


def close_in_thread(node, deadline_in: float = WAIT) -> tuple[threading.Thread, dict]:
    out: dict = {}

    def wait() -> None:
        start = time.monotonic()
        out["reason"] = node.wait_closed(time.time() + deadline_in)
        out["seconds"] = time.monotonic() - start

    thread = threading.Thread(target=wait, daemon=True)
    thread.start()
    return thread, out


def test_task_is_retained_and_acks_reach_the_device(mosquitto: Broker) -> None:
    with started_node(mosquitto.url) as node:
        task = make_task(round=2, base=1)
        node.open_sub_round(task)
        with devices(mosquitto.url, "d1") as (d1,):  # connects after the task was published
            got = d1.tasks.get(timeout=WAIT)
            assert (got.round, got.base, got.sub) == (2, 1, 0)
            np.testing.assert_array_equal(got.w, task.w)
            d1.send(make_up("d1", round=2, base=1, seq=4))
            ack = d1.ack()
            assert (ack.status, ack.round, ack.seq) == ("accepted", 2, 4)
        assert node.close_sub_round().k == 1


def test_closes_when_every_live_device_answered(mosquitto: Broker) -> None:
    with started_node(mosquitto.url) as node, devices(mosquitto.url, "a", "b", "c", "x") as (a, b, c, x):
        for dev in (a, b, c):
            dev.status(Status(dev.dev, "online", gw="gw0"))
        x.status(Status("x", "online", gw="gw1"))  # another gateway's device is not waited for
        node.open_sub_round(make_task())
        thread, out = close_in_thread(node)
        a.send(make_up("a"))
        assert a.ack().status == "accepted"
        c.status(Status("c", "online", gw="gw0", round=1, sub=0, skip="battery"))
        time.sleep(0.3)
        assert "reason" not in out  # b has not answered yet
        b.send(make_up("b"))
        thread.join(WAIT)
        assert out["reason"] == "all_answered" and out["seconds"] < 5
        total = node.close_sub_round()
        assert (total.k, total.n) == (2, 20)


def test_offline_device_is_not_waited_for(mosquitto: Broker) -> None:
    with started_node(mosquitto.url) as node, devices(mosquitto.url, "a", "b") as (a, b):
        a.status(Status("a", "online", gw="gw0"))
        b.status(Status("b", "online", gw="gw0"))
        node.open_sub_round(make_task())
        thread, out = close_in_thread(node)
        a.send(make_up("a"))
        b.status(Status("b", "offline", gw="gw0"))  # what b's Last Will publishes
        thread.join(WAIT)
        assert out["reason"] == "all_answered"


def test_quorum_and_deadline(mosquitto: Broker) -> None:
    with started_node(mosquitto.url, quorum=2) as node, devices(mosquitto.url, "a", "b", "c") as (a, b, c):
        for dev in (a, b, c):
            dev.status(Status(dev.dev, "online", gw="gw0"))
        node.open_sub_round(make_task())
        thread, out = close_in_thread(node)
        a.send(make_up("a"))
        b.send(make_up("b"))
        thread.join(WAIT)
        assert out["reason"] == "quorum"
        assert node.close_sub_round().k == 2
        c.send(make_up("c"))
        assert (c.ack().status, node.counters["late"]) == ("late", 1)
        node.open_sub_round(make_task(sub=1))
        start = time.monotonic()
        assert node.wait_closed(time.time() + 0.5) == "deadline"
        assert 0.4 < time.monotonic() - start < 3
        assert node.close_sub_round().k == 0


def test_wait_returns_promptly_on_stop(mosquitto: Broker) -> None:
    with started_node(mosquitto.url) as node:
        node.open_sub_round(make_task())
        stop = threading.Event()
        threading.Timer(0.2, stop.set).start()
        start = time.monotonic()
        assert node.wait_closed(time.time() + WAIT, stop) == "stop"
        assert time.monotonic() - start < 1.5


def test_broker_restart_reconnects_resubscribes_and_republishes_the_task(mosquitto: Broker, tmp_path: Path) -> None:
    with started_node(mosquitto.url) as node:
        node.open_sub_round(make_task(round=1))
        with devices(mosquitto.url, "a") as (a,):
            a.send(make_up("a", seq=1))
            assert a.ack().status == "accepted"
        mosquitto.kill()  # no persistence: the restarted broker lost the retained task and every session
        node.link.subscribed.clear()
        node.ups.subscribed.clear()
        second = start_broker(port=mosquitto.port, prefer="mosquitto", workdir=tmp_path / "broker2")
        try:
            assert node.link.subscribed.wait(WAIT + 30), "gateway did not reconnect"
            assert node.ups.subscribed.wait(WAIT + 30), "the gateway's up reader did not reconnect"
            with devices(second.url, "a", "b") as (a, b):
                task = a.tasks.get(timeout=WAIT)  # republished after the reconnect
                assert task.round == 1
                a.send(make_up("a", seq=1))  # the device resends after its own reconnect
                assert a.ack().status == "duplicate"
                b.send(make_up("b"))
                assert b.ack().status == "accepted"
            assert node.close_sub_round().k == 2
        finally:
            second.stop()


def test_journal_written_before_ack_and_replayed(mosquitto: Broker, tmp_path: Path) -> None:
    journal = Journal(tmp_path, "gw0")
    journal.begin(1, 0)
    with started_node(mosquitto.url, journal=journal) as node, devices(mosquitto.url, "a", "b") as (a, b):
        node.open_sub_round(make_task())
        a.send(make_up("a", n=3))
        assert a.ack().status == "accepted"
        b.send(b"garbage")
        assert b.ack().status == "rejected"
        first = node.collector.sum.total.copy()
    journal.close()
    replay = Journal(tmp_path, "gw0").begin(1, 0)
    assert replay is not None and [t for t, _ in replay.ups[0]] == ["iotfl/default/gw/gw0/up/a"]
    # A restarted gateway rebuilds the sum and still answers the redelivery with `duplicate`.
    with started_node(mosquitto.url, gw="gw0") as node, devices(mosquitto.url, "a") as (a,):
        node.open_sub_round(make_task(), replay.ups[0])
        np.testing.assert_array_equal(node.collector.sum.total, first)
        a.send(make_up("a", n=3))
        assert a.ack().status == "duplicate"
        assert node.wait_closed(time.time() + WAIT) == "all_answered"


def test_done_task_replaces_the_retained_task(mosquitto: Broker) -> None:
    with started_node(mosquitto.url) as node:
        node.open_sub_round(make_task(round=3))
        t = make_task(round=3, base=3)
        done = node.publish_task(Task(t.round, t.base, t.layers, t.w, t.lr, t.epochs, t.batch, t.chunk, t.deadline,
                                      t.min_battery, done=True))  # fmt: skip
        done.wait_for_publish(WAIT)  # the broker holds it before the late joiner subscribes
        with devices(mosquitto.url, "late-joiner") as (d,):
            got = d.tasks.get(timeout=WAIT)
            assert got.done is True and got.base == 3
            assert d.tasks.empty()
