"""Property tests: no input makes a decoder raise anything but WireError (and valid input always decodes).

The hostile-input strategies (random bytes and msgpack, byte and field mutations of valid messages, depth bombs,
huge declared lengths) are those of benchmarks/fuzz_wire.py, which runs them at a much larger budget.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmarks.fuzz_wire import TARGETS, Target, inputs
from flcore.messages import MAX_LOSS, Task, Up
from flcore.model import ModelSpec
from flcore.quantize import quantize

# database=None: no .hypothesis folder left in the work tree; the examples are cheap, so many of them
FUZZ = settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
DECODERS = [t for t in TARGETS if t.name.endswith("decode") or t.name.endswith("(no P)")]


@pytest.mark.parametrize("target", DECODERS, ids=lambda t: t.name)
def test_hostile_input_only_raises_wire_error(target: Target) -> None:
    """Every decoder returns or raises WireError with a contract reason; what it accepts is sane (finite sums)."""

    @FUZZ
    @given(inputs(target))
    def probe(case: tuple[str, bytes]) -> None:
        target.check(*case)

    probe()


@FUZZ
@given(
    p=st.integers(1, 300),
    chunk=st.integers(1, 400),
    n=st.integers(1, 100_000),
    loss=st.floats(-MAX_LOSS, MAX_LOSS),
    scale=st.floats(1e-30, 1e20),  # |delta| stays far below 127 · MAX_SCALE
    seed=st.integers(0, 2**32 - 1),
)
def test_valid_up_always_round_trips(p: int, chunk: int, n: int, loss: float, scale: float, seed: int) -> None:
    delta = (np.random.default_rng(seed).normal(size=p) * scale).astype(np.float32)
    if not np.all(np.isfinite(delta)):
        return
    scales, q = quantize(delta, chunk)
    up = Up("dev_A-9", 1, 0, n, loss, 0, chunk, scales, q)
    back = Up.decode(up.encode(), params=p, topic_dev="dev_A-9")
    assert back.n == n and back.loss == loss
    np.testing.assert_array_equal(back.q, q)
    np.testing.assert_array_equal(back.scales, scales)


@FUZZ
@given(layers=st.lists(st.integers(1, 12), min_size=2, max_size=4), seed=st.integers(0, 1000))
def test_valid_task_always_round_trips(layers: list[int], seed: int) -> None:
    spec = ModelSpec(tuple(layers))
    task = Task(2, 1, spec.layers, spec.init(seed), 0.01, 1, 4, 8, 1e9, 0.3)
    back = Task.decode(task.encode())
    assert back.layers == spec.layers
    np.testing.assert_array_equal(back.w, task.w)
