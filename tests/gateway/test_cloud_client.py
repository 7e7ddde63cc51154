"""CloudClient against a real scripted HTTP server: polling, model fetch, posting with retries and backoff."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import msgpack
import numpy as np
import pytest

from flcore.messages import Agg
from gateway.cloud_client import CloudClient, CloudError, CloudRefused

CURRENT = {"round": 3, "base": 2, "state": "open", "deadline": 1e10, "layers": [4, 3, 2], "lr": 0.1, "epochs": 1,
           "batch": 8, "chunk": 64, "min_battery": 0.2, "gateway_rounds": 2}  # fmt: skip


class Script:
    """Answers per path, popped in order (the last one repeats); records what came in."""

    def __init__(self) -> None:
        self.answers: dict[str, list[tuple[int, str, bytes]]] = {}
        self.seen: list[tuple[str, str, str | None, bytes]] = []

    def answer(self, method: str, path: str, *replies: tuple[int, object]) -> None:
        self.answers[f"{method} {path}"] = [
            (code, "application/msgpack", body) if isinstance(body, bytes) else (code, "application/json",
                                                                                  json.dumps(body).encode())
            for code, body in replies
        ]  # fmt: skip


@pytest.fixture
def server() -> Iterator[tuple[str, Script]]:
    script = Script()

    class Handler(BaseHTTPRequestHandler):
        def _reply(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            script.seen.append((self.command, self.path, self.headers.get("Authorization"), body))
            replies = script.answers.get(f"{self.command} {self.path}", [(404, "application/json", b"{}")])
            code, kind, data = replies.pop(0) if len(replies) > 1 else replies[0]
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _reply

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", script
    httpd.shutdown()
    httpd.server_close()


def agg() -> Agg:
    return Agg("gw0", 3, 2, 40, 4, np.arange(23, dtype=np.float32), 0.5, 1234, ("a", "b"))


def test_current_and_model_carry_the_token(server: tuple[str, Script]) -> None:
    url, script = server
    w = np.linspace(-1, 1, 23).astype("<f4")
    script.answer("GET", "/api/v1/rounds/current", (200, CURRENT))
    body = msgpack.packb({"v": 1, "t": "model", "version": 2, "layers": [4, 3, 2], "w": w.tobytes()})
    script.answer("GET", "/api/v1/model/latest", (200, body))
    client = CloudClient(url, "tok")
    info = client.current()
    assert (info.round, info.base, info.state, info.layers, info.gateway_rounds) == (3, 2, "open", (4, 3, 2), 2)
    model = client.model()
    assert model.version == 2 and np.array_equal(model.w, w)
    assert {auth for _, _, auth, _ in script.seen} == {"Bearer tok"}
    client.close()


@pytest.mark.parametrize(
    "body", [{**CURRENT, "state": "weird"}, {**CURRENT, "layers": [4]}, {"round": 1}, [1, 2], {**CURRENT, "round": "3"}]
)
def test_malformed_current_is_a_cloud_error(server: tuple[str, Script], body: object) -> None:
    url, script = server
    script.answer("GET", "/api/v1/rounds/current", (200, body))
    with pytest.raises(CloudError):
        CloudClient(url, "tok").current()


def test_model_with_wrong_length_is_refused(server: tuple[str, Script]) -> None:
    url, script = server
    bad = msgpack.packb({"version": 0, "layers": [4, 3, 2], "w": b"\x00" * 8})
    script.answer("GET", "/api/v1/model/latest", (200, bad))
    with pytest.raises(CloudError, match="needs 23"):
        CloudClient(url, "tok").model()


def test_post_retries_5xx_then_succeeds(server: tuple[str, Script]) -> None:
    url, script = server
    path = "/api/v1/rounds/3/aggregates"
    script.answer("POST", path, (503, {}), (500, {}), (200, {"accepted": True, "duplicate": False}))
    assert CloudClient(url, "tok").post(agg(), time.monotonic() + 20) == "accepted"
    posts = [s for s in script.seen if s[0] == "POST"]
    assert len(posts) == 3 and all(body == agg().encode() for *_, body in posts)
    assert Agg.decode(posts[0][3], params=23).devices == ("a", "b")


def test_post_outcomes(server: tuple[str, Script]) -> None:
    url, script = server
    path = "/api/v1/rounds/3/aggregates"
    client = CloudClient(url, "tok")
    script.answer("POST", path, (200, {"accepted": False, "duplicate": True}))
    assert client.post(agg(), time.monotonic() + 5) == "duplicate"
    script.answer("POST", path, (409, {"detail": {"reason": "late"}}))
    assert client.post(agg(), time.monotonic() + 5) == "late"
    script.answer("POST", path, (200, {"accepted": True, "duplicate": False, "round": 5, "staleness": 2}))
    carried = client.send(3, agg().encode())
    assert (carried.result, carried.final, carried.detail) == ("accepted", True, "late, counted in round 5")
    script.answer("POST", path, (200, {"accepted": True, "duplicate": False}))
    assert client.send(3, agg().encode()).detail == ""
    script.answer("POST", path, (401, {"detail": "bad token"}))
    with pytest.raises(CloudRefused, match="401"):
        client.post(agg(), time.monotonic() + 5)


def test_post_gives_up_within_its_budget_and_on_stop(server: tuple[str, Script]) -> None:
    url, script = server
    script.answer("POST", "/api/v1/rounds/3/aggregates", (503, {}))
    client = CloudClient(url, "tok")
    start = time.monotonic()
    with pytest.raises(CloudError, match="attempts"):
        client.post(agg(), time.monotonic() + 1.5)
    assert time.monotonic() - start < 2.5
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    start = time.monotonic()
    with pytest.raises(CloudError):
        client.post(agg(), time.monotonic() + 60, stop)
    assert time.monotonic() - start < 2.0


def test_unreachable_cloud_is_a_cloud_error() -> None:
    with pytest.raises(CloudError, match="rounds/current"):
        CloudClient("http://127.0.0.1:1", "tok", timeout=1).current()
