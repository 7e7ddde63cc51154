"""The global round state machine over the database: open, accept aggregates, close at the deadline or when every
live gateway reported, FedAvg, evaluate, version. Everything lives in the database, so a restart resumes.

Mutations are group-committed (cloud.commits): the check-ins and aggregates that queue while a transaction runs
commit together in the next one. Every writing transaction serializes with the others in any process on the same
database (cloud.storage), so several workers close a round exactly once."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from cloud import storage as db
from cloud.commits import GroupCommit
from cloud.errors import CloudError
from cloud.metrics import Metrics
from cloud.policy import Step, Verdict, classify, global_update, live_since, next_step
from cloud.round_views import RoundViews, f32, from_f32
from cloud.settings import CloudSettings
from cloud.storage import CLOSED, OPEN, AggregateRow, ModelRow, RoundRow, Storage
from flcore.datasets import Dataset
from flcore.fedbuff import staleness_weight
from flcore.messages import Agg
from flcore.model import ModelSpec
from flcore.personal import Pers
from flcore.server_opt import OptState

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


@dataclass(frozen=True)
class _Checkin:
    gw: str
    at: float


@dataclass(frozen=True)
class _Post:
    agg: Agg
    at: float


class Rounds(RoundViews):
    """The cloud's round service; a round closes exactly once, whichever request or worker completes it."""

    def __init__(
        self,
        settings: CloudSettings,
        dataset: Dataset,
        storage: Storage,
        metrics: Metrics,
        token_hashes: dict[str, str],
        clock: Callable[[], float] = time.time,
    ):
        super().__init__(settings, ModelSpec(tuple(dataset.layers)), storage, clock)
        self._x_test, self._y_test = dataset.x_test, dataset.y_test
        self.metrics = metrics
        self._lock = threading.RLock()
        self._commits: GroupCommit[_Checkin | _Post, Submission | None] = GroupCommit(self._lock, self._apply)
        self._written: dict[str, float] = {}
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
                s.add(ModelRow(version=0, weights=f32(w0), accuracy=accuracy, loss=loss, created_at=now))
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
                log.info("resuming at round %d (%s), %d rounds closed", row.round, row.state, db.closed_through(row))

    def _open(self, s: db.Session, r: int, now: float) -> None:
        s.add(RoundRow(round=r, base=r - 1, state=OPEN, opened_at=now, deadline=now + self.settings.round_timeout))

    # --- mutations ----------------------------------------------------------------------------------------------

    def checkin_due(self, gw: str) -> bool:
        """Whether a check-in of ``gw`` now would write (at most every CHECKIN_WRITE_SECONDS); no I/O."""
        interval = min(CHECKIN_WRITE_SECONDS, self.settings.round_timeout / 4)
        return self.clock() - self._written.get(gw, -math.inf) >= interval

    def checkin(self, gw: str) -> None:
        """A request carried ``gw``'s valid token: it is live now (written at most every CHECKIN_WRITE_SECONDS)."""
        if not self.checkin_due(gw):
            return
        now = self.clock()
        self._commits.commit(_Checkin(gw, now))
        self._written[gw] = now

    def submit(self, agg: Agg) -> Submission:
        """Accept, or say why not, one decoded aggregate from its (authorized) gateway; may close the round.
        Returns once the aggregate (and the close it completed) is committed."""
        result = self._commits.commit(_Post(agg, self.clock()))
        assert result is not None
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

    def _apply(self, batch: Sequence[_Checkin | _Post]) -> list[Submission | None]:
        """One transaction for a batch of check-ins and posts, and the advance (extend, close) they may cause."""
        posts = [op.agg for op in batch if isinstance(op, _Post)]
        with self.storage.transaction(write=True) as s:
            db.touch_gateways(s, {op.gw: op.at for op in batch if isinstance(op, _Checkin)})
            newest = db.current_round(s)
            verdicts = iter(self._accept(s, posts, newest, self.clock()) if posts else [])
            self._advance_in(s, newest, self.clock())
        return [next(verdicts) if isinstance(op, _Post) else None for op in batch]

    def _accept(self, s: db.Session, aggs: list[Agg], newest: RoundRow | None, now: float) -> list[Submission]:
        """Classify and store ``aggs`` in order: a repeat of a stored pair, or of one earlier in the batch, is a
        duplicate (first one wins). A few queries for the whole batch, whatever its size."""
        stored = db.stored_pairs(s, {(a.gw, a.round) for a in aggs})
        rounds = db.get_rounds(s, {a.round for a in aggs})
        last_closed = db.closed_through(newest)
        results: list[Submission] = []
        reports: list[tuple[str, int, list[str]]] = []
        for agg in aggs:
            row = None if (agg.gw, agg.round) in stored else rounds.get(agg.round)
            verdict = classify(
                duplicate=(agg.gw, agg.round) in stored,
                done=last_closed >= self.settings.rounds,
                round_state=row.state if row else None,
                round_base=row.base if row else None,
                agg_base=agg.base,
                last_closed=last_closed,
                agg_round=agg.round,
            )
            if verdict not in (Verdict.ACCEPTED, Verdict.CARRIED):
                results.append(Submission(verdict))
                continue
            stored.add((agg.gw, agg.round))
            results.append(self._store(s, agg, verdict, newest, now))
            reports.append((agg.gw, agg.round, list(agg.devices)))
        db.record_devices(s, reports)
        return results

    def _store(self, s: db.Session, agg: Agg, verdict: Verdict, newest: RoundRow | None, now: float) -> Submission:
        """Store an accepted aggregate in its round, or a carried one in the open round with its staleness weight."""
        counted_in, staleness = agg.round, 0
        if verdict is Verdict.CARRIED:
            assert newest is not None and newest.state == OPEN  # classify carries only while rounds remain
            counted_in, staleness = newest.round, newest.base - agg.base
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
                total=f32(agg.sum),
                received_at=now,
                counted_in=counted_in,
                weight=weight,
                pers=None if agg.pers is None else {"p": agg.pers.p, "g": agg.pers.g, "c": agg.pers.c},
                cover=None if agg.cover is None else f32(agg.cover),
            )
        )
        return Submission(verdict, counted_in, staleness, weight)

    def tick(self) -> None:
        """The deadline check the background task runs every ~0.2 s."""
        with self._lock, self.storage.transaction(write=True) as s:
            self._advance_in(s, db.current_round(s), self.clock())

    def _advance_in(self, s: db.Session, row: RoundRow | None, now: float) -> None:
        """Start round 1's clock, extend or close the open round ``row`` (the newest) as its rules say, within the
        caller's transaction; none past the last round (a restart may have lowered it)."""
        timeout = self.settings.round_timeout
        if row is None or row.state != OPEN or db.closed_through(row) >= self.settings.rounds:
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
        reported, carried = db.round_reports(s, row.round)
        step = next_step(
            now=now,
            deadline=row.deadline,
            reported=reported,
            live=live,
            min_gateways=self.settings.min_gateways,
            carried=carried,
        )
        if step is Step.EXTEND:
            row.deadline = now + timeout
            log.info("round %d: deadline passed with no aggregate; extended by %.1f s", row.round, timeout)
        elif step is Step.CLOSE:
            self._close(s, row, now)

    def _close(self, s: db.Session, row: RoundRow, now: float) -> None:
        r = row.round
        aggs = db.round_aggregates(s, r)
        base = db.get_model(s, row.base)
        if base is None:
            raise CloudError(f"model version {row.base} is missing from the database")
        update = global_update(
            from_f32(base.weights),
            (
                (a.weight * from_f32(a.total), a.n, a.k, a.loss, None if a.cover is None else from_f32(a.cover))
                for a in aggs
            ),
            self.settings.opt_params,
            self.settings.aggregation,
            self.settings.rule_params,
            self._opt_state(base),
        )
        accuracy, loss = self.evaluate(update.weights)
        s.add(
            ModelRow(
                version=r,
                weights=f32(update.weights),
                accuracy=accuracy,
                loss=loss,
                created_at=now,
                opt_state=update.opt_state.to_bytes(),
            )
        )
        row.state, row.closed_at = CLOSED, now
        row.k, row.n, row.train_loss = update.k, update.n, update.train_loss
        row.accuracy, row.loss = accuracy, loss
        row.bytes_up = sum(a.bytes_up for a in aggs)
        local = sum((Pers(a.pers["p"], a.pers["g"], int(a.pers["c"])) for a in aggs if a.pers), Pers())
        means = local.means()
        if means is not None:
            row.p_accuracy, row.l_accuracy, row.p_devices = *means, local.c
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

    def _opt_state(self, base: ModelRow) -> OptState | None:
        """The server optimizer's state stored with ``base`` (None: start fresh). A state of another optimizer (the
        database ran with another --server-opt), or one that does not decode, is set aside with a warning."""
        if base.opt_state is None:
            return None
        name = self.settings.server_opt
        try:
            return OptState.from_bytes(base.opt_state).check(name, self.spec.param_count)
        except ValueError as exc:
            log.warning("model version %d: %s; %s starts fresh", base.version, exc, name)
            return None

    def close(self) -> None:
        """Release the database once no mutation is running."""
        with self._lock:
            self.storage.close()
