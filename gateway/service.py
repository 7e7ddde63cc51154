"""The gateway service: poll the cloud, run each global round as ``gateway_rounds`` sub-rounds, post the aggregate.

``run(settings, stop)`` blocks until ``stop`` is set. Every wait is sliced so a stop is honoured within about a
second (an HTTP request in flight may hold it for its own timeout).
"""

from __future__ import annotations

import logging
import threading
import time

from flcore.messages import Agg, Task
from gateway.cloud_client import CloudClient, CloudError, CloudRefused, RoundInfo
from gateway.journal import Journal
from gateway.local_model import LocalModel
from gateway.node import GatewayNode
from gateway.settings import GatewaySettings

log = logging.getLogger(__name__)

CONNECT_WAIT = 1.0
HTTP_TIMEOUT = 5.0
MIN_POST_BUDGET = 10.0


class RoundLoop:
    """The gateway's round state machine over a ``GatewayNode`` (connected once a round opens) and a ``CloudClient``."""

    def __init__(
        self, settings: GatewaySettings, node: GatewayNode, cloud: CloudClient, journal: Journal, stop: threading.Event
    ) -> None:
        self.settings = settings
        self.node = node
        self.cloud = cloud
        self.journal = journal
        self.stop = stop
        self.handled = 0
        self.done_published = False
        self._cloud_ok: bool | None = None
        self._connected = False

    def run(self) -> None:
        while not self.stop.is_set():
            info = self._poll()
            if info is not None and info.state == "done":
                if not self.done_published:
                    self.done_published = self._publish_done(info)
            elif info is not None and info.round > self.handled:
                self.done_published = False
                if self.run_round(info):
                    self.handled = info.round
            self.stop.wait(self.settings.poll_interval)

    def _ensure_connected(self) -> None:
        """Connect to the broker once the first round is open, so what the persistent session queued while the
        gateway was down is judged against that round (instead of being rejected as ``future_round``)."""
        if not self._connected:
            self._connected = True
            self.node.start(CONNECT_WAIT)

    def _poll(self) -> RoundInfo | None:
        try:
            info = self.cloud.current()
        except CloudError as exc:
            if self._cloud_ok is not False:
                log.warning(
                    "cloud %s unreachable (%s); polling every %.1f s",
                    self.settings.cloud,
                    exc,
                    self.settings.poll_interval,
                )
            self._cloud_ok = False
            return None
        if self._cloud_ok is not True:
            log.info("cloud %s reachable: round %d %s", self.settings.cloud, info.round, info.state)
        self._cloud_ok = True
        return info

    def run_round(self, info: RoundInfo) -> bool:
        """Run one global round; False when it should be tried again (no model yet, or stopping)."""
        try:
            model = self.cloud.model()
        except CloudError as exc:
            log.warning("round %d: cannot fetch the model: %s", info.round, exc)
            return False
        if model.version != info.base or model.layers != info.layers:
            log.info(
                "round %d: cloud model is version %d %s, the round needs base %d %s; waiting",
                info.round,
                model.version,
                model.layers,
                info.base,
                info.layers,
            )
            return False
        replay = self.journal.begin(info.round, info.base)
        local = LocalModel(model.w)
        log.info(
            "round %d opened: base %d, %d parameters, %d sub-round(s), cloud deadline in %.1f s%s",
            info.round,
            info.base,
            model.w.size,
            info.gateway_rounds,
            info.deadline - time.time(),
            " (resuming from the journal)" if replay else "",
        )
        for sub in range(info.gateway_rounds):
            deadline = min(info.deadline, time.time() + self.settings.round_timeout)
            task = Task(
                info.round,
                info.base,
                info.layers,
                local.weights,
                info.lr,
                info.epochs,
                info.batch,
                info.chunk,
                deadline,
                info.min_battery,
                sub=sub,
            )
            journaled = replay.ups.get(sub, []) if replay else []
            if replay is not None and sub in replay.closed:
                self.node.open_sub_round(task, journaled, publish=False)
                local.fold(self.node.close_sub_round(journal=False))  # already journaled as closed
                continue
            self.node.open_sub_round(task, journaled)
            self._ensure_connected()
            reason = self.node.wait_closed(deadline, self.stop)
            if reason == "stop":  # not closed: a restart resumes this sub-round from the journal
                return False
            total = self.node.close_sub_round()
            local.fold(total)
            log.info("round %d sub %d closed (%s): k=%d n=%d", info.round, sub, reason, total.k, total.n)
            if time.time() >= info.deadline:
                break
        self._post(info, local)
        return True

    def _post(self, info: RoundInfo, local: LocalModel) -> None:
        totals = self.node.totals
        counters = dict(sorted(self.node.counters.items()))
        if totals is None or totals.k == 0:
            log.info("round %d closed with no accepted update; nothing to post (counters %s)", info.round, counters)
            return
        agg = Agg(
            self.settings.id,
            info.round,
            info.base,
            totals.n,
            totals.k,
            local.aggregate_sum(totals.n),
            totals.loss,
            totals.bytes_up,
            tuple(sorted(totals.devices)),
        )
        budget = max(MIN_POST_BUDGET, 2 * self.settings.round_timeout)
        try:
            result = self.cloud.post(agg, time.monotonic() + budget, self.stop)
        except CloudRefused as exc:
            log.error("round %d: the cloud refused the aggregate: %s", info.round, exc)
            return
        except CloudError as exc:
            log.error("round %d: could not post the aggregate: %s", info.round, exc)
            return
        log.info(
            "round %d posted (%s): k=%d n=%d loss=%.4f bytes_up=%d devices=%d (counters %s)",
            info.round,
            result,
            agg.k,
            agg.n,
            agg.loss,
            agg.bytes_up,
            len(agg.devices),
            counters,
        )

    def _publish_done(self, info: RoundInfo) -> bool:
        try:
            model = self.cloud.model()
        except CloudError as exc:
            log.warning("training is done but the final model is unavailable: %s", exc)
            return False
        self.node.publish_task(
            Task(
                info.round,
                model.version,
                model.layers,
                model.w,
                info.lr,
                info.epochs,
                info.batch,
                info.chunk,
                time.time(),
                info.min_battery,
                done=True,
            )
        )
        self._ensure_connected()
        log.info("training done after round %d: published the final model (version %d)", info.round, model.version)
        return True


def run(settings: GatewaySettings, stop: threading.Event) -> None:
    """Run the gateway until ``stop`` is set."""
    journal = Journal(settings.state_dir, settings.id)
    node = GatewayNode.from_settings(settings, journal)
    cloud = CloudClient(settings.cloud, settings.token, timeout=HTTP_TIMEOUT)
    log.info(
        "gateway %s (fleet %s): broker %s, cloud %s, quorum %s, round timeout %.1f s",
        settings.id,
        settings.fleet,
        settings.broker_address,
        settings.cloud,
        settings.quorum or "all live devices",
        settings.round_timeout,
    )
    try:
        RoundLoop(settings, node, cloud, journal, stop).run()
    finally:
        node.stop()
        cloud.close()
        journal.close()
        log.info("gateway %s stopped", settings.id)


__all__ = ["RoundLoop", "run"]
