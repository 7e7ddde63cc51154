"""Run a fleet of simulated devices, each its own MQTT connection, until the last round (``done: true``).

All connections are driven by one network loop (``device_sim.netloop.NetLoop``: one thread, a selector over every
socket, plus every device's timers); training runs on a pool of ``settings.workers`` threads.

Progress events passed to ``progress`` (called from the network loop and training threads, so keep it quick and
thread-safe): ``connected`` / ``skip`` / ``up`` / ``ack`` / ``resend`` / ``gave_up`` / ``done`` from each device
(with ``dev``), plus ``fleet_connected`` (``connected``, ``devices``, live ``threads``) once the connections are up,
``chaos`` for each device fault injected (``settings.chaos``, see ``device_sim.chaos``) and ``fleet_finished``
(``seconds``, ``stopped``) at the end.
Devices that a ``drop-devices`` fault made vanish are not waited for.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from device_sim.attack import parse_attack
from device_sim.battery import Battery
from device_sim.chaos import FleetChaos
from device_sim.device import SimDevice
from device_sim.netloop import NetLoop
from device_sim.population import DeviceProfile, build_population
from device_sim.provisioned import logins_for
from device_sim.report import FleetReport
from device_sim.settings import FleetSettings
from device_sim.usage import process_usage, raise_fd_limit, rss_mb
from flcore.datasets import Dataset
from flcore.endpoints import parse_broker_url
from flcore.model import ModelSpec
from flcore.resources import can_train

log = logging.getLogger(__name__)

Progress = Callable[[dict[str, Any]], None]


def _wait(predicate: Callable[[], bool], stop: threading.Event, deadline: float | None, step: float = 0.1) -> bool:
    """Poll ``predicate`` until it holds (True), or ``stop`` is set / ``deadline`` (monotonic) passes (False)."""
    while not predicate():
        if stop.is_set() or (deadline is not None and time.monotonic() >= deadline):
            return False
        stop.wait(step)
    return True


def emitter(progress: Progress | None) -> Progress:
    """``progress`` made safe to call from any thread: a failing callback is logged, never raised."""

    def emit(event: dict[str, Any]) -> None:
        if progress is not None:
            try:
                progress(event)
            except Exception:
                log.exception("progress callback failed on %s", event.get("event"))

    return emit


def run_fleet(
    settings: FleetSettings, dataset: Dataset, stop: threading.Event, progress: Progress | None = None
) -> FleetReport:
    """Connect every device, serve tasks until every device saw ``done: true`` (or ``stop`` / ``run_timeout``).

    With ``settings.sim == "batched"`` the devices train together over shared connections (``batch_fleet``).
    Raises ConnectionError (a readable message) when devices cannot reach the broker at all, ValueError when
    ``settings.provisioned`` does not hold every simulated device.
    """
    emit = emitter(progress)
    if settings.sim == "batched":
        from device_sim.batch_fleet import BatchedFleet

        return BatchedFleet(settings, dataset, stop, emit).run()
    started = time.monotonic()
    end = None if settings.run_timeout is None else started + settings.run_timeout
    profiles = build_population(settings, dataset.y_train)
    model = settings.battery_model()
    base_rss = rss_mb()
    raise_fd_limit(settings.devices)
    pool = ThreadPoolExecutor(settings.workers, thread_name_prefix="iotfl-train")
    net = NetLoop(name="iotfl-net")
    devices: list[SimDevice] = []

    chaos = FleetChaos(settings.chaos_plan(), settings.seed, emit)

    def on_event(event: dict[str, Any]) -> None:
        chaos.observe(event)
        emit(event)

    slow = chaos.initially_slow([p.dev for p in profiles])
    keys = settings.keys()
    logins = logins_for(settings.provisioned, {p.dev: p.gw for p in profiles})
    attack = parse_attack(settings.attack) if settings.attack else None
    attackers = set() if attack is None else attack.choose(trainers(profiles, dataset), len(profiles), settings.seed)
    finished = False
    threads = threading.active_count()
    try:
        for p in profiles:
            if stop.is_set():
                break
            hostile = attack if p.dev in attackers else None
            y = dataset.y_train[p.indices]
            device = SimDevice(
                p.dev,
                p.gw,
                dataset.x_train[p.indices],
                y if hostile is None else hostile.labels(y, dataset.layers[-1]),
                ram_class=p.ram_class,
                battery=Battery(model, p.battery),
                settings=settings,
                pool=pool,
                rssi=p.rssi,
                on_event=on_event,
                key=keys.get(p.dev),
                login=logins.get(p.dev),
                net=net,
            )
            device.slow = p.dev in slow
            device.attack = hostile
            device.start()
            devices.append(device)
            if settings.connect_stagger:
                stop.wait(settings.connect_stagger)
        connect_end = time.monotonic() + settings.connect_timeout
        all_up = _wait(lambda: all(d.connected.is_set() for d in devices), stop, connect_end)
        up = sum(d.connected.is_set() for d in devices)
        if not all_up and not stop.is_set():
            log.warning(
                "%d of %d devices connected within %.0f s; the rest keep retrying",
                up,
                len(devices),
                settings.connect_timeout,
            )
        log.info(
            "fleet %s: %d devices on %d gateways connected to %s",
            settings.fleet,
            up,
            settings.gateways,
            parse_broker_url(settings.broker),
        )
        threads = threading.active_count()
        emit({"event": "fleet_connected", "connected": up, "devices": len(devices), "threads": threads})
        chaos.start(devices)
        finished = _wait(lambda: all(d.done.is_set() or d.vanished for d in devices), stop, end, step=0.2)
    finally:
        threads = max(threads, threading.active_count())  # now with the training threads
        chaos.stop()
        _stop_all(devices)
        pool.shutdown(wait=True, cancel_futures=True)
        net.stop()
    seconds = time.monotonic() - started
    emit({"event": "fleet_finished", "seconds": seconds, "stopped": not finished})
    reports = [d.report for d in devices]
    return FleetReport(
        reports,
        seconds,
        stopped=not finished,
        chaos=chaos.events,
        attackers=sorted(attackers),
        process=process_usage(base_rss, threads),
    )


def trainers(profiles: list[DeviceProfile], dataset: Dataset) -> list[str]:
    """Devices whose RAM class can train the dataset's model at all (batch 1): the ones an attacker can be."""
    spec = ModelSpec(dataset.layers)
    return [p.dev for p in profiles if can_train(spec, p.ram_class, 1)]


def _stop_all(devices: list[SimDevice]) -> None:
    """Stop devices a few at a time: each waits for its offline status to be acknowledged."""
    if not devices:
        return
    with ThreadPoolExecutor(min(8, len(devices)), thread_name_prefix="iotfl-stop") as ex:
        list(ex.map(lambda d: d.stop(), devices))


__all__ = ["FleetReport", "run_fleet"]
