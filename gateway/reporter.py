"""A thread that reports the gateway's round progress, update counters and device statuses to the cloud (its
dashboard) every ``interval`` seconds: ``POST /api/v1/gateways/{gw}/report`` (docs/protocol.md "Gateway reports").

A report carries the statuses that changed since the last one the cloud took, and all of them every ``FULL_EVERY``
reports, so a cloud that lost some (a fresh database) catches up. Reports are best effort: a failed one is logged
once per outage and made good by the next; they never hold up a round.
"""

from __future__ import annotations

import logging
import threading

from gateway.cloud_client import CloudClient, CloudError
from gateway.node import GatewayNode

log = logging.getLogger(__name__)

FULL_EVERY = 30


class Reporter:
    def __init__(self, gw: str, node: GatewayNode, cloud: CloudClient, stop: threading.Event, interval: float):
        self.gw = gw
        self.node = node
        self.cloud = cloud
        self.stop = stop
        self.interval = interval
        self.sent_seq = 0  # statuses up to this sequence number are stored in the cloud
        self.reports = 0
        self._failing = False
        self._thread = threading.Thread(target=self._run, name=f"iotfl-report-{gw}", daemon=True)

    def start(self) -> None:
        if self.interval > 0:
            self._thread.start()

    def join(self, timeout: float) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout)

    def report_once(self) -> bool:
        """Send one report; True when the cloud stored it."""
        since = 0 if self.reports % FULL_EVERY == 0 else self.sent_seq
        seq, body = self.node.report(since)
        try:
            self.cloud.report(self.gw, body)
        except CloudError as exc:
            if not self._failing:
                log.warning("cannot report to the cloud's dashboard (%s); retrying every %.1f s", exc, self.interval)
            self._failing = True
            return False
        if self._failing:
            log.info("reporting to the cloud's dashboard again")
        self._failing = False
        self.sent_seq = seq
        self.reports += 1
        return True

    def _run(self) -> None:
        while not self.stop.wait(self.interval):
            self.report_once()


__all__ = ["FULL_EVERY", "Reporter"]
