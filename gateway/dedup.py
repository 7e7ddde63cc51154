"""Who counts an update when several workers share one gateway id: a claim per (round, sub, dev).

A lone gateway needs nothing beyond its journal (``LocalDedup``: every update it accepts is its own). Workers on a
shared subscription (docs/scale-out.md) claim each update they would accept in Redis before journaling it
(``RedisDedup``); only the claim's owner folds it in, so an update is counted once however the broker and the
device re-send it. A worker that finds an update claimed by a *live* other worker answers it with no ack (the owner
acks it; the device re-sends until someone does); a claim whose owner's lease ran out (it died, maybe before its
PUBACK) is taken over. A worker replaying its journal after a restart claims again and drops what was taken over
meanwhile, so whoever holds the claim counts the update, and nobody else does.

The claims of a (round, sub) are also the workers' shared view of who answered, so quorum and "every live device
answered" are decided for the gateway as a whole (``answered``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Protocol
from urllib.parse import urlsplit

from gateway.state_db import StateError

log = logging.getLogger(__name__)

# A worker is live while its lease key exists; it renews it every LEASE / 3 seconds.
LEASE = 3.0
# Claims outlive their round this long, covering late redeliveries (rounds last seconds to minutes).
CLAIMS_TTL = 24 * 3600
REDIS_TIMEOUT = 2.0

Key = tuple[int, int, str]  # (round, sub, dev)
# What a worker does with an update besides the collector's verdict (``triage``): no ack (another worker owns it, or
# opened its round first), or ``duplicate`` for one the worker would answer ``late`` that another worker counted.
HELD = "held"
AHEAD = "ahead"
DUPLICATE = "duplicate"

# KEYS[1]: the (round, sub) claims hash; ARGV: me, the lease-key prefix, the hash's TTL, then the devices.
# Returns 1 per device this worker now owns (new, already its own, or taken over from an expired lease), else 0.
_CLAIM = """
local out = {}
for i = 4, #ARGV do
  local owner = redis.call('HGET', KEYS[1], ARGV[i])
  if (not owner) or owner == ARGV[1] or redis.call('EXISTS', ARGV[2] .. owner) == 0 then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[1])
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
redis.call('EXPIRE', KEYS[1], ARGV[3])
return out
"""

# KEYS: the (round, sub) claims and committed hashes; ARGV[1]: the lease-key prefix. The devices whose update its
# claim's owner committed to its journal and whose owner is live.
_ANSWERED = """
local out, live = {}, {}
local done = redis.call('HGETALL', KEYS[2])
for i = 1, #done, 2 do
  local owner = done[i + 1]
  if live[owner] == nil then live[owner] = redis.call('EXISTS', ARGV[1] .. owner) end
  if live[owner] == 1 and redis.call('HGET', KEYS[1], done[i]) == owner then out[#out + 1] = done[i] end
end
return out
"""


class Dedup(Protocol):
    """The claim store a gateway consults before it counts an update."""

    def claim(self, keys: Sequence[Key]) -> list[bool]:
        """Per key, whether this worker counts the update (raises ``StateError`` when the store is unreachable)."""
        ...

    def committed(self, keys: Sequence[Key]) -> None:
        """These claimed updates are in this worker's journal (raises ``StateError`` when the store is unreachable)."""
        ...

    def counted(self, keys: Sequence[Key]) -> list[bool]:
        """Per key, whether some worker (live or not) committed the update to its journal."""
        ...

    def answered(self, round: int, sub: int) -> set[str] | None:
        """The devices counted for (round, sub) by the gateway's live workers; None: only this worker counts.

        Only committed claims of live workers count: an update claimed but not yet journaled may still be lost
        with its worker (then another takes it over), and a dead worker forwards nothing until it restarts."""
        ...

    def close(self) -> None: ...


class LocalDedup:
    """A lone gateway: its journal and collector already answer redeliveries, every accepted update is its own."""

    def claim(self, keys: Sequence[Key]) -> list[bool]:
        return [True] * len(keys)

    def committed(self, keys: Sequence[Key]) -> None:
        pass

    def counted(self, keys: Sequence[Key]) -> list[bool]:
        return [False] * len(keys)

    def answered(self, round: int, sub: int) -> set[str] | None:
        return None

    def close(self) -> None:
        pass


class RedisDedup:
    """Claims in Redis hashes ``iotfl:<fleet>:<gw>:claims:<round>:<sub>`` (dev → worker; ``done:…`` once committed),
    leases in
    ``iotfl:<fleet>:<gw>:lease:<worker>`` renewed by a daemon thread until ``close()``."""

    def __init__(self, url: str, fleet: str, gw: str, worker: str, lease: float = LEASE) -> None:
        import redis  # the `scaleout` extra: a lone gateway installs without it

        self.worker = worker
        self.lease = lease
        self._prefix = f"iotfl:{fleet}:{gw}:"
        self._client = redis.Redis.from_url(url, socket_timeout=REDIS_TIMEOUT, socket_connect_timeout=REDIS_TIMEOUT)
        self._script = self._client.register_script(_CLAIM)
        self._answered = self._client.register_script(_ANSWERED)
        self._error = redis.RedisError
        self._stop = threading.Event()
        try:
            self._renew()  # fails fast on a wrong URL, and claims made from now on are backed by a live lease
        except self._error as exc:
            raise StateError(f"dedup store {url} unreachable: {exc}") from exc
        self._thread = threading.Thread(target=self._keep_lease, name="dedup-lease", daemon=True)
        self._thread.start()

    def claim(self, keys: Sequence[Key]) -> list[bool]:
        groups: dict[tuple[int, int], list[int]] = {}
        for i, (rnd, sub, _dev) in enumerate(keys):
            groups.setdefault((rnd, sub), []).append(i)
        owned = [False] * len(keys)
        try:
            for (rnd, sub), where in groups.items():
                args: list[str | int] = [self.worker, f"{self._prefix}lease:", CLAIMS_TTL, *(keys[i][2] for i in where)]
                for i, won in zip(where, self._script(keys=[self._claims(rnd, sub)], args=args), strict=True):
                    owned[i] = bool(won)
        except self._error as exc:
            raise StateError(f"dedup store unreachable: {exc}") from exc
        return owned

    def committed(self, keys: Sequence[Key]) -> None:
        try:
            with self._client.pipeline(transaction=False) as pipe:
                for rnd, sub, dev in keys:
                    pipe.hset(self._claims(rnd, sub, "done"), dev, self.worker)
                    pipe.expire(self._claims(rnd, sub, "done"), CLAIMS_TTL)
                pipe.execute()
        except self._error as exc:
            raise StateError(f"dedup store unreachable: {exc}") from exc

    def counted(self, keys: Sequence[Key]) -> list[bool]:
        try:
            with self._client.pipeline(transaction=False) as pipe:
                for rnd, sub, dev in keys:
                    pipe.hexists(self._claims(rnd, sub, "done"), dev)
                return [bool(found) for found in pipe.execute()]
        except self._error as exc:
            raise StateError(f"dedup store unreachable: {exc}") from exc

    def answered(self, round: int, sub: int) -> set[str] | None:
        try:
            hashes = [self._claims(round, sub), self._claims(round, sub, "done")]
            devs = self._answered(keys=hashes, args=[f"{self._prefix}lease:"])
        except self._error as exc:
            log.warning("dedup store unreachable, judging the close on this worker's updates: %s", exc)
            return None
        return {dev.decode() for dev in devs}

    def close(self) -> None:
        """Stop renewing and give the lease up, so the other workers take over this one's unacked updates at once."""
        self._stop.set()
        self._thread.join(self.lease)
        try:
            self._client.delete(self._lease_key)
        except self._error:
            pass  # it expires on its own
        self._client.close()

    @property
    def _lease_key(self) -> str:
        return f"{self._prefix}lease:{self.worker}"

    def _claims(self, round: int, sub: int, kind: str = "claims") -> str:
        return f"{self._prefix}{kind}:{round}:{sub}"

    def _renew(self) -> None:
        self._client.set(self._lease_key, "1", px=int(self.lease * 1000))

    def _keep_lease(self) -> None:
        while not self._stop.wait(self.lease / 3):
            try:
                self._renew()
            except self._error as exc:
                log.warning("could not renew the dedup lease of worker %s: %s", self.worker, exc)


def triage(store: Dedup, judged: Sequence[tuple[str, str, Key] | None]) -> list[str | None]:
    """What a worker on a shared subscription does with each judged update, given its ack status, reason and key
    (None: nothing to decide): None keeps the collector's verdict; ``HELD`` (another live worker claimed it first: it
    answers) and ``AHEAD`` (a round this worker has not opened yet: another worker published its task first, and the
    device re-sends once this one caught up) send no ack; ``DUPLICATE`` answers an update this worker would call
    ``late`` but another worker counted (it committed it before dying, say: it forwards it after its restart)."""
    fates: list[str | None] = [None] * len(judged)
    wanted, late = [], []
    for i, item in enumerate(judged):
        if item is None:
            continue
        status, reason, _key = item
        if reason == "future_round":
            fates[i] = AHEAD
        elif status == "accepted":
            wanted.append(i)
        elif status == "late":
            late.append(i)
    for where, answers, fate in (
        (wanted, store.claim, HELD),
        (late, store.counted, DUPLICATE),
    ):
        if where:
            keys = [item[2] for item in (judged[i] for i in where) if item is not None]
            for i, yes in zip(where, answers(keys), strict=True):
                if yes == (fate == DUPLICATE):
                    fates[i] = fate
    return fates


def open_dedup(url: str, fleet: str, gw: str, worker: str) -> Dedup:
    """``local`` or ``redis://host:port/db``."""
    if url == "local":
        return LocalDedup()
    return RedisDedup(url, fleet, gw, worker)


def check_dedup_url(url: str) -> str:
    """``local`` or a ``redis://`` / ``rediss://`` URL with a host, else ValueError."""
    url = url.strip()
    if url == "local":
        return url
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise ValueError(f"dedup {url!r} must be `local` or redis://host[:port][/db]")
    return url


__all__ = [
    "AHEAD",
    "DUPLICATE",
    "Dedup",
    "HELD",
    "LEASE",
    "LocalDedup",
    "RedisDedup",
    "check_dedup_url",
    "open_dedup",
    "triage",
]
