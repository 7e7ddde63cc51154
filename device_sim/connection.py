"""The MQTT side of a simulated device: broker URLs, a configured paho client, a bounded connect."""

from __future__ import annotations

import logging
import random
import time

import paho.mqtt.client as mqtt

from flcore.endpoints import BrokerAddress

log = logging.getLogger(__name__)


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


__all__ = ["connect", "make_client"]
