"""The MQTT side of a simulated device: broker URLs, a configured paho client, a bounded connect."""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BrokerAddress:
    """Where the broker is: ``mqtt://[user:pass@]host:port`` (default port 1883) or ``mqtts://`` (8883, TLS)."""

    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = None

    @classmethod
    def parse(cls, url: str) -> BrokerAddress:
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError(f"broker URL {url!r} must look like mqtt://host:port or mqtts://host:port")
        try:
            port = parts.port
        except ValueError:
            raise ValueError(f"broker URL {url!r} has a bad port") from None
        tls = parts.scheme == "mqtts"
        return cls(
            parts.hostname,
            port or (8883 if tls else 1883),
            tls,
            unquote(parts.username) if parts.username else None,
            unquote(parts.password) if parts.password else None,
        )


def make_client(client_id: str, address: BrokerAddress, tls_ca: str | None = None) -> mqtt.Client:
    """A paho client (callback API v2, MQTT 3.1.1, clean session) that reconnects with a capped backoff."""
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True, protocol=mqtt.MQTTv311
    )
    if address.username is not None:
        client.username_pw_set(address.username, address.password)
    if address.tls:
        client.tls_set(ca_certs=tls_ca)
    client.reconnect_delay_set(min_delay=1, max_delay=8)
    return client


def connect(client: mqtt.Client, address: BrokerAddress, keepalive: int, retries: int) -> None:
    """Open the connection, trying ``1 + retries`` times with a jittered backoff; raise ConnectionError."""
    delay = 0.1
    for attempt in range(retries + 1):
        try:
            client.connect(address.host, address.port, keepalive)
            return
        except OSError as exc:
            if attempt == retries:
                raise ConnectionError(
                    f"cannot connect to the MQTT broker at {address.host}:{address.port} after {retries + 1} "
                    f"attempts: {exc.strerror or exc}"
                ) from None
            log.debug("connect attempt %d to %s:%d failed: %s", attempt + 1, address.host, address.port, exc)
            time.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 2.0)


__all__ = ["BrokerAddress", "connect", "make_client"]
