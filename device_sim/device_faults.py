"""Fault injection on one simulated device (chaos): crash, lose power mid-round, drop the connection."""

from __future__ import annotations

import threading

import paho.mqtt.client as mqtt

from device_sim.connection import cut
from device_sim.netloop import Link, NetLoop, TimerHandle
from device_sim.outbox import Outbox
from device_sim.report import DeviceReport


class DeviceFaults:
    """The faults a ``SimDevice`` can be made to suffer, over the state it keeps (declared here for the checker)."""

    report: DeviceReport
    connected: threading.Event
    vanished: bool
    outbox: Outbox
    _lock: threading.Lock
    _stopped: bool
    _own_net: bool
    _net: NetLoop
    _link: Link | None
    _delayed: set[TimerHandle]
    _client: mqtt.Client

    def crash(self) -> None:
        """Fault injection: vanish without a DISCONNECT (the loop lets go of it, socket closed), so the broker
        publishes the Last Will at once."""
        with self._lock:
            self._stopped = True
        self._quiet()
        if self._link is not None:
            self._net.halt(self._link)
        cut(self._client, close=True)
        self.connected.clear()

    def vanish(self) -> None:
        """Fault injection (chaos ``drop-devices``): lose power mid-round. No DISCONNECT, no FIN: the TCP
        connection stays open and silent, so the broker only notices after 1.5 × keepalive and then publishes
        the Last Will; the gateway must close the round by quorum or deadline meanwhile."""
        with self._lock:
            self._stopped = True
            self.vanished = True
            self.report.vanished = True
        self._quiet()
        if self._link is not None:
            self._net.halt(self._link, wait=False)  # a fleet drops many at once; the loop lets go in its next turn
        self.connected.clear()

    def drop_connection(self) -> None:
        """Fault injection: cut the TCP connection; the network loop reconnects after a jittered backoff."""
        cut(self._client, close=False)

    def _end_own_net(self) -> None:
        if self._own_net:
            self._net.stop()

    def _quiet(self) -> None:
        """No more sends: stop the ack timers and the delayed publishes of a slow device."""
        self.outbox.close()
        with self._lock:
            delayed, self._delayed = self._delayed, set()
        for timer in delayed:
            timer.cancel()


__all__ = ["DeviceFaults"]
