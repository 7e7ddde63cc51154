"""``serve``: a real process that logs its URL, answers, and exits 0 on SIGTERM/SIGINT; no torch in the cloud."""

from __future__ import annotations

import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from cloud.errors import CloudError
from cloud.server import bind

SCRIPT = """
import logging, sys
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")
from cloud.server import serve
from cloud.settings import CloudSettings
from flcore.datasets import sensors
settings = CloudSettings(port=0, db=sys.argv[1], gateway_tokens="gw0=a", dataset="sensors", rounds=2)
serve(settings, sensors(0, samples=200))
print("torch imported:", "torch" in sys.modules, flush=True)
"""


def _lines(stream, sink: queue.Queue) -> None:
    for line in stream:
        sink.put(line)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_logs_its_url_and_stops_cleanly_on_a_signal(db_url: str, sig: signal.Signals) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, db_url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=_lines, args=(proc.stderr, lines), daemon=True)
    reader.start()
    try:
        url, log, deadline = None, [], time.monotonic() + 30
        while url is None:
            assert time.monotonic() < deadline and proc.poll() is None, "".join(log)
            try:
                log.append(lines.get(timeout=0.5))
            except queue.Empty:
                continue
            match = re.search(r"serving on (http://127\.0\.0\.1:\d+)", log[-1])
            url = match.group(1) if match else None
        assert httpx.get(f"{url}/healthz", timeout=5).json() == {"status": "ok"}
        assert httpx.get(f"{url}/api/v1/rounds/current", timeout=5).json()["layers"] == [10, 16, 5]
        proc.send_signal(sig)
        proc.wait(timeout=15)
        out = proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    reader.join(timeout=5)
    while not lines.empty():
        log.append(lines.get())
    assert proc.returncode == 0, "".join(log)
    assert "torch imported: False" in out
    assert any("iotfl cloud stopped" in line for line in log) and not any("Traceback" in line for line in log)


def test_a_busy_port_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(CloudError, match="cannot listen on 127.0.0.1"):
            bind("127.0.0.1", taken.getsockname()[1])


def test_the_cloud_package_imports_no_torch() -> None:
    code = (
        "import sys, cloud.app, cloud.server, cloud.rounds, cloud.storage, cloud.api; "
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    sources = "\n".join(p.read_text() for p in Path(__file__).parents[2].joinpath("cloud").rglob("*.py"))
    assert not re.search(r"^\s*(import|from)\s+torch\b", sources, re.M)
