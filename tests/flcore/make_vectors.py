"""Write the byte-exact wire vectors in tests/flcore/vectors/ from flcore's encoders.

Run from the repository root: ``.venv/bin/python tests/flcore/make_vectors.py``. The JSON files are the shared
reference for every other encoder of wire v1 (the MicroPython firmware, other gateways): given the ``input``,
an encoder must produce exactly ``expected``. ``tests/flcore/test_wire_vectors.py`` checks flcore still does.
Regenerate only for a deliberate wire change, and review the diff.

Floats are stored twice: as JSON numbers (exact float64 images of float32 values) for readability, and as
little-endian float32 hex (``*_f32le``), which is authoritative. Losses are float32-exact so an encoder on a
single-precision MicroPython build can reproduce the float64 that msgpack carries.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgpack
import numpy as np

from flcore.messages import Ack, Status, Task, Up
from flcore.quantize import quantize

OUT = Path(__file__).parent / "vectors"
BELOW_HALF = float(np.nextafter(np.float32(0.5), np.float32(0.0)))


def f32_fields(name: str, values: np.ndarray) -> dict[str, Any]:
    values = np.asarray(values, dtype=np.float32)
    return {name: [float(v) for v in values], f"{name}_f32le": values.astype("<f4").tobytes().hex()}


def up_vector(name: str, note: str, delta: np.ndarray, chunk: int, **fields: Any) -> dict[str, Any]:
    delta = np.asarray(delta, dtype=np.float32)
    scales, q = quantize(delta, chunk)
    args = dict(dev="d0001", round=1, base=0, n=32, loss=0.5, seq=1, sub=0, meta=None)
    args.update(fields)
    up = Up(
        args["dev"],
        args["round"],
        args["base"],
        args["n"],
        args["loss"],
        args["seq"],
        chunk,
        scales,
        q,
        args["sub"],
        args["meta"],
    )
    return {
        "name": name,
        "note": note,
        "input": {**args, "chunk": chunk, "P": int(delta.size), **f32_fields("delta", delta)},
        "expected": {**f32_fields("scales", scales), "q": q.tolist(), "payload": up.encode().hex()},
    }


def up_vectors() -> list[dict[str, Any]]:
    rng = np.random.default_rng(20240601)
    edges = np.array([127.0, 0.5, 1.5, -2.5, 0.0, 0.0, -0.0, 0.0, -63.5, 127.0, BELOW_HALF, -BELOW_HALF], np.float32)
    return [
        up_vector(
            "rounding_edges",
            "chunk 4, scale 1.0: ties round away from zero, 0.49999997 rounds to 0, "
            "an all-zero chunk has scale 0 and q 0",
            edges,
            4,
            round=2,
            base=1,
            n=7,
            loss=1.25,
            seq=3,
        ),
        up_vector("single_param", "P=1, chunk 1", np.array([-0.003], np.float32), 1, loss=2.0),
        up_vector(
            "chunk_one",
            "chunk 1: every value is its own chunk (q is ±127 or 0)",
            rng.normal(0, 0.1, 17).astype(np.float32) * (rng.random(17) > 0.2),
            1,
            dev="dev_A-9",
            round=300,
            base=299,
            n=100_000,
            loss=0.0,
            seq=70_000,
        ),
        up_vector(
            "chunk_exceeds_p",
            "chunk 65536 > P: one partial chunk",
            rng.normal(0, 1e-3, 5).astype(np.float32),
            65536,
            n=1,
            loss=3.5,
            seq=0,
        ),
        up_vector(
            "partial_last_chunk",
            "P=100, chunk 7: 15 chunks, the last holds 2 values",
            rng.normal(0, 0.05, 100).astype(np.float32),
            7,
            round=4,
            base=3,
            n=250,
            loss=0.6875,
            seq=12,
            sub=2,
        ),
        up_vector(
            "sensors_model_with_meta",
            "the sensors MLP [10,16,5] (P=261), chunk 64, sub-round 1, meta",
            rng.normal(0, 0.02, 261).astype(np.float32),
            64,
            dev="d0042",
            round=17,
            base=16,
            n=625,
            loss=0.40625,
            seq=40,
            sub=1,
            meta={"battery": 0.75, "train_ms": 1234, "ram_class": "class2", "fw": "0.1.0"},
        ),
        up_vector(
            "digits_model",
            "the digits MLP [64,32,10] (P=2410), chunk 256, wide value range",
            (rng.standard_cauchy(2410) * 1e-3).astype(np.float32),
            256,
            dev="d1234",
            round=9,
            base=8,
            n=36,
            loss=0.15625,
            seq=255,
        ),
    ]


def task_vectors() -> list[dict[str, Any]]:
    w = np.array([0.5, -1.0, 0.25, 2.0, -0.125, 0.0, 1.5, -3.0], np.float32)  # layers [3, 2]: P = 8
    cases = [
        ("basic", dict(round=1, base=0, lr=0.05, epochs=1, batch=16, chunk=64, deadline=1700000000.0, min_battery=0.2)),
        (
            "select_list_sub",
            dict(
                round=3,
                base=2,
                lr=0.1,
                epochs=2,
                batch=8,
                chunk=4,
                deadline=1700000123.5,
                min_battery=0.0,
                select=["d0001", "d0003"],
                sub=1,
            ),
        ),
        (
            "select_fraction_done",
            dict(
                round=20,
                base=20,
                lr=0.01,
                epochs=5,
                batch=32,
                chunk=256,
                deadline=1700009999.25,
                min_battery=0.5,
                select=0.5,
                done=True,
            ),
        ),
    ]
    out = []
    for name, args in cases:
        task = Task(layers=(3, 2), w=w, **args)  # type: ignore[arg-type]
        out.append(
            {
                "name": name,
                "input": {**args, "layers": [3, 2], **f32_fields("w", w)},
                "expected": {"payload": task.encode().hex()},
            }
        )
    return out


def ack_vectors() -> list[dict[str, Any]]:
    cases = [
        ("accepted", Ack(3, 9, "accepted")),
        ("duplicate", Ack(3, 9, "duplicate")),
        ("late", Ack(2, 70_000, "late")),
        ("rejected_length", Ack(5, 1, "rejected", "length")),
        ("rejected_nil_ids", Ack(None, None, "rejected", "decode")),
    ]
    return [
        {
            "name": name,
            "input": {"round": a.round, "seq": a.seq, "status": a.status, "reason": a.reason},
            "expected": {"payload": a.encode().hex()},
        }
        for name, a in cases
    ]


def status_vectors() -> list[dict[str, Any]]:
    cases = [
        ("last_will", dict(dev="d0001", state="offline")),
        (
            "online_full",
            dict(dev="d0001", state="online", battery=0.875, rssi=-67, ram_class="class2", fw="0.1.0", gw="gw0"),
        ),
        ("skip", dict(dev="d0002", state="sleeping", battery=0.125, gw="gw1", round=4, sub=0, skip="battery")),
    ]
    return [
        {"name": name, "input": args, "expected": {"payload": Status(**args).encode().hex()}}  # type: ignore
        for name, args in cases
    ]


def invalid_up_vectors() -> list[dict[str, Any]]:
    """Payloads a receiver must reject, decoded with ``params`` P and ``topic_dev``; nil ids when unreadable."""
    scales = np.array([0.01, 0.02], "<f4").tobytes()
    good = {
        "v": 1,
        "t": "up",
        "dev": "d0001",
        "round": 3,
        "base": 2,
        "n": 40,
        "loss": 0.5,
        "seq": 9,
        "chunk": 4,
        "scales": scales,
        "q": bytes(6),
    }
    nan, inf = float("nan"), float("inf")
    cases: list[tuple[str, Any, str]] = [
        ("not_msgpack", b"\xc1\x00", "decode"),
        ("not_a_map", [1, 2, 3], "decode"),
        ("version_2", {**good, "v": 2}, "version"),
        ("wrong_type_tag", {**good, "t": "task"}, "schema"),
        ("missing_n", {k: v for k, v in good.items() if k != "n"}, "schema"),
        ("missing_round", {k: v for k, v in good.items() if k != "round"}, "schema"),
        ("n_is_bool", {**good, "n": True}, "schema"),
        ("seq_is_string", {**good, "seq": "9"}, "schema"),
        ("meta_not_map", {**good, "meta": [1]}, "schema"),
        ("meta_battery_string", {**good, "meta": {"battery": "full"}}, "schema"),
        ("dev_mismatch", {**good, "dev": "d0002"}, "dev_mismatch"),
        ("n_zero", {**good, "n": 0}, "n_range"),
        ("n_too_big", {**good, "n": 100_001}, "n_range"),
        ("q_short", {**good, "q": bytes(5)}, "length"),
        ("scales_long", {**good, "scales": scales + scales}, "length"),
        ("scale_negative", {**good, "scales": np.array([0.01, -0.02], "<f4").tobytes()}, "scale"),
        ("scale_nan", {**good, "scales": np.array([nan, 0.02], "<f4").tobytes()}, "scale"),
        ("scale_inf", {**good, "scales": np.array([0.01, inf], "<f4").tobytes()}, "scale"),
        ("loss_nan", {**good, "loss": nan}, "loss"),
        ("loss_inf", {**good, "loss": -inf}, "loss"),
    ]
    out = []
    for name, obj, reason in cases:
        payload = obj if isinstance(obj, bytes) else msgpack.packb(obj, use_bin_type=True)
        readable = isinstance(obj, dict)
        rnd = obj.get("round") if readable and isinstance(obj.get("round"), int) else None
        seq = obj.get("seq") if readable and type(obj.get("seq")) is int else None
        out.append(
            {
                "name": name,
                "params": 6,
                "topic_dev": "d0001",
                "payload": payload.hex(),
                "expected": {"reason": reason, "round": rnd, "seq": seq},
            }
        )
    return out


def main() -> None:
    OUT.mkdir(exist_ok=True)
    files = {
        "up.json": ("up messages: int8 quantization (deterministic mode) and msgpack encoding", up_vectors()),
        "task.json": ("task messages (gateway → devices)", task_vectors()),
        "ack.json": ("ack messages (gateway → device)", ack_vectors()),
        "status.json": ("status messages (device → all, retained; also the Last Will)", status_vectors()),
        "up_invalid.json": (
            "up payloads a receiver must reject: reason code and the round/seq it can still read",
            invalid_up_vectors(),
        ),
    }
    for filename, (about, vectors) in files.items():
        head = {"about": about, "wire_version": 1, "generator": "tests/flcore/make_vectors.py"}
        # one vector per line: diffs stay readable without a line per array element
        body = ",\n".join(f"  {json.dumps(v)}" for v in vectors)
        (OUT / filename).write_text(json.dumps(head, indent=1)[:-2] + f',\n "vectors": [\n{body}\n ]\n}}\n')
        print(f"wrote {OUT / filename} ({len(vectors)} vectors)")


if __name__ == "__main__":
    main()
