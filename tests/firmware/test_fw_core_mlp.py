"""Firmware MLP under real MicroPython: flcore's forward pass and flat order, exact SGD step, training that learns."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from micropython_runner import SCRIPT_HELPERS, MicroPythonRunner

from flcore.model import ModelSpec

SCRIPT = (
    SCRIPT_HELPERS
    + r"""
import json
from array import array
from binascii import hexlify, unhexlify
import mlp

def f32(text):
    return array("f", unhexlify(text))

inp = json.load(open("in.json"))
out = {"forward": [], "step": None, "learn": None}
for case in inp["forward"]:
    m = mlp.MLP(case["layers"], 4)
    m.load(unhexlify(case["w"]))
    xs = f32(case["x"])
    n_in = case["layers"][0]
    logits = array("f")
    predictions = []
    for s in range(len(xs) // n_in):
        logits.extend(m.logits(xs, s * n_in))
        predictions.append(m.predict(xs, s * n_in))
    out["forward"].append({"logits": h(logits), "predict": predictions, "P": m.P})

c = inp["step"]
m = mlp.MLP(c["layers"], len(c["y"]))
w0 = unhexlify(c["w"])
m.load(w0)
loss = m.train(f32(c["x"]), bytearray(c["y"]), c["lr"], 1, len(c["y"]), 0)
out["step"] = {"loss": loss, "w": h(m.w), "delta": h(m.delta(w0, array("f", bytearray(4 * m.P))))}

class Rows:
    # a sample store: one row at a time into the model's input buffer
    def __init__(self, flat, n_in):
        self.flat = flat
        self.n_in = n_in

    def __len__(self):
        return len(self.flat) // self.n_in

    def row(self, i, buf):
        for k in range(self.n_in):
            buf[k] = self.flat[i * self.n_in + k]

c = inp["learn"]
runs = []
for source in ("flat", "flat", "rows"):
    m = mlp.MLP(c["layers"], c["batch"])
    m.load(unhexlify(c["w"]))
    xs = f32(c["x"]) if source == "flat" else Rows(f32(c["x"]), c["layers"][0])
    losses = [m.train(xs, bytearray(c["y"]), c["lr"], 1, c["batch"], 1 + e) for e in range(c["epochs"])]
    runs.append({"losses": losses, "w": h(m.w)})
out["learn"] = runs

m = mlp.MLP([3, 2])
out["errors"] = [
    error(lambda: m.load(bytes(4 * m.P - 1))),
    error(lambda: m.train(array("f", [0.0] * 5), bytearray([0, 1]), 0.1, 1, 1)),
    error(lambda: m.train(array("f", [0.0] * 6), bytearray([0, 2]), 0.1, 1, 1)),
    error(lambda: m.train(array("f", [0.0] * 6), bytearray([0, 1]), float("nan"), 1, 1)),
    error(lambda: m.train(array("f", [0.0] * 6), bytearray([0, 1]), 0.1, 1, 0)),
    error(lambda: m.delta(bytes(4), array("f", [0.0] * m.P))),
    error(lambda: mlp.MLP([3, 0])),
    error(lambda: mlp.MLP([3])),
    error(lambda: mlp.MLP([3, True])),
    error(lambda: mlp.MLP([2] * 10)),
    error(lambda: mlp.MLP([4097, 2])),
]
out["footprint"] = [mlp.footprint(layers, b) for layers, b in inp["footprint"]]
print(json.dumps(out))
"""
)

FOOTPRINT_CASES = [([64, 32, 10], 8), ([10, 16, 5], 1), ([10, 16, 5], 32), ([3, 2], 16), ([784, 128, 64, 10], 4)]


def hexf(values: np.ndarray) -> str:
    return np.asarray(values, dtype="<f4").tobytes().hex()


def unhexf(text: str) -> np.ndarray:
    return np.frombuffer(bytes.fromhex(text), "<f4").astype(np.float32)


def weights(layers: list[int], seed: int) -> np.ndarray:
    """flcore's He init plus random biases, so the bias positions in the flat order matter."""
    spec = ModelSpec(tuple(layers))
    flat = spec.init(seed)
    rng = np.random.default_rng(seed + 1)
    for _w, b in spec.unflatten(flat):
        b[...] = rng.normal(0, 0.3, b.shape)
    return flat


def reference_step(layers: list[int], w: np.ndarray, x: np.ndarray, y: np.ndarray, lr: float) -> tuple[Any, float]:
    """One full-batch SGD step on mean softmax cross-entropy, in float64 numpy over flcore's flat order."""
    spec = ModelSpec(tuple(layers))
    params = [(a.astype(np.float64), b.astype(np.float64)) for a, b in spec.unflatten(w.copy())]
    acts = [x.astype(np.float64)]
    for i, (a, b) in enumerate(params):
        z = acts[-1] @ a.T + b
        acts.append(np.maximum(z, 0.0) if i < len(params) - 1 else z)
    z = acts[-1] - acts[-1].max(axis=1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    loss = float(-np.log(p[np.arange(len(y)), y]).mean())
    d = p.copy()
    d[np.arange(len(y)), y] -= 1.0
    d /= len(y)
    grads = []
    for i in range(len(params) - 1, -1, -1):
        grads.append((d.T @ acts[i], d.sum(axis=0)))
        if i:
            d = (d @ params[i][0]) * (acts[i] > 0)
    grads.reverse()
    flat_grad = np.concatenate([np.concatenate([gw.ravel(), gb]) for gw, gb in grads])
    return w.astype(np.float64) - lr * flat_grad, loss


def blobs(n_per: int, n_in: int, n_classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 3.0, (n_classes, n_in))
    x = np.concatenate([c + rng.normal(0, 0.6, (n_per, n_in)) for c in centers]).astype(np.float32)
    y = np.repeat(np.arange(n_classes), n_per)
    order = rng.permutation(len(y))
    return x[order], y[order]


@pytest.fixture(scope="module")
def run(mpy: MicroPythonRunner, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    rng = np.random.default_rng(5)
    forward = []
    for layers, seed in [([10, 16, 5], 1), ([64, 32, 10], 2), ([6, 8, 8, 3], 3)]:
        x = rng.normal(0, 1, (12, layers[0])).astype(np.float32)
        forward.append({"layers": layers, "w": hexf(weights(layers, seed)), "x": hexf(x), "_x": x})
    sx, sy = blobs(4, 6, 3, 9)
    step = {"layers": [6, 8, 8, 3], "w": hexf(weights([6, 8, 8, 3], 4)), "x": hexf(sx), "y": sy.tolist(), "lr": 0.1}
    lx, ly = blobs(30, 4, 3, 10)
    learn = {"layers": [4, 8, 3], "w": hexf(ModelSpec((4, 8, 3)).init(5)), "x": hexf(lx), "y": ly.tolist()}
    learn |= {"lr": 0.05, "epochs": 12, "batch": 8}
    data = {"forward": forward, "step": step, "learn": learn, "footprint": FOOTPRINT_CASES}
    work = tmp_path_factory.mktemp("mlp")
    (work / "in.json").write_text(json.dumps(data, default=lambda _: None))
    out = mpy.run_json(SCRIPT, heap="2M", cwd=work, timeout=60)
    return {"in": data, "out": out, "step_xy": (sx, sy), "learn_xy": (lx, ly)}


def test_forward_equals_flcore_logits(run: dict[str, Any]) -> None:
    for case, got in zip(run["in"]["forward"], run["out"]["forward"], strict=True):
        spec = ModelSpec(tuple(case["layers"]))
        assert got["P"] == spec.param_count
        expected = spec.logits(unhexf(case["w"]), case["_x"])
        logits = unhexf(got["logits"]).reshape(expected.shape)
        np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)
        assert got["predict"] == expected.argmax(axis=1).tolist()


def test_one_sgd_step_matches_the_gradient_in_flat_order(run: dict[str, Any]) -> None:
    step, got = run["in"]["step"], run["out"]["step"]
    sx, sy = run["step_xy"]
    w0 = unhexf(step["w"])
    expected_w, expected_loss = reference_step(step["layers"], w0, sx, sy, step["lr"])
    w1 = unhexf(got["w"])
    assert np.abs(w1 - w0).max() > 1e-3  # the step moved the weights
    np.testing.assert_allclose(w1, expected_w, rtol=1e-5, atol=1e-6)
    assert got["loss"] == pytest.approx(expected_loss, rel=1e-5)
    # delta is w - base in the same flat order, each difference rounded to float32 once
    assert got["delta"] == hexf(w1 - w0)


def test_training_lowers_the_loss_on_a_separable_set(run: dict[str, Any]) -> None:
    learn, (first, second, rows) = run["in"]["learn"], run["out"]["learn"]
    spec = ModelSpec(tuple(learn["layers"]))
    lx, ly = run["learn_xy"]
    acc0, loss0 = spec.evaluate(unhexf(learn["w"]), lx, ly)
    acc1, loss1 = spec.evaluate(unhexf(first["w"]), lx, ly)
    assert acc0 < 0.5 and loss1 < 0.1 * loss0 and acc1 >= 0.95, (loss0, loss1, acc0, acc1)
    assert first["losses"][-1] < 0.3 * first["losses"][0]
    assert first == second  # the same seed gives the same weights
    assert rows == first  # a sample store handing out one row at a time trains identically


def test_bad_input_raises_value_error(run: dict[str, Any]) -> None:
    assert run["out"]["errors"] == ["ValueError"] * 11


def test_footprint_is_flcore_admission_rule(run: dict[str, Any]) -> None:
    expected = [ModelSpec(tuple(layers)).footprint_bytes(batch) for layers, batch in FOOTPRINT_CASES]
    assert run["out"]["footprint"] == expected
