"""Two hand-computed steps of each server optimizer, Yogi's sign rule, and FedAvg's bit-for-bit default."""

from __future__ import annotations

import math

import numpy as np
import pytest

from flcore import fedavg
from flcore.fedavg import WeightedSum
from flcore.server_opt import DEFAULT_LR, OptParams, fedyogi, step

X0 = np.zeros(2, dtype=np.float32)


def two_steps(p: OptParams, d1: list[float], d2: list[float]) -> tuple[np.ndarray, np.ndarray]:
    x1, s1 = step(p, X0, np.array(d1, dtype=np.float32))
    x2, s2 = step(p, x1, np.array(d2, dtype=np.float32), s1)
    assert (s1.step, s2.step) == (1, 2)
    return x1, x2


def test_fedavg_steps_eta_times_delta() -> None:
    x1, x2 = two_steps(OptParams("fedavg", lr=0.5), [2, 0], [-2, 4])
    assert x1.tolist() == [1.0, 0.0]
    assert x2.tolist() == [0.0, 2.0]


def test_fedavgm_accumulates_momentum() -> None:
    # m1 = Δ1 = [2, 0]; m2 = 0.5·m1 + Δ2 = [-1, 4]; x ← x + 0.5·m.
    x1, x2 = two_steps(OptParams("fedavgm", lr=0.5, momentum=0.5), [2, 0], [-2, 4])
    assert x1.tolist() == [1.0, 0.0]
    assert x2.tolist() == [0.5, 2.0]


def test_fedadam_two_steps() -> None:
    # τ = 1, so v starts at 1. Step 1, Δ = [7, 1]: m = [3.5, 0.5], v = 0.5 + 0.5·Δ² = [25, 1],
    # x = m / (√v + 1) = [3.5/6, 0.5/2]. Step 2, Δ = [-5, 7]: m = [-0.75, 3.75], v = [25, 25], x += m / 6.
    p = OptParams("fedadam", lr=1.0, momentum=0.5, beta2=0.5, eps=1.0)
    x1, x2 = two_steps(p, [7, 1], [-5, 7])
    np.testing.assert_allclose(x1, [3.5 / 6, 0.25], rtol=1e-6)
    np.testing.assert_allclose(x2, [3.5 / 6 - 0.125, 0.25 + 0.625], rtol=1e-6)


def test_fedyogi_two_steps() -> None:
    # v starts at τ² = 1. Step 1, Δ = [4, 0]: m = [2, 0]; v = 1 − 0.5·Δ²·sign(1 − Δ²) = [1 + 8, 1 − 0] = [9, 1];
    # x = m / (√v + 1) = [0.5, 0]. Step 2, Δ = [2, 4]: m = [2, 2]; v = [9 − 0.5·4 (v > Δ²), 1 + 0.5·16] = [7, 9];
    # x += [2 / (√7 + 1), 2 / 4].
    p = OptParams("fedyogi", lr=1.0, momentum=0.5, beta2=0.5, eps=1.0)
    x1, x2 = two_steps(p, [4, 0], [2, 4])
    np.testing.assert_allclose(x1, [0.5, 0.0], rtol=1e-6)
    np.testing.assert_allclose(x2, [0.5 + 2 / (math.sqrt(7) + 1), 0.5], rtol=1e-6)


def test_yogi_sign_rule_moves_v_additively_towards_delta_squared() -> None:
    p = OptParams("fedyogi", beta2=0.5)
    v = np.array([9.0, 1.0, 4.0])
    d2 = np.array([4.0, 16.0, 4.0])
    # v > Δ²: shrinks by (1−β2)·Δ²; v < Δ²: grows by (1−β2)·Δ²; v = Δ²: stays (Adam would move it to 6.5, 8.5, 4).
    assert fedyogi.second_moment(v, d2, p).tolist() == [7.0, 9.0, 4.0]


def test_fedavg_at_eta_one_equals_flcore_fedavg_apply_bit_for_bit() -> None:
    rng = np.random.default_rng(3)
    base = rng.normal(size=1000).astype(np.float32)
    acc = WeightedSum(base.size)
    for n in (3, 11, 7):
        acc.add(rng.normal(scale=0.01, size=base.size).astype(np.float32), n, 0.5)
    x, state = step(OptParams(), base, acc.mean_delta())
    expected = fedavg.apply(base, acc)
    assert x.dtype == np.float32 and x.tobytes() == expected.tobytes()
    assert (state.name, state.step, state.slots) == ("fedavg", 1, {})


def test_default_server_lr_per_optimizer() -> None:
    assert {name: OptParams(name).eta for name in DEFAULT_LR} == DEFAULT_LR
    assert DEFAULT_LR["fedavg"] == 1.0
    assert OptParams("fedadam", lr=0.2).eta == 0.2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "sgd"}, "unknown server optimizer 'sgd'"),
        ({"lr": 0.0}, "server_lr must be"),
        ({"lr": -1.0}, "server_lr must be"),
        ({"lr": math.inf}, "server_lr must be"),
        ({"momentum": 1.0}, "server_momentum must be in [0, 1)"),
        ({"momentum": -0.1}, "server_momentum must be in [0, 1)"),
        ({"momentum": True}, "server_momentum must be"),
        ({"beta2": 1.0}, "server_beta2 must be in [0, 1)"),
        ({"eps": 0.0}, "server_eps must be a finite number > 0"),
        ({"eps": math.nan}, "server_eps must be"),
    ],
)
def test_bad_hyper_parameters_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError) as exc:
        OptParams(**kwargs)  # type: ignore[arg-type]
    assert message in str(exc.value)


def test_step_checks_shapes() -> None:
    with pytest.raises(ValueError, match="one size"):
        step(OptParams(), X0, np.zeros(3, dtype=np.float32))
