"""Group commit: callers that queue for the round lock while another holds it are served by one transaction.

Each caller enqueues its item and takes the lock. The first to get it (the leader) takes every queued item and runs
them as one batch, one commit; the followers then find their result ready when they get the lock in turn, so each
answers only after its item is durably committed. If a batch fails as a whole, its items are retried one by one so
that a bad item fails alone.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class _Entry(Generic[Item, Result]):
    __slots__ = ("done", "error", "item", "result")

    def __init__(self, item: Item):
        self.item = item
        self.done = False
        self.result: Result | None = None
        self.error: BaseException | None = None


class GroupCommit(Generic[Item, Result]):
    """``commit(item)`` runs ``run([item, ...])`` under ``lock`` for itself and whatever queued meanwhile.

    ``run`` gets a batch and returns one result per item, in order, within one transaction of its own.
    """

    def __init__(self, lock: threading.RLock, run: Callable[[Sequence[Item]], list[Result]]):
        self._lock = lock
        self._run = run
        self._queue_lock = threading.Lock()
        self._queue: list[_Entry[Item, Result]] = []

    def commit(self, item: Item) -> Result:
        entry: _Entry[Item, Result] = _Entry(item)
        with self._queue_lock:
            self._queue.append(entry)
        with self._lock:
            if not entry.done:
                with self._queue_lock:
                    batch, self._queue = self._queue, []
                self._lead(batch)
        if not entry.done:  # the leader was interrupted (BaseException) before this batch finished
            raise RuntimeError("the batch this item was in did not finish")
        if entry.error is not None:
            raise entry.error
        return entry.result  # type: ignore[return-value]  # set with done=True by the leader

    def _lead(self, batch: list[_Entry[Item, Result]]) -> None:
        try:
            results = self._run([e.item for e in batch])
        except Exception as exc:
            if len(batch) == 1:
                _finish(batch[0], error=exc)
                return
            # One item may be what broke the batch: each alone in its own transaction, so only it fails.
            for entry in batch:
                self._lead([entry])
            return
        for entry, result in zip(batch, results, strict=True):
            _finish(entry, result=result)


def _finish(entry: _Entry[Item, Result], result: Result | None = None, error: BaseException | None = None) -> None:
    entry.result, entry.error, entry.done = result, error, True


__all__ = ["GroupCommit"]
