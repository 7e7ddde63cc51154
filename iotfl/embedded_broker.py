"""The embedded MQTT broker (amqtt) for machines without mosquitto: ``python -m iotfl.embedded_broker --port N``."""

from __future__ import annotations

import argparse
import asyncio
import signal


async def _serve(port: int) -> None:
    try:
        from amqtt.broker import Broker
    except ImportError:
        raise SystemExit("the embedded broker needs amqtt: pip install 'iotfl[sim]', or install mosquitto") from None
    config = {
        "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}", "max_connections": 0}},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }
    broker = Broker(config)
    await broker.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await broker.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=1883)
    asyncio.run(_serve(parser.parse_args().port))


if __name__ == "__main__":
    main()
