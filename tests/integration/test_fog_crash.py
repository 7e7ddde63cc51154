"""A fog node killed with ``kill -9`` after answering a child 200 and before forwarding loses nothing: restarted, it
answers the child's retry ``duplicate`` and the cloud ends with exactly that child's k and n."""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from scaleout_harness import spawn_fog, stack_logs, start_cloud, wait_round_closed

from flcore.messages import Agg
from gateway.cloud_client import CloudClient, CloudError, RoundInfo
from iotfl.stack import Stack, wait_healthy

pytestmark = pytest.mark.integration

ROUND_TIMEOUT = 60.0  # long: the fog must not close the round on its own clock while the test works


def test_a_killed_fog_keeps_the_aggregate_it_acknowledged(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    region, tokens = secrets.token_urlsafe(12), {c: secrets.token_urlsafe(12) for c in ("site0", "site1")}
    cloud = start_cloud(
        stack, tmp_path, {"region0": region}, rounds=1, round_timeout=ROUND_TIMEOUT, extra=["--min-gateways", "1"]
    )
    try:
        fog = spawn_fog(stack, tmp_path, cloud, region, tokens, round_timeout=ROUND_TIMEOUT)
        site0, site1 = (CloudClient(fog, tokens[c]) for c in ("site0", "site1"))
        info = _open_round(site0, stack)
        site1.current()  # site1 is live and silent, so the fog keeps the round open for it
        model = site0.model()
        agg = Agg("site0", info.round, info.base, 37, 3, np.full(model.w.size, 0.01, np.float32), 0.5, 300, ("d0",))
        assert site0.post(agg, time.monotonic() + 20) == "accepted"
        stack.kill("region0")  # before the fog could forward: the cloud has no aggregate yet
        assert httpx.get(f"{cloud}/api/v1/status", timeout=5).json()["history"] == []

        stack.restart("region0")
        wait_healthy(fog, stack, timeout=30)
        assert _retry(site0, agg) == "duplicate"
        closed = wait_round_closed(cloud, info.round, stack, timeout=ROUND_TIMEOUT + 30)
        status = httpx.get(f"{cloud}/api/v1/status", timeout=5).json()
        (entry,) = status["history"]
        assert (entry["k"], entry["n"]) == (3, 37), (closed, stack_logs(stack))
        site0.close()
        site1.close()
    finally:
        stack.stop()


def _open_round(child: CloudClient, stack: Stack) -> RoundInfo:
    """The round the fog shows its children once it reached the cloud (bounded wait)."""
    end = time.monotonic() + 30
    while time.monotonic() < end:
        stack.check_alive()
        try:
            info = child.current()
            if info.state == "open":
                return info
        except CloudError:  # the fog answers 503 until it reached the cloud
            pass
        time.sleep(0.3)
    raise AssertionError(f"the fog showed no open round; logs:\n{stack_logs(stack)}")


def _retry(child: CloudClient, agg: Agg) -> str:
    """The child's retry after the restart, once the restarted fog followed the cloud's round again."""
    return child.post(agg, time.monotonic() + 30)
