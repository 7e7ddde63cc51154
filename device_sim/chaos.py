"""The device faults of ``--chaos`` (``drop-devices``, ``slow-devices``), injected into a running simulated fleet.

A fault with trigger ``roundN`` fires *mid-round N*: at the first ``accepted`` ack of a round ≥ N that any device
of the fleet receives (so round N is open and updates are in flight; if round N went by unseen, the next round's
first ack fires it). ``slow-devices@round1`` (its default) makes its devices slow before they connect. Which devices
a fault hits is ``flcore.chaos.pick`` over the devices still running, from the fleet's seed: a run is repeatable.
Faults run on their own thread, never on the network loop (``crash`` waits for the loop to let go of a device).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from device_sim.device import SimDevice
from flcore.chaos import ChaosPlan, Fault, pick

log = logging.getLogger(__name__)

Emit = Callable[[dict[str, Any]], None]


class FleetChaos:
    """Arms the device faults of ``plan`` (triggers already resolved to rounds) over a fleet's devices."""

    def __init__(self, plan: ChaosPlan, seed: int, emit: Emit | None = None):
        if any(f.by_demo or f.when.round is None for f in plan.faults):
            raise ValueError(f"the fleet injects device faults with round triggers only, got {plan}")
        self.seed = seed
        self.events: list[dict[str, Any]] = []
        self._emit = emit
        self._started = time.monotonic()
        self._lock = threading.Lock()
        self._devices: list[SimDevice] = []
        self._armed = [(i, f) for i, f in enumerate(plan.faults) if not self._at_start(f)]
        self._at_once = [(i, f) for i, f in enumerate(plan.faults) if self._at_start(f)]
        self._due: queue.Queue[tuple[int, Fault, int] | None] = queue.Queue()
        self._thread: threading.Thread | None = None

    @staticmethod
    def _at_start(fault: Fault) -> bool:
        return fault.kind == "slow-devices" and fault.when.round == 1

    def initially_slow(self, devs: Sequence[str]) -> set[str]:
        """The devices ``slow-devices@round1`` makes slow from the start (recorded as injected at time 0)."""
        slow: set[str] = set()
        for i, fault in self._at_once:
            assert fault.share is not None  # a device fault always has one
            chosen = pick(devs, fault.share, self.seed, f"{fault.kind}:{i}")
            slow.update(chosen)
            self._record(fault, chosen, trigger="start of the run")
        return slow

    def start(self, devices: list[SimDevice]) -> None:
        self._devices = devices
        if self._armed:
            self._thread = threading.Thread(target=self._run, name="iotfl-chaos", daemon=True)
            self._thread.start()

    def observe(self, event: dict[str, Any]) -> None:
        """A device event (any thread): an ``accepted`` ack may fire armed faults."""
        if event.get("event") != "ack" or event.get("status") != "accepted" or not self._armed:
            return
        rnd = event.get("round")
        if not isinstance(rnd, int):
            return
        with self._lock:
            fire = [(i, f) for i, f in self._armed if f.when.round is not None and rnd >= f.when.round]
            self._armed = [item for item in self._armed if item not in fire]
        for i, fault in fire:
            self._due.put((i, fault, rnd))

    def stop(self) -> None:
        """End the fault thread (bounded) and record the faults that never fired."""
        if self._thread is not None:
            self._due.put(None)
            self._thread.join(10)
        with self._lock:
            left, self._armed = self._armed, []
        for _i, fault in left:
            self.events.append({"fault": str(fault), "round": fault.when.round, "injected": False})

    def _run(self) -> None:
        while True:
            item = self._due.get()
            if item is None:
                return
            i, fault, rnd = item
            try:
                self._inject(i, fault, rnd)
            except Exception:
                log.exception("chaos fault %s failed", fault)

    def _inject(self, i: int, fault: Fault, rnd: int) -> None:
        assert fault.share is not None
        running = [d for d in self._devices if not d.vanished and not d.done.is_set()]
        chosen = pick([d.dev for d in running], fault.share, self.seed, f"{fault.kind}:{i}")
        by_id = {d.dev: d for d in running}
        if fault.kind == "drop-devices":
            for dev in chosen:
                by_id[dev].vanish()
        else:
            for dev in chosen:
                by_id[dev].slow = True
        log.warning("chaos: %s hit %d device(s) at round %d: %s", fault, len(chosen), rnd, ", ".join(chosen))
        self._record(fault, chosen, trigger=f"first accepted update of round {rnd}")

    def _record(self, fault: Fault, chosen: list[str], trigger: str) -> None:
        event = {
            "fault": str(fault),
            "round": fault.when.round,
            "injected": True,
            "t": round(time.monotonic() - self._started, 3),
            "time": time.time(),
            "trigger": trigger,
            "what": f"{len(chosen)} device(s) {'vanished' if fault.kind == 'drop-devices' else 'made slow'}",
            "devices": chosen,
        }
        with self._lock:
            self.events.append(event)
        if self._emit is not None:
            self._emit({"event": "chaos", **event})


__all__ = ["FleetChaos"]
