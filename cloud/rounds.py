"""The global round state machine over the database: open, accept aggregates, close at the deadline or when every
live gateway reported, FedAvg, evaluate, version. Everything lives in the database, so a restart resumes."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sqlalchemy.exc import IntegrityError

from cloud import storage as db
from cloud.errors import CloudError
from cloud.metrics import Gauges, Metrics
from cloud.policy import Step, Verdict, classify, global_update, live_since, next_step
from cloud.settings import CloudSettings
from cloud.storage import CLOSED, OPEN, AggregateRow, ModelRow, RoundRow, Storage
from cloud.views import CarriedShare, CurrentRound, GatewayInfo, GatewayShare, HistoryEntry, RoundInfo, Status
from flcore.datasets import Dataset
from flcore.fedbuff import staleness_weight
from flcore.messages import Agg
from flcore.model import ModelSpec

log = logging.getLogger(__name__)

# A gateway polling twice a second need not write its last_seen every time; a quarter of the round timeout keeps
# liveness (2 × round_timeout) accurate even with the short timeouts of tests.
CHECKIN_WRITE_SECONDS = 1.0


@dataclass(frozen=True)
class Submission:
    """The verdict on a posted aggregate and, once stored, the round it counts in, its staleness and weight."""

    verdict: Verdict
    counted_in: int | None = None
    staleness: int = 0
    weight: float = 1.0


@dataclass(frozen=True, eq=False)
class ModelVersion:
    version: int
    layers: tuple[int, ...]
    weights: np.ndarray


class Rounds:
    """The cloud's round service; mutations hold one lock so a round closes exactly once."""

    def __init__(
        self,
        settings: CloudSettings,
        dataset: Dataset,
        storage: Storage,
        metrics: Metrics,
        token_hashes: dict[str, str],
        clock: Callable[[], float] = time.time,
    ):
        self.settings = settings
        self.spec = ModelSpec(tuple(dataset.layers))
        self.params = self.spec.param_count
        self._x_test, self._y_test = dataset.x_test, dataset.y_test
        self.storage = storage
        self.metrics = metrics
        self.clock = clock
        self._lock = threading.RLock()
        self._written: dict[str, float] = {}
        self._model_cache: ModelVersion | None = None
        self._initialize(dataset, token_hashes)

    # --- set-up -------------------------------------------------------------------------------------------------

    def evaluate(self, weights: np.ndarray) -> tuple[float, float]:
        """Held-out accuracy (fraction) and mean cross-entropy of ``weights``."""
        return self.spec.evaluate(weights, self._x_test, self._y_test)

    def _initialize(self, dataset: Dataset, token_hashes: dict[str, str]) -> None:
        s_ = self.settings
        now = self.clock()
        with self._lock, self.storage.transaction(write=True) as s:
            meta = db.get_meta(s)
            layers = list(self.spec.layers)
            if meta:
                if meta.get("layers") != layers:
                    raise CloudError(
                        f"the database {s_.db} holds a model with layers {meta.get('layers')}, but dataset "
                        f"{dataset.name!r} needs {layers}; use another --db (or delete that database)"
                    )
                for key, value in (("dataset", dataset.name), ("fleet", s_.fleet)):
                    if meta.get(key) != value:
                        log.warning("the database was created for %s %r, now running %r", key, meta.get(key), value)
            else:
                db.put_meta(s, {"layers": layers, "dataset": dataset.name, "fleet": s_.fleet, "seed": s_.seed})
            db.sync_gateways(s, token_hashes)
            if db.latest_model(s) is None:
                w0 = self.spec.init(s_.seed)
                accuracy, loss = self.evaluate(w0)
                s.add(ModelRow(version=0, weights=_f32(w0), accuracy=accuracy, loss=loss, created_at=now))
                log.info(
                    "model version 0: accuracy %.3f, loss %.3f on %d held-out samples",
                    accuracy,
                    loss,
                    len(self._y_test),
                )
            row = db.current_round(s)
            if row is None:
                s.add(RoundRow(round=1, base=0, state=OPEN, opened_at=now, deadline=None))
            elif row.state == CLOSED and row.round < s_.rounds:
                self._open(s, row.round + 1, now)
                log.info("resuming: round %d opens (rounds raised to %d)", row.round + 1, s_.rounds)
            else:
                log.info("resuming at round %d (%s), %d rounds closed", row.round, row.state, db.last_closed_round(s))

    def _open(self, s: db.Session, r: int, now: float) -> None:
        s.add(RoundRow(round=r, base=r - 1, state=OPEN, opened_at=now, deadline=now + self.settings.round_timeout))

    # --- mutations ----------------------------------------------------------------------------------------------

    def checkin(self, gw: str) -> None:
        """A request carried ``gw``'s valid token: it is live now (written at most every CHECKIN_WRITE_SECONDS)."""
        now = self.clock()
        if now - self._written.get(gw, -math.inf) < min(CHECKIN_WRITE_SECONDS, self.settings.round_timeout / 4):
            return
        with self._lock:
            # One transaction (one commit, one fsync on SQLite) for the check-in and what it may start or close.
            with self.storage.transaction(write=True) as s:
                db.touch_gateway(s, gw, now)
                self._advance_in(s, now)
            self._written[gw] = now

    def submit(self, agg: Agg) -> Submission:
        """Accept, or say why not, one decoded aggregate from its (authorized) gateway; may close the round."""
        now = self.clock()
        with self._lock:
            try:
                with self.storage.transaction(write=True) as s:
                    verdict = self._classify(s, agg)
                    result = Submission(verdict)
                    if verdict in (Verdict.ACCEPTED, Verdict.CARRIED):
                        result = self._store(s, agg, verdict, now)
                        # The close it may complete commits with it: one transaction per accepted aggregate.
                        self._advance_in(s, now)
            except IntegrityError:
                # Another worker stored (gw, round) first: the unique constraint makes this a duplicate.
                result = Submission(Verdict.DUPLICATE)
            self.metrics.aggregate(result.verdict.value)
            log.info(
                "aggregate %s round %d (k=%d n=%d): %s%s",
                agg.gw,
                agg.round,
                agg.k,
                agg.n,
                result.verdict.value,
                f" into round {result.counted_in} (staleness {result.staleness}, weight {result.weight:.3f})"
                if result.verdict is Verdict.CARRIED
                else "",
            )
        return result

    def _store(self, s: db.Session, agg: Agg, verdict: Verdict, now: float) -> Submission:
        """Store an accepted aggregate in its round, or a carried one in the open round with its staleness weight."""
        counted_in, staleness = agg.round, 0
        if verdict is Verdict.CARRIED:
            open_row = db.current_round(s)
            assert open_row is not None and open_row.state == OPEN  # classify carries only while rounds remain
            counted_in, staleness = open_row.round, open_row.base - agg.base
        weight = staleness_weight(staleness)
        s.add(
            AggregateRow(
                round=agg.round,
                gw=agg.gw,
                base=agg.base,
                n=agg.n,
                k=agg.k,
                loss=float(agg.loss),
                bytes_up=agg.bytes_up,
                devices=list(agg.devices),
                total=_f32(agg.sum),
                received_at=now,
                counted_in=counted_in,
                weight=weight,
            )
        )
        db.record_devices(s, agg.gw, agg.round, list(agg.devices))
        s.flush()
        return Submission(verdict, counted_in, staleness, weight)

    def _classify(self, s: db.Session, agg: Agg) -> Verdict:
        duplicate = db.has_aggregate(s, agg.gw, agg.round)
        row = None if duplicate else db.get_round(s, agg.round, lock=True)
        last_closed = db.last_closed_round(s)
        return classify(
            duplicate=duplicate,
            done=last_closed >= self.settings.rounds,
            round_state=row.state if row else None,
            round_base=row.base if row else None,
            agg_base=agg.base,
            last_closed=last_closed,
            agg_round=agg.round,
        )

    def tick(self) -> None:
        """The deadline check the background task runs every ~0.2 s."""
        with self._lock:
            self._advance(self.clock())

    def _advance(self, now: float) -> None:
        with self.storage.transaction(write=True) as s:
            self._advance_in(s, now)

    def _advance_in(self, s: db.Session, now: float) -> None:
        """Start round 1's clock, extend or close the open round as its rules say, within the caller's transaction."""
        timeout = self.settings.round_timeout
        row = db.current_round(s)
        if row is None or row.state != OPEN or db.last_closed_round(s) >= self.settings.rounds:
            return
        live = db.live_gateways(s, live_since(now, timeout))
        if row.deadline is None and len(live) >= self.settings.min_gateways:
            row.deadline = now + timeout
            log.info(
                "round %d: %d gateway(s) checked in, its clock starts (deadline in %.1f s)",
                row.round,
                len(live),
                timeout,
            )
        step = next_step(
            now=now,
            deadline=row.deadline,
            reported=db.reporters(s, row.round),
            live=live,
            min_gateways=self.settings.min_gateways,
            carried=db.carried_count(s, row.round),
        )
        if step is Step.EXTEND:
            row.deadline = now + timeout
            log.info("round %d: deadline passed with no aggregate; extended by %.1f s", row.round, timeout)
        elif step is Step.CLOSE:
            self._close(s, row.round, now)

    def _close(self, s: db.Session, r: int, now: float) -> None:
        row = db.get_round(s, r, lock=True)
        if row is None or row.state != OPEN:
            return
        aggs = db.round_aggregates(s, r)
        base = db.get_model(s, row.base)
        if base is None:
            raise CloudError(f"model version {row.base} is missing from the database")
        update = global_update(
            _from_f32(base.weights),
            ((a.weight * _from_f32(a.total), a.n, a.k, a.loss) for a in aggs),
            self.settings.server_lr,
            self.settings.aggregation,
            self.settings.rule_params,
        )
        accuracy, loss = self.evaluate(update.weights)
        s.add(ModelRow(version=r, weights=_f32(update.weights), accuracy=accuracy, loss=loss, created_at=now))
        row.state, row.closed_at = CLOSED, now
        row.k, row.n, row.train_loss = update.k, update.n, update.train_loss
        row.accuracy, row.loss = accuracy, loss
        row.bytes_up = sum(a.bytes_up for a in aggs)
        if r < self.settings.rounds:
            self._open(s, r + 1, now)
        log.info(
            "round %d closed: %d aggregate(s) (%d carried from earlier rounds), k=%d, n=%d, accuracy %.3f, loss %.3f%s",
            r,
            len(aggs),
            sum(a.round != r for a in aggs),
            update.k,
            update.n,
            accuracy,
            loss,
            "" if r < self.settings.rounds else " — all rounds done",
        )

    def close(self) -> None:
        """Release the database once no mutation is running."""
        with self._lock:
            self.storage.close()

    # --- views --------------------------------------------------------------------------------------------------

    def current(self) -> CurrentRound:
        s_ = self.settings
        with self.storage.transaction() as s:
            row = db.current_round(s)
            last = db.last_closed_round(s)
        assert row is not None  # _initialize always opens round 1
        done = last >= s_.rounds
        if done:
            # The final model's version is `last`; no round trains from it.
            rnd, base, deadline = last, last, (row.closed_at or self.clock())
        else:
            rnd, base = row.round, row.base
            deadline = row.deadline if row.deadline is not None else self.clock() + s_.round_timeout
        return CurrentRound(
            round=rnd,
            base=base,
            state="done" if done else "open",
            deadline=deadline,
            layers=list(self.spec.layers),
            lr=s_.lr,
            epochs=s_.epochs,
            batch=s_.batch,
            chunk=s_.chunk,
            min_battery=s_.min_battery,
            gateway_rounds=s_.gateway_rounds,
            mode=s_.mode,
        )

    def round_info(self, r: int) -> RoundInfo | None:
        with self.storage.transaction() as s:
            row = db.get_round(s, r)
            aggs = db.round_aggregates(s, r) if row is not None else []
        if row is None:
            return None
        shares = {a.gw: GatewayShare(k=a.k, n=a.n, loss=a.loss) for a in aggs if a.round == r}
        carried = [
            CarriedShare(gw=a.gw, round=a.round, k=a.k, n=a.n, loss=a.loss, staleness=r - a.round, weight=a.weight)
            for a in aggs
            if a.round != r
        ]
        closed = row.state == CLOSED
        return RoundInfo(
            round=row.round,
            state="closed" if closed else "open",
            base=row.base,
            k=row.k if closed else sum(a.k for a in aggs),
            n=row.n if closed else sum(a.n for a in aggs),
            accuracy=row.accuracy,
            loss=row.loss,
            gateways=shares,
            carried=carried,
            train_loss=row.train_loss,
            bytes_up=row.bytes_up if closed else sum(a.bytes_up for a in aggs),
            deadline=row.deadline,
            closed_at=row.closed_at,
        )

    def status(self) -> Status:
        with self.storage.transaction() as s:
            history = db.closed_rounds(s)
            current = db.current_round(s)
            initial = db.get_model(s, 0)
            gateways = db.gateways(s)
            reported = db.rounds_reported(s)
            devices = db.devices_seen(s)
            version = db.latest_version(s)
        assert current is not None and initial is not None
        last = history[-1].round if history else 0
        done = last >= self.settings.rounds
        return Status(
            fleet=self.settings.fleet,
            round=last if done else current.round,
            model_version=version,
            state="done" if done else "running",
            gateways=[
                GatewayInfo(id=g.id, last_seen=g.last_seen, rounds_reported=reported.get(g.id, 0)) for g in gateways
            ],
            devices_seen=devices,
            history=[
                HistoryEntry(
                    round=h.round,
                    accuracy=h.accuracy,
                    loss=h.loss,
                    k=h.k,
                    n=h.n,
                    bytes_up=h.bytes_up,
                    closed_at=h.closed_at,
                    train_loss=h.train_loss,
                )
                for h in history
            ],
            total_rounds=self.settings.rounds,
            initial_accuracy=initial.accuracy,
            deadline=None if done else current.deadline,
        )

    def latest_model(self) -> ModelVersion:
        """The newest global model (cached until a round closes)."""
        with self.storage.transaction() as s:
            version = db.latest_version(s)
            cached = self._model_cache
            if cached is None or cached.version != version:
                row = db.get_model(s, version)
                assert row is not None
                cached = ModelVersion(row.version, self.spec.layers, _from_f32(row.weights))
                self._model_cache = cached
        return cached

    def gauges(self) -> Gauges:
        with self.storage.transaction() as s:
            last = db.last_closed_round(s)
            current = db.current_round(s)
            version = db.latest_version(s)
            accuracy = db.model_accuracy(s, version)
            gateways = len(db.live_gateways(s, since=0.0))
            devices = db.devices_seen(s)
        return Gauges(
            rounds_closed=last,
            current_round=current.round if current else 0,
            model_version=version,
            last_accuracy=accuracy,
            done=last >= self.settings.rounds,
            gateways_seen=gateways,
            devices_seen=devices,
        )


def _f32(values: np.ndarray) -> bytes:
    return np.asarray(values, dtype="<f4").tobytes()


def _from_f32(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<f4").astype(np.float32)
