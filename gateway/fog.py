"""The fog tier: a parent gateway that its child gateways post to as if it were the cloud (site → region → cloud).

``FogNode`` follows the cloud's (or its own parent's) round, shows it to its children with the deadline moved
``forward_margin`` earlier, sums the children's ``agg`` posts (Σ sum, Σ n, Σ k, n-weighted loss) and, once every
live child reported the round or its own close time came, queues one ``agg`` under its own id in the durable outbox
that the gateway's ``Forwarder`` posts upward. The children see the cloud's rules: idempotent per (child, round); an
aggregate of a round the fog already closed is carried into the open round weighted by ``staleness_weight`` (as the
cloud does), or refused ``late`` when none is open; ``future_round`` and ``base_mismatch`` likewise. The HTTP side is
``gateway.fog_http``; this module holds the rules and the round loop.

Each accepted child aggregate is committed to ``gateway.fog_store`` before the child gets its 200; a restarted fog
rebuilds the open round's sums and its idempotency sets from there, and queues any round it never forwarded.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field, replace

import numpy as np

from flcore.fedavg import WeightedSum
from flcore.fedbuff import staleness_weight
from flcore.messages import Agg
from flcore.personal import Pers
from gateway.cloud_client import CloudClient, CloudError, Model, RoundInfo
from gateway.fog_store import FogStore, Folded
from gateway.forwarder import Forwarder
from gateway.outbox import Outbox
from gateway.service import model_digest

log = logging.getLogger(__name__)

# A child is live while it polled within LIVE_FACTOR × round_timeout (the cloud's rule for gateways).
LIVE_FACTOR = 2.0


@dataclass
class _Open:
    """The round the fog collects for: its upstream info and model, and what the children posted."""

    info: RoundInfo
    digest: str
    acc: WeightedSum
    reported: set[str] = field(default_factory=set)
    bytes_up: int = 0
    devices: set[str] = field(default_factory=set)
    pers: Pers = Pers()


class FogNode:
    """The parent gateway's state: upstream round, children's check-ins and posts, the forwarding of one ``agg``."""

    def __init__(
        self,
        fog_id: str,
        upstream: CloudClient,
        outbox: Outbox,
        store: FogStore,
        stop: threading.Event,
        *,
        round_timeout: float,
        forward_margin: float,
        poll_interval: float,
    ) -> None:
        self.id = fog_id
        self.upstream = upstream
        self.outbox = outbox
        self.store = store
        self.stop = stop
        self.round_timeout = round_timeout
        self.forward_margin = forward_margin
        self.poll_interval = poll_interval
        self.forwarder = Forwarder(outbox, upstream, stop)
        self.lock = threading.Lock()
        self.info: RoundInfo | None = None
        self.model: Model | None = None
        self.open: _Open | None = None
        self.closed: dict[int, set[str]] = {}  # forwarded rounds → the children counted in them (idempotency)
        self.seen: dict[str, float] = {}  # child → last check-in (time.time())
        self.known = store.keys()  # what an earlier run accepted (idempotency across a restart)
        self.recovered = False

    # --- what the HTTP side calls ---------------------------------------------------------------------------------

    def checkin(self, child: str) -> None:
        with self.lock:
            self.seen[child] = time.time()

    def current(self) -> RoundInfo | None:
        """The upstream round as the children must see it: closing ``forward_margin`` earlier."""
        with self.lock:
            info = self.info
        if info is None or info.state != "open":
            return info
        return _with_deadline(info, info.deadline - self.forward_margin)

    def submit(self, child: str, agg: Agg) -> str:
        """``accepted``, ``carried``, ``duplicate``, ``late``, ``future_round`` or ``base_mismatch``."""
        with self.lock:
            opening = self.open
            if (
                child in self.closed.get(agg.round, ())
                or child in self.known.get(agg.round, ())
                or (opening is not None and opening.info.round == agg.round and child in opening.reported)
            ):
                return "duplicate"
            if opening is None:
                return "late" if self.info is None or agg.round <= self.info.round else "future_round"
            if agg.round > opening.info.round:
                return "future_round"
            staleness = opening.info.base - agg.base
            if agg.round == opening.info.round and staleness != 0 or agg.round < opening.info.round and staleness <= 0:
                return "base_mismatch"
            weight = staleness_weight(staleness) if staleness else 1.0
            if not self.store.accept(child, agg, (opening.info.round, opening.info.base, opening.digest), weight):
                return "duplicate"
            self._fold(opening, Folded(child, agg, weight))
            log.info("child %s round %d: k=%d n=%d (weight %.3f)", child, agg.round, agg.k, agg.n, weight)
            return "accepted" if staleness == 0 else "carried"

    # --- the round loop -------------------------------------------------------------------------------------------

    def run(self) -> None:
        """Poll upstream, open and close rounds, until ``stop`` is set."""
        self.forwarder.start()
        try:
            while not self.stop.is_set():
                self.step(time.time())
                self.stop.wait(self.poll_interval)
        finally:
            self.forwarder.join(3.0)

    def step(self, now: float) -> None:
        try:
            info = self.upstream.current()
            model = self.model
            if model is None or model.version != info.base:
                model = self.upstream.model()
        except CloudError as exc:
            log.warning("upstream unreachable: %s", exc)
            return
        self.follow(info, model, now)

    def follow(self, info: RoundInfo, model: Model, now: float) -> None:
        """Take the upstream's round and model: close the open round when it may, open the upstream's."""
        with self.lock:
            self.info, self.model = info, model
            if not self.recovered:
                self._recover(info, model.w.size)
                self.recovered = True
            opening = self.open
            if opening is not None and (info.round != opening.info.round or self._may_close(opening, now)):
                self._close(opening)
                opening = self.open = None
            if (
                opening is None
                and info.state == "open"
                and model.version == info.base
                and info.round not in self.closed
            ):
                digest = model_digest(model.w)
                if self.outbox.state_of(info.round, info.base, digest) is not None:
                    self.closed.setdefault(info.round, set())  # an earlier run forwarded it already
                    return
                self.open = self._reopen(info, digest, model.w.size)
                log.info(
                    "round %d opened: base %d, children close by %.1f s",
                    info.round,
                    info.base,
                    self._close_by(info) - now,
                )

    def _fold(self, opening: _Open, folded: Folded) -> None:
        agg = folded.agg
        opening.acc.add_sum(folded.weight * np.asarray(agg.sum, dtype=np.float64), agg.n, agg.k, agg.loss, agg.cover)
        opening.bytes_up += agg.bytes_up
        opening.devices.update(agg.devices)
        if agg.pers is not None:
            opening.pers += agg.pers
        if agg.round == opening.info.round:
            opening.reported.add(folded.child)
        else:
            self.closed.setdefault(agg.round, set()).add(folded.child)

    def _reopen(self, info: RoundInfo, digest: str, size: int) -> _Open:
        """A round as the store holds it: the aggregates an earlier run accepted into it folded in again."""
        opening = _Open(info, digest, WeightedSum(size))
        for folded in self.store.rows(info.round, info.base, digest):
            self._fold(opening, folded)
        return opening

    def _recover(self, info: RoundInfo, size: int) -> None:
        """Queue the rounds an earlier run accepted aggregates into but never forwarded (it stopped before)."""
        for rnd, base, digest in self.store.rounds():
            if rnd < info.round and self.outbox.state_of(rnd, base, digest) is None:
                log.info("round %d: forwarding what an earlier run accepted and never forwarded", rnd)
                self._close(self._reopen(replace(info, round=rnd, base=base), digest, size))

    def _close_by(self, info: RoundInfo) -> float:
        return info.deadline - self.forward_margin

    def _may_close(self, opening: _Open, now: float) -> bool:
        live = {c for c, at in self.seen.items() if now - at <= LIVE_FACTOR * self.round_timeout}
        if opening.reported and live <= opening.reported:
            return True
        return now >= opening.info.deadline - self.forward_margin / 2  # the children's close time passed

    def _close(self, opening: _Open) -> None:
        info, acc = opening.info, opening.acc
        self.closed[info.round] = set(opening.reported)
        if acc.k == 0:
            log.info("round %d closed with no child aggregate; nothing to post", info.round)
            return
        agg = Agg(
            self.id,
            info.round,
            info.base,
            acc.n,
            acc.k,
            acc.total.astype(np.float32),
            acc.mean_loss,
            opening.bytes_up,
            tuple(sorted(opening.devices)),
            opening.pers if opening.pers.c else None,
            None if acc.cover is None else acc.cover.astype(np.float32),
        )
        self.outbox.put(agg, opening.digest)
        self.forwarder.wake()
        log.info(
            "round %d closed: %d child(ren) %s, k=%d n=%d, queued upstream",
            info.round,
            len(opening.reported),
            sorted(opening.reported),
            agg.k,
            agg.n,
        )


def _with_deadline(info: RoundInfo, deadline: float) -> RoundInfo:
    return replace(info, deadline=deadline)


__all__ = ["FogNode", "LIVE_FACTOR"]
