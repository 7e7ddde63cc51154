"""Run the aggregator under uvicorn: ``serve`` blocks until SIGINT/SIGTERM; ``running`` serves from a thread."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import socket
import ssl
import threading
import time
from collections.abc import Generator, Iterator

import uvicorn
from fastapi import FastAPI
from uvicorn.supervisors.multiprocess import Multiprocess

from cloud.app import create_app
from cloud.errors import CloudError
from cloud.settings import CloudSettings
from flcore.datasets import Dataset
from flcore.endpoints import is_loopback

log = logging.getLogger(__name__)

GRACEFUL_SHUTDOWN_SECONDS = 5


def bind(host: str, port: int) -> socket.socket:
    """A listening-ready TCP socket on ``host:port`` (port 0 picks a free one), or a ``CloudError`` saying why."""
    try:
        family, kind, proto, _name, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
    except (OSError, IndexError) as exc:
        raise CloudError(f"cannot resolve {host!r}: {exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise CloudError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def url_of(sock: socket.socket, tls: bool = False) -> str:
    host, port = sock.getsockname()[:2]
    scheme = "https" if tls else "http"
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def _tls_options(settings: CloudSettings) -> dict[str, str]:
    """uvicorn's ssl options for ``tls_cert``/``tls_key`` (checked here: uvicorn would fail with a traceback)."""
    if settings.tls_cert is None or settings.tls_key is None:
        if not is_loopback(settings.host):
            log.warning(
                "serving plain http on %s: gateway tokens cross the network in clear; for a local demo only "
                "(give --tls-cert and --tls-key, see docs/security.md)",
                settings.host,
            )
        return {}
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(settings.tls_cert, settings.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise CloudError(f"cannot use TLS certificate {settings.tls_cert} with key {settings.tls_key}: {exc}") from None
    return {"ssl_certfile": str(settings.tls_cert), "ssl_keyfile": str(settings.tls_key)}


class _Server(uvicorn.Server):
    """uvicorn that logs one line with its URL and returns normally after SIGINT/SIGTERM."""

    def __init__(self, config: uvicorn.Config, url: str):
        super().__init__(config)
        self.url = url

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            log.info("iotfl cloud serving on %s (dashboard at /, API docs at /docs)", self.url)

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # uvicorn re-raises the caught signal after shutting down; the CLI wants a plain return instead.
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        originals = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in originals.items():
                signal.signal(sig, handler)


def _config(app: object, tls: dict[str, str], **options: object) -> uvicorn.Config:
    return uvicorn.Config(
        app,  # type: ignore[arg-type]
        lifespan="on",
        log_config=None,  # the caller's logging setup applies
        access_log=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        **tls,  # type: ignore[arg-type]
        **options,  # type: ignore[arg-type]
    )


def _server(app: FastAPI, sock: socket.socket, tls: dict[str, str]) -> _Server:
    config = _config(app, tls)
    if tls:
        config.load()  # builds uvicorn's SSL context, which takes no minimum version option
        assert config.ssl is not None
        config.ssl.minimum_version = ssl.TLSVersion.TLSv1_2
    return _Server(config, url_of(sock, bool(tls)))


def serve(settings: CloudSettings, dataset: Dataset) -> None:
    """Serve the aggregator on ``settings.host:settings.port`` until SIGINT or SIGTERM, then shut down cleanly
    (``settings.workers`` processes on one PostgreSQL database when more than one)."""
    tls = _tls_options(settings)
    if settings.workers > 1:
        _serve_workers(settings, dataset, tls)
        return
    app = create_app(settings, dataset)
    sock = bind(settings.host, settings.port)
    server = _server(app, sock, tls)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    if not server.started:
        raise CloudError("the cloud failed to start (see the log above)")
    log.info("iotfl cloud stopped")


def _serve_workers(settings: CloudSettings, dataset: Dataset, tls: dict[str, str]) -> None:
    """uvicorn's supervisor over ``settings.workers`` processes sharing one listening socket; each builds its own
    app on the shared database, whose locks keep the round logic exclusive (cloud.storage)."""
    # Migrate and initialize once here, so the workers start on a ready database (and a bad one fails right away).
    create_app(settings, dataset).state.rounds.close()
    sock = bind(settings.host, settings.port)
    level = logging.getLogger().getEffectiveLevel()
    # The settings travel as plain values: the CLI's settings class (with its TOML source) is local, not picklable.
    app = functools.partial(_worker_app, settings.model_dump(), dataset, level)
    config = _config(app, tls, factory=True, workers=settings.workers)
    log.info("iotfl cloud serving on %s with %d workers", url_of(sock, bool(tls)), settings.workers)
    try:
        Multiprocess(config, sockets=[sock]).run()
    finally:
        sock.close()
    log.info("iotfl cloud stopped")


def _worker_app(values: dict[str, object], dataset: Dataset, level: int) -> FastAPI:
    """One worker's app (runs in the worker process, which starts without the parent's logging set-up)."""
    logging.basicConfig(level=level, format=f"%(asctime)s %(levelname)s [{os.getpid()}] %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    return create_app(CloudSettings(**values), dataset)  # type: ignore[arg-type]


@contextlib.contextmanager
def running(settings: CloudSettings, dataset: Dataset, *, startup_timeout: float = 15.0) -> Iterator[str]:
    """Serve from a background thread for the duration of the block; yields the base URL (``port=0`` is fine)."""
    tls = _tls_options(settings)
    app = create_app(settings, dataset)
    sock = bind(settings.host, settings.port)
    server = _server(app, sock, tls)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="iotfl-cloud", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + startup_timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise CloudError(f"the cloud did not start within {startup_timeout:.0f} s")
            time.sleep(0.02)
        yield server.url
    finally:
        server.should_exit = True
        thread.join(timeout=GRACEFUL_SHUTDOWN_SECONDS + 5)
        sock.close()


__all__ = ["bind", "running", "serve"]
