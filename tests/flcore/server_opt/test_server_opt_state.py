"""The server optimizer's state: a pure msgpack round trip, and refusal of a state for another optimizer or size."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest

from flcore.server_opt import OptParams, OptState, fresh, step

P = OptParams("fedadam", lr=0.1)


def run(p: OptParams, deltas: list[np.ndarray], through_bytes: bool) -> tuple[np.ndarray, OptState]:
    x, state = np.ones(4, dtype=np.float32), None
    for d in deltas:
        if through_bytes and state is not None:
            state = OptState.from_bytes(state.to_bytes())
        x, state = step(p, x, d, state)
    assert state is not None
    return x, state


def test_round_trip_keeps_name_step_and_moments() -> None:
    _, state = run(P, [np.array([0.1, -0.2, 0.3, 0.0], dtype=np.float32)], through_bytes=False)
    back = OptState.from_bytes(state.to_bytes())
    assert (back.name, back.size, back.step, sorted(back.slots)) == ("fedadam", 4, 1, ["m", "v"])
    for slot in ("m", "v"):
        assert back.slots[slot].tobytes() == state.slots[slot].tobytes()
    assert back.to_bytes() == state.to_bytes()


@pytest.mark.parametrize("name", ["fedavg", "fedavgm", "fedadam", "fedyogi"])
def test_a_run_through_bytes_equals_one_in_memory(name: str) -> None:
    rng = np.random.default_rng(1)
    deltas = [rng.normal(scale=0.1, size=4).astype(np.float32) for _ in range(4)]
    p = OptParams(name)
    x_mem, s_mem = run(p, deltas, through_bytes=False)
    x_bytes, s_bytes = run(p, deltas, through_bytes=True)
    assert x_mem.tobytes() == x_bytes.tobytes()
    assert s_mem.to_bytes() == s_bytes.to_bytes()


def test_fresh_adaptive_state_starts_at_zero_momentum_and_tau_squared() -> None:
    state = fresh(OptParams("fedyogi", eps=0.01), 3)
    assert state.step == 0
    assert state.slots["m"].tolist() == [0.0, 0.0, 0.0]
    np.testing.assert_allclose(state.slots["v"], [1e-4] * 3, rtol=1e-6)


def test_state_of_another_optimizer_or_size_is_refused() -> None:
    _, state = run(OptParams("fedavgm"), [np.full(4, 0.1, dtype=np.float32)], through_bytes=False)
    with pytest.raises(ValueError, match="belongs to 'fedavgm', not 'fedadam'"):
        step(P, np.zeros(4, dtype=np.float32), np.zeros(4, dtype=np.float32), state)
    with pytest.raises(ValueError, match="holds 4 parameters, the model has 5"):
        step(OptParams("fedavgm"), np.zeros(5, dtype=np.float32), np.zeros(5, dtype=np.float32), state)


def test_state_with_the_wrong_slots_is_refused() -> None:
    odd = OptState("fedadam", 2, 1, {"m": np.zeros(2)})
    with pytest.raises(ValueError, match="slots"):
        step(P, np.zeros(2, dtype=np.float32), np.zeros(2, dtype=np.float32), odd)


@pytest.mark.parametrize(
    "data",
    [
        b"\xc1",
        msgpack.packb([1, 2]),
        msgpack.packb({"v": 2, "name": "fedavg", "step": 0, "size": 0, "slots": {}}),
        msgpack.packb({"v": 1, "name": "fedavg", "step": 0, "size": 2, "slots": {"m": b"\x00" * 4}}),
        msgpack.packb({"v": 1, "name": "", "step": 0, "size": 0, "slots": {}}),
        msgpack.packb({"v": 1, "name": "fedavg", "step": -1, "size": 0, "slots": {}}),
        msgpack.packb({"v": 1, "name": "fedavg", "size": True, "slots": {}}),
    ],
)
def test_malformed_bytes_are_a_value_error(data: bytes) -> None:
    with pytest.raises(ValueError, match="optimizer state"):
        OptState.from_bytes(data)
