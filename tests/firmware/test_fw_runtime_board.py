"""The real board module and the bundled synthetic sensors under MicroPython (no hardware needed for these parts),
and the store's atomic state file."""

from __future__ import annotations

from pathlib import Path

from micropython_runner import MicroPythonRunner

SCRIPT = """
import json
import board, config, store
cfg = config.validate({"dev": "dev7", "gw": "gw0", "broker": {"host": "h"},
                       "sensor": {"features": 10, "classes": 5, "seed": 3}})
xs, ys, n = board.read_samples(cfg, 40)
again = board.read_samples(cfg, 40)
other = board.read_samples(config.validate({"dev": "dev8", "gw": "gw0", "broker": {"host": "h"}}), 40)
# the class's feature (label mod features) carries +1.0: its mean stands out
hot = sum(xs[i * 10 + ys[i] % 10] for i in range(n)) / n
cold = sum(xs[i * 10 + (ys[i] + 1) % 10] for i in range(n)) / n
st = store.Store()
st.set(seq=4, last=[2, 1])
with open("state.json.tmp", "w") as f:
    f.write("{half a fi")  # a write cut short by a reset
reloaded = store.Store()
print(json.dumps({
    "n": n, "len": len(xs), "labels": sorted(set(ys)), "same": list(xs) == list(again[0]),
    "differs": list(xs) != list(other[0]), "hot": hot, "cold": cold,
    "battery": board.battery(cfg["battery"]), "clock": board.unix_time() is not None,
    "state": [reloaded.get("seq"), reloaded.get("last"), reloaded.answered(2, 1), reloaded.answered(2, 2)],
}))
"""


def test_synthetic_sensors_and_the_state_file(mpy: MicroPythonRunner, tmp_path: Path) -> None:
    out = mpy.run_json(SCRIPT, heap="256K", cwd=tmp_path, timeout=60)
    assert out["n"] == 40 and out["len"] == 400 and set(out["labels"]) <= set(range(5))
    assert out["same"] and out["differs"]  # reproducible per device, different between devices
    assert out["hot"] > out["cold"] + 0.5
    assert out["battery"] == 1.0 and out["clock"]
    assert out["state"] == [4, [2, 1], True, False]
