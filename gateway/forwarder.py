"""Store-and-forward: a thread that posts the outbox to the cloud, oldest round first, until each gets a final answer.

No give-up: a post stays pending through any outage, retried with exponential backoff and full jitter (a random
pause in ``[0, min(BACKOFF_MAX, BACKOFF_FIRST · 2^attempt)]``, so gateways that lost the cloud together do not come
back in lockstep). The cloud's idempotency per (gateway, round) makes every retry safe: a post that got through but
whose answer was lost comes back ``duplicate``. Final answers are 200 (``accepted``/``duplicate``) and the
refusals that judge the aggregate itself (409 ``late``/``future_round``/``base_mismatch``, 400, 413, 422), which are
logged as errors and leave the outbox. ``wake()`` retries at once (the gateway calls it when the cloud answers a
poll again, and after queueing a new round), so an outage costs no extra backoff once it is over.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable

from gateway.cloud_client import CloudClient, Delivery
from gateway.outbox import Entry, Outbox
from gateway.pause import Pause
from gateway.state_db import StateError

log = logging.getLogger(__name__)

BACKOFF_FIRST = 0.5
BACKOFF_MAX = 10.0
IDLE_WAIT = 1.0
WAIT_SLICE = 0.25
# A long outage logs its first failure, then every LOG_EVERY-th attempt (the rest at debug level).
LOG_EVERY = 10


def backoff_pause(failures: int, first: float, cap: float, rng: random.Random) -> float:
    """Full jitter: a pause drawn from ``[0, min(cap, first · 2^(failures − 1))]`` after ``failures`` in a row."""
    ceiling = min(cap, first * 2 ** min(max(failures - 1, 0), 32))
    return rng.uniform(0, ceiling)


class Forwarder:
    """Drains one gateway's ``Outbox`` through its ``CloudClient`` on a background thread."""

    def __init__(
        self,
        outbox: Outbox,
        cloud: CloudClient,
        stop: threading.Event,
        *,
        pause: Pause | None = None,
        on_change: Callable[[], None] | None = None,
        backoff_first: float = BACKOFF_FIRST,
        backoff_max: float = BACKOFF_MAX,
        rng: random.Random | None = None,
    ) -> None:
        self.outbox = outbox
        self.cloud = cloud
        self.stop = stop
        self.pause = pause or Pause()
        self.on_change = on_change
        self.backoff_first = backoff_first
        self.backoff_max = backoff_max
        self.rng = rng or random.Random()
        self.delivered = 0
        self.refused = 0
        self._failures = 0  # failed attempts in a row since the last final answer or wake()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="gateway-forwarder", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Attempt the next post now, whatever the backoff said."""
        self._wake.set()

    def join(self, timeout: float) -> None:
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def attempt(self) -> Delivery | None:
        """One attempt at the oldest pending post (None when the outbox is empty); the thread loops over this."""
        entry = self.outbox.next()
        if entry is None:
            return None
        if entry.attempts == 0:
            self.pause.reached("before_post", self.stop)
        outcome = self.cloud.send(entry.round, entry.body)
        if outcome.final:
            self.outbox.finish(entry.round, outcome.result)
            self._failures = 0
            self._log_final(entry, outcome)
        else:
            attempts = self.outbox.attempted(entry.round, outcome.detail or outcome.result)
            level = logging.WARNING if attempts == 1 or attempts % LOG_EVERY == 0 else logging.DEBUG
            log.log(
                level,
                "posting round %d failed (%s); attempt %d, outbox depth %d, retrying with backoff",
                entry.round,
                outcome.detail or outcome.result,
                attempts,
                self.outbox.depth(),
            )
        if self.on_change is not None:
            self.on_change()
        return outcome

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                outcome = self.attempt()
            except StateError as exc:
                log.error("the outbox is unreadable: %s", exc)
                outcome = Delivery("state_error", False)
            except Exception:  # a bug here must not end store-and-forward for good
                log.exception("forwarding failed unexpectedly")
                outcome = Delivery("error", False)
            if outcome is None:
                self._sleep(IDLE_WAIT)
            elif not outcome.final:
                self._failures += 1
                if self._sleep(backoff_pause(self._failures, self.backoff_first, self.backoff_max, self.rng)):
                    self._failures = 0

    def _sleep(self, seconds: float) -> bool:
        """Wait up to ``seconds``; True when ``wake()`` cut the wait short."""
        end = time.monotonic() + seconds
        while not self.stop.is_set():
            left = end - time.monotonic()
            if left <= 0:
                return False
            if self._wake.wait(min(left, WAIT_SLICE)):
                self._wake.clear()
                return True
        return False

    def _log_final(self, entry: Entry, outcome: Delivery) -> None:
        waited = time.time() - entry.queued_at
        depth = self.outbox.depth()
        if outcome.delivered:
            self.delivered += 1
            log.info(
                "round %d posted (%s): k=%d n=%d after %d failed attempt(s), %.1f s in the outbox; outbox depth %d",
                entry.round,
                f"{outcome.result}, {outcome.detail}" if outcome.detail else outcome.result,
                entry.k,
                entry.n,
                entry.attempts,
                waited,
                depth,
            )
        else:
            self.refused += 1
            log.error(
                "round %d: the cloud refused the aggregate (%s: %s); its k=%d updates are not counted; outbox depth %d",
                entry.round,
                outcome.result,
                outcome.detail,
                entry.k,
                depth,
            )


__all__ = ["BACKOFF_FIRST", "BACKOFF_MAX", "Forwarder", "backoff_pause"]
