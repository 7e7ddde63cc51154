"""The fog node's HTTP face: the part of the cloud's REST API a child gateway uses, on the standard library's
threading HTTP server (a fog gateway installs on numpy alone, like any gateway).

``GET /api/v1/rounds/current``, ``GET /api/v1/model/latest`` (msgpack) and ``POST /api/v1/rounds/{r}/aggregates``
answer as the cloud does (docs/protocol.md); a request with a child's bearer token checks the child in. Mutating
calls need a child's token; ``GET /healthz`` answers ``{"ok": true}``.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import threading
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from flcore.errors import WireError
from flcore.messages import Agg
from flcore.schema import WIRE_VERSION, pack
from gateway.cloud_client import CloudClient
from gateway.fog import FogNode
from gateway.fog_settings import FogSettings
from gateway.fog_store import FogStore
from gateway.outbox import Outbox
from gateway.service import HTTP_TIMEOUT

log = logging.getLogger(__name__)

BODY_OVERHEAD = 4 << 20  # as the cloud: room beyond the float32 sum for keys and a long `devs` list
_AGGREGATES = re.compile(r"^/api/v1/rounds/([0-9]{1,10})/aggregates$")
_STATUS = {"duplicate": 200, "accepted": 200, "carried": 200}


class FogServer:
    """Serves ``node`` on ``host:port`` from a daemon thread; ``tokens`` maps child gateway id → bearer token."""

    def __init__(self, node: FogNode, tokens: dict[str, str], host: str, port: int) -> None:
        handler = type("Handler", (_Handler,), {"node": node, "tokens": dict(tokens)})
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="fog-http", daemon=True)

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _Handler(BaseHTTPRequestHandler):
    node: FogNode
    tokens: dict[str, str]
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        self._child()
        if path == "/healthz":
            self._json(200, {"ok": True})
        elif path == "/api/v1/rounds/current":
            info = self.node.current()
            if info is None:
                self._problem(503, "upstream", "the fog node has not reached its upstream yet")
            else:
                self._json(200, {**asdict(info), "layers": list(info.layers)})
        elif path == "/api/v1/model/latest":
            model = self.node.model
            if model is None:
                self._problem(503, "upstream", "the fog node has no model yet")
            else:
                body = {"v": WIRE_VERSION, "t": "model", "version": model.version, "layers": list(model.layers)}
                self._send(200, pack({**body, "w": model.w.astype("<f4").tobytes()}), "application/msgpack")
        else:
            self._problem(404, "not_found")

    def do_POST(self) -> None:
        match = _AGGREGATES.match(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        model = self.node.model
        limit = BODY_OVERHEAD + (4 * model.w.size if model is not None else 0)
        if match is None:
            return self._problem(404, "not_found")
        child = self._child()
        if child is None:
            return self._problem(401, "unauthorized", "missing or unknown bearer token")
        if length > limit:
            return self._problem(413, "too_large", f"the body is over {limit} bytes")
        body = self.rfile.read(length)
        if model is None:
            return self._problem(503, "upstream", "the fog node has no model yet")
        try:
            agg = Agg.decode(body, params=model.w.size, max_bytes=limit)
        except WireError as exc:
            return self._problem(422 if exc.reason == "length" else 400, exc.reason, str(exc))
        if agg.gw != child:
            return self._problem(403, "forbidden", f"this token belongs to {child!r}, not {agg.gw!r}")
        if agg.round != int(match.group(1)):
            return self._problem(400, "round_mismatch")
        verdict = self.node.submit(child, agg)
        if verdict not in _STATUS:
            return self._problem(409, verdict)
        self._json(200, {"accepted": verdict != "duplicate", "duplicate": verdict == "duplicate"})

    def _child(self) -> str | None:
        """The child gateway whose bearer token the request carries (checked in), else None."""
        header = self.headers.get("Authorization", "")
        token = header[7:] if header.startswith("Bearer ") else ""
        found = None
        for child, known in self.tokens.items():
            if token and hmac.compare_digest(known.encode(), token.encode()):
                found = child
        if found is not None:
            self.node.checkin(found)
        return found

    def _problem(self, code: int, reason: str, message: str = "") -> None:
        self._json(code, {"detail": {"reason": reason, **({"message": message} if message else {})}})

    def _json(self, code: int, data: dict[str, Any]) -> None:
        self._send(code, json.dumps(data).encode(), "application/json")

    def _send(self, code: int, body: bytes, media: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", media)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def run_fog(settings: FogSettings, stop: threading.Event) -> None:
    """Serve the children and forward their rounds upward until ``stop`` is set."""
    upstream = CloudClient(settings.cloud, settings.token, timeout=HTTP_TIMEOUT, ca=settings.cloud_ca)
    outbox = Outbox(settings.state_dir, settings.id)
    store = FogStore(settings.state_dir, settings.id)
    node = FogNode(
        settings.id,
        upstream,
        outbox,
        store,
        stop,
        round_timeout=settings.round_timeout,
        forward_margin=settings.forward_margin,
        poll_interval=settings.poll_interval,
    )
    server = FogServer(node, settings.child_tokens, settings.host, settings.port)
    server.start()
    log.info(
        "fog gateway %s serving children %s on http://%s:%d, forwarding to %s (outbox depth %d)",
        settings.id,
        sorted(settings.child_tokens),
        settings.host,
        server.port,
        settings.cloud,
        outbox.depth(),
    )
    try:
        node.run()
    finally:
        server.stop()
        upstream.close()
        outbox.close()
        store.close()
        log.info("fog gateway %s stopped", settings.id)


__all__ = ["FogServer", "run_fog"]
