"""The gateway's ingest rules with no network: one ``(topic, payload)`` in, the ``Ack`` to send out.

The contract's validation order is applied exactly: (1) topic and size, (2) decode + schema via ``Up.decode``,
(3) dedup per (dev, round, sub), (4) late / future_round / base_mismatch against the open sub-round, (5) fold
into the running ``WeightedSum``. With FedAvg (the default) only sums are kept, never a list of updates.

With device keys (signed updates, ``flcore.signing``) two checks join in: the signature after (2) (``unsigned``,
``unknown_device``, ``signature``), and after (3) ``replay`` for a ``seq`` not above the highest one accepted from
the device (``seqs``, persisted with the journal entry of each accepted update). Updates replayed from the journal
were checked when first accepted and skip both.

With a robust ``aggregation`` rule (``flcore.robust``) each accepted update of the open sub-round is also held as
int8 rows (k × P bytes); ``close()`` returns a sum whose ``total / n`` is the rule's robust mean delta (``n``, ``k``
and the loss stay those of every accepted update). A stale update joins the rows scaled by its staleness weight.

Every update's encoding (``enc``, ``flcore.encodings``) must be one of the gateway's ``encodings`` (default int8,
int4 and topk), else it is ``rejected`` with reason ``enc`` right after (2); every accepted one is dequantized to the
float delta that is folded, so the encodings mix freely within a round.

In ``async`` mode (FedBuff-style, ``flcore.fedbuff``) rule 4 accepts an update up to ``MAX_STALENESS`` rounds
behind the open round instead of acking it ``late``: it is folded into the open sub-round's sum with its ``n·delta``
discounted by ``staleness_weight(s)``. Its dedup key stays (dev, its round, its sub). An update for the round that
just closed is *parked* unanswered (not journaled, not acked; the device keeps it until acked) and judged again
when the next sub-round opens: stale in the next round, or ``late`` for a later sub of the same round.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from flcore.encodings import ACCEPTED_BY_DEFAULT, F32, TOPK, check_encoding
from flcore.errors import WireError
from flcore.fedavg import WeightedSum
from flcore.fedbuff import MAX_STALENESS, MODES, add_stale
from flcore.hetero import indices
from flcore.messages import MAX_SAMPLES, MAX_UPDATE_BYTES, Ack, Up
from flcore.model import ModelSpec
from flcore.personal import Pers
from flcore.robust import FEDAVG, Rows, RuleParams, aggregate, check_rule, robust_sum
from flcore.signing import verify
from flcore.topics import GatewayTopics
from gateway.dedup import DUPLICATE, Dedup, triage
from gateway.verdicts import Accepted, Judged, RoundTotals, SubRound, Verdict

log = logging.getLogger(__name__)

# Rounds whose accepted (dev, sub) keys are remembered to answer redeliveries with `duplicate`; a stale update's
# key must still be remembered when it arrives (async mode), so this covers MAX_STALENESS rounds behind.
REMEMBERED_ROUNDS = MAX_STALENESS + 1
DROPPED_TOPIC = "topic"
STALE = "stale"
PARKED = "parked"
JOURNAL_ERROR = "journal_error"  # counted by the node: a batch its journal could not commit
# Updates parked at once at most; past this an update for the closed round is answered `late`.
MAX_PARKED = 10_000

KeyRing = Callable[[str], bytes | None]


@dataclass
class _Pending:
    """Dedup keys (round, dev, sub) and seqs of the updates accepted earlier in the batch being judged."""

    keys: set[tuple[int, str, int]] = field(default_factory=set)
    seqs: dict[str, int] = field(default_factory=dict)


class Collector:
    """Validates and folds ``up`` payloads for the open sub-round of one gateway."""

    def __init__(
        self,
        topics: GatewayTopics,
        *,
        max_bytes: int = MAX_UPDATE_BYTES,
        max_samples: int = MAX_SAMPLES,
        mode: str = "sync",
        keys: KeyRing | None = None,
        aggregation: str = FEDAVG,
        rule_params: RuleParams | None = None,
        encodings: Iterable[str] = ACCEPTED_BY_DEFAULT,
        shared: Dedup | None = None,
    ) -> None:
        """``keys`` (a device's key, or None for a device without one) makes signed updates mandatory;
        ``encodings`` are the update encodings accepted; ``shared`` (``gateway.dedup``), for a worker sharing the
        gateway id with others, says which updates this worker counts and answers."""
        self.topics = topics
        self.shared = shared
        self.encodings = frozenset(check_encoding(e) for e in encodings)
        self.keys = keys
        self.aggregation = check_rule(aggregation)
        self.rule_params = rule_params or RuleParams()
        self.rows: Rows | None = None
        self.seqs: dict[str, int] = {}
        self.mode = mode
        self.max_bytes = max_bytes
        self.max_samples = max_samples
        self.counters: Counter[str] = Counter()
        self.opening: SubRound | None = None
        self.closed = True
        self.sum: WeightedSum | None = None
        self.totals: RoundTotals | None = None
        self.sub_devices: set[str] = set()
        self._accepted: dict[int, set[tuple[str, int]]] = {}
        self._parked: dict[tuple[str, int, int], tuple[str, bytes]] = {}

    def open(self, opening: SubRound) -> None:
        """Start collecting for ``opening``; a new round resets the round totals."""
        if self.totals is None or self.totals.round != opening.round:
            self.totals = RoundTotals(opening.round, opening.base)
        self.opening = opening
        self.closed = False
        self.sum = WeightedSum(opening.params)
        self.rows = None if self.aggregation == FEDAVG else Rows(opening.params)
        self.sub_devices = set()
        self._accepted.setdefault(opening.round, set())
        for old in sorted(self._accepted)[:-REMEMBERED_ROUNDS]:
            del self._accepted[old]

    @property
    def mode(self) -> str:
        """``sync`` (behind the open round is ``late``) or ``async`` (accepted with a staleness discount)."""
        return self._mode

    @mode.setter
    def mode(self, value: str) -> None:
        if value not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {value!r}")
        self._mode = value

    def take_parked(self) -> list[tuple[str, bytes]]:
        """The (topic, payload) of parked updates in arrival order, to ingest again now that a sub-round opened."""
        parked, self._parked = list(self._parked.values()), {}
        return parked

    def close(self) -> WeightedSum:
        """Stop accepting for the open sub-round (later updates for it are `late`) and return its sum."""
        if self.sum is None:
            raise RuntimeError("no sub-round was opened")
        self.closed = True
        if self.rows is not None and len(self.rows):
            robust = aggregate(self.aggregation, self.rows, self.rule_params)
            self.sum = robust_sum(self.sum, robust.delta)
            log.info(
                "%s kept %d of %d update(s) of round %s",
                self.aggregation,
                int(robust.kept.sum()),
                len(self.rows),
                self.opening.round if self.opening else "?",
            )
        self.rows = None
        return self.sum

    def remember(self, round: int, keys: Iterable[tuple[str, int]]) -> None:
        """Answer later redeliveries of these accepted (dev, sub) of ``round`` with ``duplicate`` (after a restart)."""
        self._accepted.setdefault(round, set()).update(keys)
        for old in sorted(self._accepted)[:-REMEMBERED_ROUNDS]:
            del self._accepted[old]

    def remember_seqs(self, seqs: Mapping[str, int]) -> None:
        """The highest ``seq`` accepted from each device before a restart (from the journal)."""
        for dev, seq in seqs.items():
            self.seqs[dev] = max(seq, self.seqs.get(dev, seq))

    def ingest(
        self,
        topic: str,
        payload: bytes,
        before_accept: Callable[[Up], None] | None = None,
        journaled: bool = False,
    ) -> Verdict | None:
        """Apply rules 1–5 to one message; None means no ack: the topic was invalid (dropped, counted) or the update
        was parked until the next sub-round opens (async mode).

        ``before_accept`` runs just before an update is folded in (the gateway journals it there); when it raises,
        nothing was folded or counted and the exception propagates. ``journaled`` marks an update replayed from the
        journal: its signature and ``seq`` were checked when it was first accepted.
        """
        commit = None if before_accept is None else lambda accepted: before_accept(accepted[0].update)
        return self.ingest_batch([(topic, payload)], commit, journaled)[0]

    def ingest_batch(
        self,
        messages: Sequence[tuple[str, bytes]],
        commit: Callable[[list[Accepted]], None] | None = None,
        journaled: bool = False,
    ) -> list[Verdict | None]:
        """``ingest`` for several messages in arrival order, with one ``commit`` of all the accepted ones (the
        gateway's group commit to its journal) before any of them is folded in.

        Every message is judged as if the ones before it had been ingested (a second copy of an update accepted
        earlier in the batch is a ``duplicate``). When ``commit`` raises, no message of the batch has changed the
        collector (nothing folded, counted or parked) and the exception propagates.
        """
        pending = _Pending()
        judged = [self._judge(topic, payload, journaled, pending) for topic, payload in messages]
        if self.shared is not None:
            judged = self._triaged(self.shared, judged)
        accepted = [j for j in judged if j is not None and j.accepted]
        if accepted and commit is not None:
            commit([Accepted(j.update, j.topic, j.payload) for j in accepted if j.update is not None])
        return [None if j is None else self._settle(j) for j in judged]

    def _judge(self, topic: str, payload: bytes, journaled: bool, pending: _Pending) -> Judged | None:
        """Rules 1–5 without changing any state but the dropped-topic counter; ``pending`` holds the dedup keys and
        seqs of the updates accepted earlier in the same batch."""
        dev = self.topics.device_of(topic)
        if dev is None:
            self.counters[DROPPED_TOPIC] += 1
            log.warning("dropped an update on invalid topic %r (%d bytes)", topic, len(payload))
            return None
        opening = self.opening
        try:
            up = Up.decode(
                payload,
                params=opening.params if opening else None,
                layers=opening.layers if opening and opening.layers else None,
                topic_dev=dev,
                max_bytes=self.max_bytes,
                max_samples=self.max_samples,
            )
        except WireError as exc:
            log.info("rejected update from %s: %s", dev, exc)
            return Judged(dev, topic, payload, Ack(exc.round, exc.seq, "rejected", exc.reason))

        def answer(status: str, reason: str) -> Judged:
            return Judged(dev, topic, payload, Ack(up.round, up.seq, status, reason), up)

        if up.enc not in self.encodings:
            log.info("rejected update from %s: encoding %s is not one of %s", dev, up.enc, sorted(self.encodings))
            return answer("rejected", "enc")
        if up.width is not None and self.aggregation != FEDAVG:
            # Robust rules compare whole updates coordinate by coordinate; a slice has no value for most of them.
            log.info("rejected update from %s: width %.2f under %s", dev, up.width, self.aggregation)
            return answer("rejected", "width")
        signed = self.keys is not None and not journaled
        refused = self._signature_problem(up, payload) if signed else None
        if refused is not None:
            return answer("rejected", refused)
        key = (up.round, up.dev, up.sub)
        if (up.dev, up.sub) in self._accepted.get(up.round, ()) or key in pending.keys:
            return answer("duplicate", "duplicate")
        last_seq = pending.seqs.get(up.dev, self.seqs.get(up.dev, -1))
        if signed and up.seq <= last_seq:
            log.info("rejected update from %s: seq %d is not above %d", dev, up.seq, last_seq)
            return answer("rejected", "replay")
        if opening is None or up.round > opening.round or (up.round == opening.round and up.sub > opening.sub):
            return answer("rejected", "future_round")
        staleness = opening.round - up.round
        if self.closed and staleness == 0 and self._mode == "async" and len(self._parked) < MAX_PARKED:
            return Judged(dev, topic, payload, None, up)
        if self.closed or not (staleness == 0 and up.sub >= opening.sub or self._takes_stale(staleness)):
            return answer("late", "late")
        # A stale update was trained from its own round's base, which can only be older than the open one.
        wrong_base = up.base >= opening.base if staleness else up.base != opening.base
        if wrong_base:
            return answer("rejected", "base_mismatch")
        pending.keys.add(key)
        pending.seqs[up.dev] = max(up.seq, last_seq)
        return Judged(dev, topic, payload, Ack(up.round, up.seq, "accepted", ""), up, staleness)

    def _triaged(self, shared: Dedup, judged: list[Judged | None]) -> list[Judged | None]:
        """A worker's judgements with what the shared store says (``gateway.dedup.triage``): None for no ack."""
        items = [
            None if j is None or j.ack is None or j.update is None else (j.ack.status, j.ack.reason, _key(j.update))
            for j in judged
        ]
        out: list[Judged | None] = []
        for j, fate in zip(judged, triage(shared, items), strict=True):
            if fate is not None and j is not None and j.update is not None:
                self.counters[fate] += fate != DUPLICATE  # a duplicate is counted with its ack
                j = None if fate != DUPLICATE else replace(j, ack=Ack(j.update.round, j.update.seq, fate, fate))
            out.append(j)
        return out

    def _settle(self, judged: Judged) -> Verdict | None:
        """Apply a judgement: count it, park or fold its update; the verdict to answer with (None when parked)."""
        if self.totals is not None:
            self.totals.bytes_up += len(judged.payload)
        up, ack = judged.update, judged.ack
        if ack is None:
            assert up is not None  # a parked judgement carries its update
            self._parked.setdefault((up.dev, up.round, up.sub), (judged.topic, judged.payload))
            self.counters[PARKED] += 1
            return None
        if judged.accepted:
            assert up is not None
            self._fold(up, judged.staleness)
        self.counters[ack.reason if ack.status == "rejected" else ack.status] += 1
        return Verdict(judged.dev, ack, up if judged.accepted else None)

    def _signature_problem(self, up: Up, payload: bytes) -> str | None:
        """The reject reason when ``up`` is not signed by its device's key, else None."""
        assert self.keys is not None
        if up.sig is None:
            reason = "unsigned"
        elif (key := self.keys(up.dev)) is None:
            reason = "unknown_device"
        else:
            try:
                verify(payload, key)
                return None
            except WireError:
                reason = "signature"
        log.info("rejected update from %s: %s", up.dev, reason)
        return reason

    def _takes_stale(self, staleness: int) -> bool:
        return self._mode == "async" and 0 < staleness <= MAX_STALENESS

    def _fold(self, up: Up, staleness: int = 0) -> None:
        assert self.sum is not None and self.totals is not None  # set together by open()
        self._accepted.setdefault(up.round, set()).add((up.dev, up.sub))
        self.seqs[up.dev] = max(up.seq, self.seqs.get(up.dev, up.seq))
        idx = None if up.width is None or self.opening is None else indices(ModelSpec(self.opening.layers), up.width)
        if staleness:
            # Not an answer to the open task: the device may still send its fresh update for this sub-round.
            weight = add_stale(self.sum, up.delta(np.float64), up.n, up.loss, staleness, idx=idx)
            self.totals.stale_weight += weight
            self.totals.stale += 1
            self.counters[STALE] += 1
            self.totals.devices.setdefault(up.dev, up.n)
        else:
            weight = 1.0
            if idx is not None:
                self.sum.add_sliced(up.delta(np.float64), idx, up.n, up.loss)
            elif up.enc in (TOPK, F32):
                self.sum.add(up.delta(), up.n, up.loss)
            else:  # int8 and (unpacked) int4: n · scale · q straight from the wire
                self.sum.add_quantized(up.q, up.scales, up.chunk, up.n, up.loss)
            self.sub_devices.add(up.dev)
            self.totals.devices[up.dev] = up.n
        if self.rows is not None:
            if up.enc in (TOPK, F32):  # not P int8 values with per-chunk scales: held as a float row
                self.rows.add_float(up.delta(), up.n, weight)
            else:
                self.rows.add(up.q, up.scales, up.chunk, up.n, weight)
        self.totals.k += 1
        self.totals.samples += up.n
        self.totals.loss_weighted += up.n * up.loss
        if up.meta is not None and up.meta.get("pacc") is not None:  # decode admits pacc and gacc only together
            self.totals.pers += Pers(up.meta["pacc"], up.meta["gacc"], 1)


def _key(up: Up) -> tuple[int, int, str]:
    return up.round, up.sub, up.dev


__all__ = [
    "Collector",
    "DROPPED_TOPIC",
    "KeyRing",
    "MAX_STALENESS",
    "REMEMBERED_ROUNDS",
    "STALE",
]
