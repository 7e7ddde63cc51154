"""Firmware msgpack + wire codec under real MicroPython against flcore's shared vectors, in both directions."""

from __future__ import annotations

import json
import random
import struct
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
from micropython_runner import MicroPythonRunner

from flcore.errors import WireError
from flcore.messages import Ack, Status, Task, Up
from flcore.quantize import quantize

VECTORS = Path(__file__).resolve().parents[1] / "flcore" / "vectors"

# MicroPython side: one run encodes/decodes everything in in.json and prints one JSON line
SCRIPT = r"""
import json, struct
from array import array
from binascii import hexlify, unhexlify
import decode, mpack, quant, taskmsg, unpack, upmsg, wire

def h(b):
    return hexlify(b).decode()

def conv(o):
    if isinstance(o, memoryview):
        return {"bin": h(o)}
    if isinstance(o, float):
        return {"f": "nan" if o != o else h(struct.pack(">d", o))}
    if isinstance(o, list):
        return [conv(i) for i in o]
    if isinstance(o, dict):
        return {"map": sorted([k, conv(o[k])] for k in o)}
    return o

def attempt(fn, payload):
    try:
        return {"ok": conv(fn(unhexlify(payload) if isinstance(payload, str) else payload))}
    except ValueError as e:
        return {"err": "ValueError"}
    except Exception as e:
        return {"err": type(e).__name__, "msg": str(e)}

inp = json.load(open("in.json"))
out = {"up": [], "status": [], "task": [], "ack": [], "generic": [], "cut": [], "task_mut": []}
for v in inp["up"]:
    x = array("f", unhexlify(v["delta"]))
    chunk = v["chunk"]
    scales = array("f", bytearray(4 * quant.chunk_count(len(x), chunk)))
    q = bytearray(len(x))
    quant.quantize(x, chunk, scales, q)
    args = (v["dev"], v["round"], v["base"], v["n"], v["loss"], v["seq"], chunk, scales, q, v["sub"], v["meta"])
    buf = bytearray()
    upmsg.write_up(buf.extend, *args)
    size = upmsg.up_size(*args)
    sink = upmsg.Sink(size)
    upmsg.write_up(sink, *args)
    out["up"].append({"scales": h(bytes(scales)), "q": h(q), "payload": h(buf), "size": size,
                      "sink_same": bytes(sink.view()) == bytes(buf)})
for v in inp["status"]:
    out["status"].append(h(wire.status_bytes(v["dev"], v["state"], v.get("battery"), v.get("rssi"),
        v.get("ram_class"), v.get("fw"), v.get("gw"), v.get("round"), v.get("sub"), v.get("skip"))))
for p in inp["task"]:
    out["task"].append(attempt(taskmsg.decode_task, p))
for p in inp["ack"]:
    out["ack"].append(attempt(decode.decode_ack, p))
valid = [unhexlify(p) for p in inp["valid"]]
for p in inp["generic"]:
    out["generic"].append(attempt(unpack.unpackb, p))
for i, c in inp["cut"]:
    out["cut"].append(attempt(unpack.unpackb, memoryview(valid[i])[:c]))
for p in inp["task_mut"]:
    out["task_mut"].append(attempt(taskmsg.decode_task, p))
print(json.dumps(out))
"""


def load(name: str) -> list[dict[str, Any]]:
    return json.loads((VECTORS / name).read_text())["vectors"]


def conv(o: Any) -> Any:
    """The same plain-JSON image of a decoded value the MicroPython script prints."""
    if isinstance(o, bytes):
        return {"bin": o.hex()}
    if isinstance(o, float):  # NaN payload bits are not kept by MicroPython, so every NaN is "nan"
        return {"f": "nan" if o != o else struct.pack(">d", o).hex()}
    if isinstance(o, list):
        return [conv(i) for i in o]
    if isinstance(o, dict):
        return {"map": sorted([k, conv(v)] for k, v in o.items())}
    return o


def unsupported(o: Any) -> bool:
    """True for values the firmware decoder refuses by design: ext types and non-str map keys."""
    if isinstance(o, msgpack.ExtType | msgpack.Timestamp):
        return True
    if isinstance(o, list):
        return any(unsupported(i) for i in o)
    if isinstance(o, dict):
        return any(not isinstance(k, str) or unsupported(v) for k, v in o.items())
    return False


def reference(payload: bytes) -> dict[str, Any]:
    try:
        return {"ok": msgpack.unpackb(payload, raw=False, strict_map_key=False)}
    except Exception:
        return {"err": "ValueError"}


