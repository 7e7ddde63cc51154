"""A simulated device encodes its update as the task names (else as its setting) and keeps the top-k residual."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from sim_probe import Probe

from device_sim.device import SimDevice
from device_sim.policy import shuffle_seed
from device_sim.trainer import train_local
from flcore.datasets import sensors
from flcore.encodings import INT4, INT8, TOPK, encode, kept
from flcore.messages import Ack, Task, Up
from flcore.model import ModelSpec
from flcore.topics import GatewayTopics

pytestmark = pytest.mark.timeout(60)

FLEET = "t"
GW = GatewayTopics(FLEET, "gw0")
SPEC = ModelSpec(sensors(0).layers)
P = SPEC.param_count


def task(round: int, **kw: Any) -> Task:
    w = SPEC.init(round)
    return Task(round, round - 1, SPEC.layers, w, 0.1, 2, 8, 16, time.time() + 60, 0.1, **kw)


def true_delta(device: SimDevice, t: Task) -> np.ndarray:
    seed = shuffle_seed(0, device.dev, t.round, 0)
    new_w, _ = train_local(SPEC, t.w, device.x, device.y, t.lr, t.epochs, t.batch, seed)
    return new_w - t.w


@pytest.fixture
def exchange(
    probe_factory: Callable[..., Probe], sim_device: Callable[..., SimDevice]
) -> Callable[..., tuple[SimDevice, Callable[[Task], Up]]]:
    """A device with the given settings and a function: publish a task, return its decoded update (acked)."""
    probe = probe_factory([GW.up_wildcard])

    def make(**settings: Any) -> tuple[SimDevice, Callable[[Task], Up]]:
        device = functools.partial(sim_device, fleet=FLEET, ack_timeout=5.0)(**settings)

        def send(t: Task) -> Up:
            probe.publish(GW.task, t.encode(), retain=True)
            up = Up.decode(probe.expect(lambda m: m.topic == GW.up(device.dev)).payload, params=P)
            probe.publish(GW.ack(device.dev), Ack(up.round, up.seq, "accepted").encode())
            return up

        return device, send

    return make


def test_the_fleet_setting_encodes_when_the_task_names_none(exchange: Callable[..., Any]) -> None:
    device, send = exchange(enc=INT4)
    t = task(1)
    up = send(t)
    expected, _ = encode(true_delta(device, t), INT4, 16)
    assert up.enc == INT4 and np.abs(up.q).max() <= 7
    np.testing.assert_allclose(up.delta(), expected.delta(), atol=1e-6)


def test_the_task_names_topk_and_the_device_feeds_back_what_it_did_not_send(exchange: Callable[..., Any]) -> None:
    device, send = exchange(enc=INT8)
    first, second = task(1, enc=TOPK, topk=0.1), task(2, enc=TOPK, topk=0.1)
    up1, up2 = send(first), send(second)
    assert (up1.enc, up2.enc, up1.p, len(up1.q)) == (TOPK, TOPK, P, kept(P, 0.1))
    d1, d2 = true_delta(device, first), true_delta(device, second)
    sent1, residual = encode(d1, TOPK, 16, 0.1)
    sent2, residual = encode(d2, TOPK, 16, 0.1, residual)
    np.testing.assert_allclose(up1.delta(), sent1.delta(), atol=1e-6)
    np.testing.assert_allclose(up2.delta(), sent2.delta(), atol=1e-6)
    # error feedback: both updates together plus what is still kept add up to both deltas
    assert residual is not None
    np.testing.assert_allclose(up1.delta() + up2.delta() + residual, d1 + d2, atol=1e-5)
    plain = encode(d2, TOPK, 16, 0.1)[0]  # without feedback round 2 would have sent something else
    assert not np.allclose(plain.delta(), up2.delta())
    up3 = send(task(3))  # a task naming nothing: back to the fleet's int8, the residual dropped
    assert up3.enc == INT8 and len(up3.q) == P
