"""The gateway service: poll the cloud, run each global round as ``gateway_rounds`` sub-rounds, queue the aggregate.

``run(settings, stop)`` blocks until ``stop`` is set. Every wait is sliced so a stop is honoured within about a
second (an HTTP request in flight may hold it for its own timeout). A closed round's ``agg`` goes into the durable
outbox and a ``Forwarder`` thread posts it while the round loop carries on; a restarted gateway resumes the open
round from its journal, skips a round the outbox shows it already forwarded, and forwards a journaled round the
cloud has moved past (late: the cloud counts it in its open round).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from dataclasses import replace
from typing import Any

import numpy as np

from flcore.encodings import TOPK
from flcore.messages import Agg, Task
from gateway.cloud_client import CloudClient, CloudError, RoundInfo
from gateway.forwarder import Forwarder
from gateway.health import HealthFile, status_path
from gateway.journal import Journal
from gateway.local_model import LocalModel
from gateway.metrics import serve
from gateway.node import GatewayNode
from gateway.outbox import Outbox
from gateway.reporter import Reporter
from gateway.settings import GatewaySettings

log = logging.getLogger(__name__)

CONNECT_WAIT = 1.0
HTTP_TIMEOUT = 5.0
FORWARDER_JOIN = 3.0
# A round with less time than this before it must close is sat out rather than opened for nothing.
MIN_OPEN = 1.0


def model_digest(w: np.ndarray) -> str:
    """A short fingerprint of base weights: tells a resumed round from a same-numbered round of a fresh cloud."""
    return hashlib.sha256(np.asarray(w, dtype="<f4").tobytes()).hexdigest()[:16]


class RoundLoop:
    """The gateway's round state machine over a ``GatewayNode`` (connected once a round opens) and a ``CloudClient``."""

    def __init__(
        self,
        settings: GatewaySettings,
        node: GatewayNode,
        cloud: CloudClient,
        journal: Journal,
        stop: threading.Event,
        outbox: Outbox | None = None,
        forwarder: Forwarder | None = None,
    ) -> None:
        self.settings = settings
        self.node = node
        self.cloud = cloud
        self.journal = journal
        self.stop = stop
        self.outbox = outbox or Outbox(settings.state_dir, settings.cloud_id)
        self.forwarder = forwarder or Forwarder(
            self.outbox, cloud, stop, pause=node.pause, on_change=self.report_health
        )
        self.health = HealthFile(status_path(settings.state_dir, settings.cloud_id))
        self.handled = 0
        self.round = 0
        self.done_published = False
        self._cloud_ok: bool | None = None
        self._connected = False

    def run(self) -> None:
        while not self.stop.is_set():
            info = self._poll()
            self.report_health()
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
                    self.settings.upstream,
                    exc,
                    self.settings.poll_interval,
                )
            self._cloud_ok = False
            return None
        if self._cloud_ok is not True:
            log.info("cloud %s reachable: round %d %s", self.settings.upstream, info.round, info.state)
            self.forwarder.wake()  # the cloud is back: post what waited without sitting out the backoff
        self._cloud_ok = True
        return info

    def report_health(self) -> None:
        """Refresh the status file (``gateway.health``) when something in it changed."""
        self.health.update(self.snapshot())

    def snapshot(self) -> dict[str, Any]:
        """The gateway's status now: the status file's keys (``gateway.health``), also read by each metrics scrape."""
        stats = self.node.broker_stats
        return {
            "gw": self.settings.id,
            "round": self.round,
            "mqtt_connected": self.node.connected,
            "cloud_reachable": self._cloud_ok,
            "outbox_depth": self.outbox.depth(),
            "outbox_oldest_s": _rounded(self.outbox.oldest_age()),
            "broker_dropped": stats.latest,
            "broker_dropped_seen": stats.total,
            "forwarded": self.forwarder.delivered,
            "refused": self.forwarder.refused,
            "counters": dict(sorted(self.node.counters.items())),
            "devices": self.node.devices_live,
        }

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
        digest = model_digest(model.w)
        self.round = info.round
        self.node.set_mode(info.mode)
        self._forward_unfinished(info, model.w)
        forwarded = self.outbox.state_of(info.round, info.base, digest)
        if forwarded is not None:
            return self._hold_forwarded(info, model.w, forwarded)
        replay = self.journal.begin(info.round, info.base, digest)
        close_by = info.deadline - self.settings.forward_margin
        if replay is None and close_by - time.time() < MIN_OPEN:
            # Too late to collect and still forward in time: updates acked now would miss the cloud's round.
            log.warning(
                "round %d: %.1f s left before the cloud's deadline; not opening it (forward margin %.1f s)",
                info.round,
                info.deadline - time.time(),
                self.settings.forward_margin,
            )
            return True
        # This round's keys (and those of stale updates folded into it) come back with the replayed payloads.
        self.node.remember(self.journal.accepted(replayed=info.round))
        local = LocalModel(model.w)
        log.info(
            "round %d opened (%s): base %d, %d parameters, %d sub-round(s), cloud deadline in %.1f s%s",
            info.round,
            info.mode,
            info.base,
            model.w.size,
            info.gateway_rounds,
            info.deadline - time.time(),
            " (resuming from the journal)" if replay else "",
        )
        for sub in range(info.gateway_rounds):
            deadline = min(close_by, time.time() + self.settings.round_timeout)
            task = self._task(info, local.weights, sub, deadline)
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
            self.report_health()
            if time.time() >= close_by:
                break
        self.node.pause.reached("before_forward", self.stop)
        self._enqueue(info, local, digest)
        return True

    def _forward_unfinished(self, info: RoundInfo, w: np.ndarray) -> None:
        """Queue the aggregate of a journaled round the cloud has moved past (a stop or crash cut it short): its
        updates were acknowledged, and the cloud counts a late aggregate in its open round, staleness-weighted."""
        left = self.journal.unfinished(info.round)
        if left is None:
            return
        round_, base, digest, replay = left
        if self.outbox.state_of(round_, base, digest) is not None:
            return
        past = replace(info, round=round_, base=base)
        # The reported sum is n · (the sub-rounds' mean deltas), whatever weights the sub-rounds started from.
        local = LocalModel(w)
        for sub in sorted(set(replay.ups) | replay.closed):
            self.node.open_sub_round(self._task(past, local.weights, sub, time.time()), replay.ups.get(sub, []), False)
            local.fold(self.node.close_sub_round(journal=False))
        log.warning(
            "round %d was cut short by a stop or crash and the cloud is at round %d: forwarding its %d journaled "
            "update(s) late",
            round_,
            info.round,
            sum(len(ups) for ups in replay.ups.values()),
        )
        self._enqueue(past, local, digest)

    def _hold_forwarded(self, info: RoundInfo, w: np.ndarray, state: str) -> bool:
        """A round the outbox already holds (a restart after forwarding): answer its devices, do not run it again."""
        log.info("round %d was forwarded before this start (%s); waiting for the next round", info.round, state)
        self.node.remember(self.journal.accepted())
        self.node.hold_closed(self._task(info, w, info.gateway_rounds - 1, info.deadline))
        self._ensure_connected()
        self.forwarder.wake()
        return True

    def _enqueue(self, info: RoundInfo, local: LocalModel, digest: str) -> None:
        """Commit the round's ``agg`` to the outbox; the forwarder posts it while the gateway carries on."""
        totals = self.node.totals
        counters = dict(sorted(self.node.counters.items()))
        dropped = self.node.broker_stats
        broker = "unknown" if dropped.latest is None else f"+{dropped.take()} (counter {dropped.latest})"
        if totals is None or totals.k == 0:
            log.info(
                "round %d closed with no accepted update; nothing to post (counters %s; broker dropped %s)",
                info.round,
                counters,
                broker,
            )
            return
        total, cover = local.aggregate_sum(totals.n)
        agg = Agg(
            self.settings.cloud_id,
            info.round,
            info.base,
            totals.n,
            totals.k,
            total,
            totals.loss,
            totals.bytes_up,
            tuple(sorted(totals.devices)),
            totals.pers if totals.pers.c else None,
            cover,
        )
        self.outbox.put(agg, digest)
        self.forwarder.wake()
        log.info(
            "round %d closed: k=%d n=%d stale=%d loss=%.4f bytes_up=%d devices=%d, queued for the cloud (outbox depth "
            "%d; counters %s; broker dropped %s)",
            info.round,
            agg.k,
            agg.n,
            totals.stale,
            agg.loss,
            agg.bytes_up,
            len(agg.devices),
            self.outbox.depth(),
            counters,
            broker,
        )
        self.report_health()

    def _task(self, info: RoundInfo, w: np.ndarray, sub: int, deadline: float) -> Task:
        """The task of a sub-round, naming this gateway's update encoding when it has one."""
        enc = self.settings.enc or None
        return Task(
            info.round,
            info.base,
            info.layers,
            w,
            info.lr,
            info.epochs,
            info.batch,
            info.chunk,
            deadline,
            info.min_battery,
            select=self.node.select(info.select, info.round, sub),
            sub=sub,
            enc=enc,
            topk=self.settings.topk if enc == TOPK else None,
            personal=info.personal,
            widths=info.widths,
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


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def run(settings: GatewaySettings, stop: threading.Event) -> None:
    """Run the gateway until ``stop`` is set."""
    journal = Journal(settings.state_dir, settings.cloud_id)
    outbox = Outbox(settings.state_dir, settings.cloud_id)
    node = GatewayNode.from_settings(settings, journal)
    cloud = CloudClient(settings.upstream, settings.token, timeout=HTTP_TIMEOUT, ca=settings.cloud_ca)
    log.info(
        "gateway %s (fleet %s): broker %s, cloud %s, quorum %s, round timeout %.1f s, state %s (outbox depth %d)%s%s",
        settings.cloud_id,
        settings.fleet,
        settings.broker_address,
        settings.upstream + (" (parent gateway)" if settings.parent else ""),
        settings.quorum
        or (f"{settings.quorum_fraction:.0%} of live devices" if settings.quorum_fraction else "all live devices"),
        settings.round_timeout,
        journal.path,
        outbox.depth(),
        f", worker {settings.worker_id} of share group {settings.share_group} (dedup {settings.dedup})"
        if settings.share_group
        else "",
        f", TEST HOOK pause_at={settings.pause_at}" if settings.pause_at else "",
    )
    loop = RoundLoop(settings, node, cloud, journal, stop, outbox)
    node.metrics.watch(loop.snapshot)
    exposed = None
    reporter = Reporter(settings.id, node, cloud, stop, settings.report_interval)
    try:
        if settings.metrics_port:
            exposed = serve(node.metrics, settings.metrics_host, settings.metrics_port)
        loop.forwarder.start()
        reporter.start()
        loop.run()
    finally:
        stop.set()
        if exposed is not None:
            exposed.close()
        loop.forwarder.join(FORWARDER_JOIN)
        reporter.join(FORWARDER_JOIN)
        node.stop()
        cloud.close()
        journal.close()
        outbox.close()
        log.info("gateway %s stopped", settings.id)


__all__ = ["RoundLoop", "model_digest", "run"]