def random_up_inputs() -> list[dict[str, Any]]:
    """Inputs outside the shared vectors for the reverse direction (firmware encodes, flcore decodes)."""
    rng = np.random.default_rng(7)
    cases = []
    for i, (size, chunk) in enumerate([(261, 64), (2410, 256), (33, 5), (100, 100), (7, 3), (1000, 17)]):
        delta = (rng.standard_t(3, size) * 10.0 ** rng.integers(-5, 1)).astype(np.float32)
        delta[rng.random(size) < 0.05] = 0.0
        meta = [None, {"battery": 0.5, "train_ms": 70_000, "ram_class": "class1", "fw": "0.2.0"}, {"fw": "x"}][i % 3]
        cases.append(
            dict(
                dev=f"fw-{i}",
                round=1 + i * 1000,
                base=i * 999,
                n=[1, 32, 255, 256, 65_536, 100_000][i],
                loss=float(np.float32(rng.random() * 3)),
                seq=[0, 127, 128, 65_535, 65_536, 2**32][i],
                sub=i % 3,
                meta=meta,
                chunk=chunk,
                delta=delta.astype("<f4").tobytes().hex(),
            )
        )
    return cases


def mutations(payloads: list[bytes], count: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    out = []
    for k in range(count):
        data = bytearray(payloads[k % len(payloads)])
        for _ in range(rng.randint(1, 3)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        out.append(bytes(data))
    return out


def cut_points(payload: bytes, rng: random.Random) -> list[int]:
    """Every prefix length of a small payload; the header region and a sample of the rest for a big one."""
    return (
        list(range(len(payload))) if len(payload) <= 300 else [*range(200), *rng.sample(range(200, len(payload)), 40)]
    )


@pytest.fixture(scope="module")
def codec(mpy: MicroPythonRunner, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    rng = random.Random(11)
    ups = load("up.json")
    up_inputs = [{**v["input"], "delta": v["input"]["delta_f32le"]} for v in ups] + random_up_inputs()
    valid = [
        bytes.fromhex(v["expected"]["payload"])
        for name in ("up.json", "task.json", "ack.json", "status.json")
        for v in load(name)
    ] + [bytes.fromhex(v["payload"]) for v in load("up_invalid.json")]
    small = [p for p in valid if len(p) < 400]
    cuts = [[i, c] for i, p in enumerate(valid) for c in cut_points(p, rng)]
    garbage = [bytes(rng.randrange(256) for _ in range(rng.randint(1, 24))) for _ in range(300)]
    special = [b"\x91" * 40 + b"\x00", b"\xdf\xff\xff\xff\xff", b"\xdd\xff\xff\xff\xff", b"\xc6\xff\xff\xff\xff"]
    special += [b"\xa2\xff\xfe", b"\x81\x01\x02", b"\xd4\x01\x02", b"\x01\x02"]
    generic = valid + mutations(small, 600, 3) + garbage + special
    tasks = [bytes.fromhex(v["expected"]["payload"]) for v in load("task.json")]
    data = {
        "up": up_inputs,
        "status": [v["input"] for v in load("status.json")],
        "task": [p.hex() for p in tasks],
        "ack": [v["expected"]["payload"] for v in load("ack.json")],
        "generic": [p.hex() for p in generic],
        "valid": [p.hex() for p in valid],
        "cut": cuts,
        "task_mut": [p.hex() for p in mutations(tasks, 600, 5) + [p[:c] for p in tasks for c in cut_points(p, rng)]],
    }
    work = tmp_path_factory.mktemp("codec")
    (work / "in.json").write_text(json.dumps(data))
    result = mpy.run_json(SCRIPT, heap="16M", cwd=work, timeout=60)
    return {"in": data, "out": result, "generic": generic, "special": special}


def test_up_vectors_byte_exact(codec: dict[str, Any]) -> None:
    ups = load("up.json")
    for vec, got in zip(ups, codec["out"]["up"], strict=False):
        exp = vec["expected"]
        assert got["scales"] == exp["scales_f32le"], vec["name"]
        assert np.frombuffer(bytes.fromhex(got["q"]), np.int8).tolist() == exp["q"], vec["name"]
        assert got["payload"] == exp["payload"], vec["name"]
        assert got["size"] == len(exp["payload"]) // 2 and got["sink_same"], vec["name"]
    assert len(codec["out"]["up"]) >= len(ups)


def test_firmware_up_decodes_with_flcore(codec: dict[str, Any]) -> None:
    n_vec = len(load("up.json"))
    extra = list(zip(codec["in"]["up"][n_vec:], codec["out"]["up"][n_vec:], strict=True))
    assert len(extra) == 6
    for inp, got in extra:
        delta = np.frombuffer(bytes.fromhex(inp["delta"]), "<f4").astype(np.float32)
        payload = bytes.fromhex(got["payload"])
        up = Up.decode(payload, params=delta.size, topic_dev=inp["dev"])
        fields = (up.dev, up.round, up.base, up.n, up.loss, up.seq, up.chunk, up.sub, up.meta)
        assert fields == tuple(inp[k] for k in ("dev", "round", "base", "n", "loss", "seq", "chunk", "sub", "meta"))
        scales, q = quantize(delta, inp["chunk"])
        np.testing.assert_array_equal(up.q, q)
        assert up.scales.astype("<f4").tobytes() == scales.astype("<f4").tobytes()
        # the meta keys here are in the firmware's fixed order, so flcore's bytes match too
        ref = Up(up.dev, up.round, up.base, up.n, up.loss, up.seq, up.chunk, scales, q, up.sub, up.meta)
        assert ref.encode() == payload


@pytest.mark.parametrize("index", range(3), ids=["last_will", "online_full", "skip"])
def test_status_vectors_byte_exact(codec: dict[str, Any], index: int) -> None:
    vec = load("status.json")[index]
    assert codec["out"]["status"][index] == vec["expected"]["payload"]
    assert Status.decode(bytes.fromhex(codec["out"]["status"][index])) == Status(**vec["input"])


def task_image(task: Task) -> dict[str, Any]:
    """What decode_task should return for a task flcore accepts, in the script's JSON image."""
    return conv(
        {
            "round": task.round,
            "base": task.base,
            "layers": list(task.layers),
            "P": task.spec.param_count,
            "w": task.w.astype("<f4").tobytes(),
            "lr": task.lr,
            "epochs": task.epochs,
            "batch": task.batch,
            "chunk": task.chunk,
            "deadline": task.deadline,
            "min_battery": task.min_battery,
            "select": task.select,
            "sub": task.sub,
            "done": task.done,
        }
    )


def test_task_vectors_decode_like_flcore(codec: dict[str, Any]) -> None:
    for payload, got in zip(codec["in"]["task"], codec["out"]["task"], strict=True):
        assert got == {"ok": task_image(Task.decode(bytes.fromhex(payload)))}


def test_ack_vectors_decode_like_flcore(codec: dict[str, Any]) -> None:
    for payload, got in zip(codec["in"]["ack"], codec["out"]["ack"], strict=True):
        ack = Ack.decode(bytes.fromhex(payload))
        assert got == {"ok": conv({"round": ack.round, "seq": ack.seq, "status": ack.status, "reason": ack.reason})}


def test_mutated_tasks_accepted_exactly_when_flcore_accepts(codec: dict[str, Any]) -> None:
    accepted = 0
    for payload, got in zip(codec["in"]["task_mut"], codec["out"]["task_mut"], strict=True):
        assert "msg" not in got, f"{payload}: {got}"  # only ValueError, never another exception
        try:
            task = Task.decode(bytes.fromhex(payload))
        except WireError:
            assert got == {"err": "ValueError"}, payload
            continue
        accepted += 1
        assert got == {"ok": task_image(task)}, payload
    assert accepted >= 20  # mutations of w's body keep the message valid


def test_decoder_agrees_with_msgpack_python_and_never_crashes(codec: dict[str, Any]) -> None:
    counts = {"ok": 0, "err": 0}
    for payload, got in zip(codec["generic"], codec["out"]["generic"], strict=True):
        assert "msg" not in got, f"{payload.hex()}: {got}"
        ref = reference(payload)
        if payload in codec["special"]:
            continue
        if "ok" in got:
            assert "ok" in ref and got["ok"] == conv(ref["ok"]), payload.hex()
        elif "ok" in ref:
            assert unsupported(ref["ok"]), payload.hex()  # only ext types / non-str keys are refused by design
        counts["ok" if "ok" in got else "err"] += 1
    assert counts["ok"] > 50 and counts["err"] > 500, counts


def test_every_truncation_is_a_value_error(codec: dict[str, Any]) -> None:
    assert len(codec["out"]["cut"]) > 1000
    bad = [
        cut for cut, got in zip(codec["in"]["cut"], codec["out"]["cut"], strict=True) if got != {"err": "ValueError"}
    ]
    assert bad == []


def test_hostile_headers_are_value_errors(codec: dict[str, Any]) -> None:
    results = codec["out"]["generic"][-len(codec["special"]) :]
    # deep nesting, huge map/array/bin lengths, bad utf-8, int key, ext type, trailing bytes
    assert results == [{"err": "ValueError"}] * len(codec["special"])
