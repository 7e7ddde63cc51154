"""GroupCommit: what queues while the leader runs commits in the next batch, each caller gets its own result, and a
bad item fails alone. Threads and events only (no database): the batches are observable, not timed."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import pytest

from cloud.commits import GroupCommit

WAIT = 10.0  # seconds any event may take before the test fails instead of hanging


class Recorder:
    """A batch runner that records its batches; the first batch blocks until released."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.first_running = threading.Event()
        self.release_first = threading.Event()

    def run(self, items: Sequence[int]) -> list[str]:
        self.batches.append(list(items))
        if len(self.batches) == 1:
            self.first_running.set()
            assert self.release_first.wait(WAIT)
        if any(i < 0 for i in items):
            raise ValueError(f"bad item in {list(items)}")
        return [f"done {i}" for i in items]


def _queue_behind_the_leader(items: list[int]) -> tuple[Recorder, GroupCommit[int, str], list, ThreadPoolExecutor]:
    recorder = Recorder()
    commits: GroupCommit[int, str] = GroupCommit(threading.RLock(), recorder.run)
    pool = ThreadPoolExecutor(len(items) + 1)
    leader = pool.submit(commits.commit, 100)
    assert recorder.first_running.wait(WAIT)
    followers = [pool.submit(commits.commit, i) for i in items]
    # every follower is queued (the queue holds them all) before the leader's transaction ends
    for _ in range(1000):
        if len(commits._queue) == len(items):
            break
        threading.Event().wait(0.01)
    assert len(commits._queue) == len(items)
    recorder.release_first.set()
    return recorder, commits, [leader, *followers], pool


def test_callers_queued_behind_the_leader_commit_in_one_batch() -> None:
    recorder, _commits, futures, pool = _queue_behind_the_leader(list(range(8)))
    with pool:
        results = [f.result(WAIT) for f in futures]
    assert results == ["done 100"] + [f"done {i}" for i in range(8)]
    assert recorder.batches[0] == [100] and sorted(recorder.batches[1]) == list(range(8))
    assert len(recorder.batches) == 2


def test_a_bad_item_fails_alone() -> None:
    recorder, _commits, futures, pool = _queue_behind_the_leader([1, -2, 3])
    with pool:
        assert futures[0].result(WAIT) == "done 100"
        assert [futures[1].result(WAIT), futures[3].result(WAIT)] == ["done 1", "done 3"]
        with pytest.raises(ValueError, match=r"bad item in \[-2\]"):
            futures[2].result(WAIT)
    # the batch of three failed as a whole, then each item ran alone
    assert sorted(recorder.batches[1]) == [-2, 1, 3] and sorted(recorder.batches[2:]) == [[-2], [1], [3]]
