"""Firmware int8 quantization under real MicroPython equals flcore's deterministic mode byte for byte."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from micropython_runner import SCRIPT_HELPERS, MicroPythonRunner

from flcore.quantize import quantize

VECTORS = Path(__file__).resolve().parents[1] / "flcore" / "vectors"

SCRIPT = (
    SCRIPT_HELPERS
    + r"""
import json
from array import array
from binascii import hexlify, unhexlify
import quant

inp = json.load(open("in.json"))
out = {"cases": [], "errors": []}
for case in inp["cases"]:
    x = array("f", unhexlify(case["x"]))
    chunk = case["chunk"]
    n = quant.chunk_count(len(x), chunk)
    scales = array("f", bytearray(4 * n))
    q = bytearray(len(x))
    quant.quantize(x, chunk, scales, q)
    out["cases"].append({"scales": h(scales), "q": h(q)})
three = array("f", [1.0, 2.0, 3.0])
s3 = array("f", [0.0, 0.0, 0.0])
q3 = bytearray(3)
out["errors"] = [
    error(lambda: quant.quantize(array("f", [1.0, float("nan")]), 2, s3, q3)),
    error(lambda: quant.quantize(array("f", [float("-inf"), 1.0]), 2, s3, q3)),
    error(lambda: quant.quantize(three, 0, s3, q3)),
    error(lambda: quant.quantize(three, 65537, s3, q3)),
    error(lambda: quant.quantize(three, True, s3, q3)),
    error(lambda: quant.quantize(three, 1, array("f", [0.0]), q3)),
    error(lambda: quant.quantize(three, 1, s3, bytearray(2))),
    error(lambda: quant.quantize(three, 1, s3, q3)),
]
print(json.dumps(out))
"""
)


def f32(values: Any) -> np.ndarray:
    return np.asarray(values, dtype=np.float32)


def tie_cases() -> list[tuple[np.ndarray, int]]:
    """Values whose ratio x/scale lands on, or one float32 step beside, every k + 0.5."""
    halves = f32(np.arange(-127, 127) + 0.5)
    below = np.nextafter(halves, f32(0.0))
    above = np.nextafter(halves, f32(np.inf) * np.sign(halves))
    unit = np.concatenate([[f32(127.0)], halves, below, above])  # scale exactly 1.0
    scale = f32(1.0) / f32(127.0)
    near = []
    for k in range(-127, 127):
        center = f32((k + 0.5) * scale)
        near += [np.nextafter(center, f32(-1)), center, np.nextafter(center, f32(1))]
    odd = np.concatenate([[f32(1.0)], f32(near)])  # scale f32(1/127): ratios straddle the ties
    edges = f32([0.49999997, -0.49999997, 0.5, -0.5, 1.5, -2.5, 127.0])
    return [(unit, unit.size), (odd, 64), (odd, odd.size), (edges, 7), (edges, 3)]


def random_cases() -> list[tuple[np.ndarray, int]]:
    rng = np.random.default_rng(2024)
    cases = []
    for size, chunk in [(1, 1), (17, 1), (100, 7), (261, 64), (2410, 256), (999, 1000), (300, 65536), (64, 64)]:
        cases.append((f32(rng.normal(0, 0.05, size)), chunk))
        cases.append((f32(rng.standard_cauchy(size) * 1e-3), chunk))
    cases.append((f32(rng.normal(0, 1e-41, 50)), 8))  # subnormal values and scales
    cases.append((f32(rng.uniform(-3e38, 3e38, 40)), 5))  # near the float32 range
    sparse = f32(rng.normal(0, 1, 120))
    sparse[10:40] = 0.0
    sparse[40:50] = -0.0
    cases.append((sparse, 10))  # all-zero chunks (scale 0)
    return cases


@pytest.fixture(scope="module")
def quant(mpy: MicroPythonRunner, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    vectors = json.loads((VECTORS / "up.json").read_text())["vectors"]
    cases = [
        (f32(np.frombuffer(bytes.fromhex(v["input"]["delta_f32le"]), "<f4")), v["input"]["chunk"]) for v in vectors
    ]
    cases += tie_cases() + random_cases()
    work = tmp_path_factory.mktemp("quant")
    payload = {"cases": [{"x": x.astype("<f4").tobytes().hex(), "chunk": chunk} for x, chunk in cases]}
    (work / "in.json").write_text(json.dumps(payload))
    return {"cases": cases, "vectors": vectors, "out": mpy.run_json(SCRIPT, heap="4M", cwd=work, timeout=60)}


def test_up_vectors_scales_and_q(quant: dict[str, Any]) -> None:
    for vec, got in zip(quant["vectors"], quant["out"]["cases"], strict=False):
        assert got["scales"] == vec["expected"]["scales_f32le"], vec["name"]
        assert np.frombuffer(bytes.fromhex(got["q"]), np.int8).tolist() == vec["expected"]["q"], vec["name"]


def test_ties_and_random_inputs_match_flcore_byte_for_byte(quant: dict[str, Any]) -> None:
    assert len(quant["out"]["cases"]) == len(quant["cases"]) > 25
    for i, ((x, chunk), got) in enumerate(zip(quant["cases"], quant["out"]["cases"], strict=True)):
        scales, q = quantize(x, chunk)
        assert got["scales"] == scales.astype("<f4").tobytes().hex(), f"case {i}"
        assert got["q"] == q.tobytes().hex(), f"case {i}"


def test_ties_round_away_from_zero_and_just_below_half_rounds_down(quant: dict[str, Any]) -> None:
    edges_at = len(quant["vectors"]) + 3
    got = np.frombuffer(bytes.fromhex(quant["out"]["cases"][edges_at]["q"]), np.int8).tolist()
    assert got == [0, 0, 1, -1, 2, -3, 127]


def test_bad_input_raises_value_error(quant: dict[str, Any]) -> None:
    # nan, -inf, chunk 0, chunk 65537, chunk True, too few scales, q too short; then a valid call
    assert quant["out"]["errors"] == ["ValueError"] * 7 + ["none"]
