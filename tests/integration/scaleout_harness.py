"""What the scale-out tests share: a real cloud process for one short round, and waits on its REST answers."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from iotfl.broker import free_port
from iotfl.stack import Stack, wait_healthy

REDIS_URL = "redis://127.0.0.1:6379/0"


def start_cloud(
    stack: Stack, workdir: Path, tokens: dict[str, str], *, rounds: int, round_timeout: float, extra: list[str]
) -> str:
    """Spawn ``iotfl cloud`` on a free port with ``tokens`` (gateway → secret); returns its URL once healthy."""
    port = free_port()
    stack.spawn(
        "cloud",
        [
            "cloud",
            "--port",
            str(port),
            "--db",
            f"sqlite:///{workdir / 'cloud.db'}",
            "--rounds",
            str(rounds),
            "--round-timeout",
            str(round_timeout),
            *extra,
        ],
        env={"IOTFL_GATEWAY_TOKENS": ",".join(f"{gw}={tok}" for gw, tok in tokens.items())},
    )
    url = f"http://127.0.0.1:{port}"
    wait_healthy(url, stack, timeout=60)
    return url


def spawn_fog(
    stack: Stack, workdir: Path, cloud: str, token: str, children: dict[str, str], *, round_timeout: float
) -> str:
    """Spawn ``iotfl fog`` as ``region0`` (state in ``workdir/region0``) serving ``children``; its URL once healthy."""
    port = free_port()
    stack.spawn(
        "region0",
        [
            "fog",
            "--id",
            "region0",
            "--cloud",
            cloud,
            "--token",
            token,
            "--port",
            str(port),
            "--round-timeout",
            str(round_timeout),
            "--state-dir",
            str(workdir / "region0"),
            *(f"--child-token={child}={secret}" for child, secret in children.items()),
        ],
    )
    url = f"http://127.0.0.1:{port}"
    wait_healthy(url, stack, timeout=30)
    return url


def wait_round_closed(url: str, rnd: int, stack: Stack, timeout: float) -> dict:
    """``GET /api/v1/rounds/{rnd}`` once the round closed (every child still alive), else AssertionError."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        stack.check_alive()
        answer = httpx.get(f"{url}/api/v1/rounds/{rnd}", timeout=5)
        if answer.status_code == 200 and answer.json()["state"] == "closed":
            return dict(answer.json())
        time.sleep(0.5)
    raise AssertionError(f"round {rnd} did not close within {timeout} s; logs:\n{stack_logs(stack)}")


def stack_logs(stack: Stack) -> str:
    return "\n".join(f"--- {c.name}\n{c.tail(25)}" for c in stack.children)
