"""The pure round rules: verdicts, when to close or extend, and the FedAvg step."""

from __future__ import annotations

import numpy as np
import pytest

from cloud.policy import Step, Verdict, all_reported, classify, global_update, live_since, next_step
from flcore.server_opt import OptParams


def verdict(**kw) -> Verdict:
    args = dict(duplicate=False, done=False, round_state="open", round_base=2, agg_base=2, last_closed=2, agg_round=3)
    return classify(**{**args, **kw})


def test_verdicts_in_the_protocol_order() -> None:
    assert verdict() is Verdict.ACCEPTED
    assert verdict(duplicate=True, round_state="closed", agg_base=9) is Verdict.DUPLICATE
    assert verdict(agg_base=1) is Verdict.BASE_MISMATCH
    # a closed round's aggregate (its gateway was cut off) is carried into the open round while rounds remain
    assert verdict(round_state="closed", agg_round=2, round_base=1, agg_base=1) is Verdict.CARRIED
    assert verdict(round_state="closed", agg_round=2, round_base=1, agg_base=2) is Verdict.BASE_MISMATCH
    assert verdict(round_state=None, round_base=None, agg_round=4) is Verdict.FUTURE
    # after the last round nothing more is accepted
    assert verdict(done=True, round_state="closed", agg_round=2) is Verdict.LATE
    assert verdict(done=True, round_state=None, agg_round=3) is Verdict.FUTURE


@pytest.mark.parametrize(
    ("now", "deadline", "reported", "live", "minimum", "step", "carried"),
    [
        (0, 10, {"a"}, {"a", "b"}, 1, Step.WAIT, 0),
        (0, 10, {"a", "b"}, {"a", "b"}, 1, Step.CLOSE, 0),
        (0, 10, {"a"}, {"a"}, 2, Step.WAIT, 0),  # min_gateways not reached
        (0, 10, {"a"}, set(), 1, Step.CLOSE, 0),  # the only reporter went quiet: nobody live is missing
        (10, 10, {"a"}, {"a", "b"}, 1, Step.CLOSE, 0),
        (10, 10, set(), {"a", "b"}, 1, Step.EXTEND, 0),
        (10, 10, set(), {"a", "b"}, 1, Step.CLOSE, 1),  # only a carried late aggregate: still something to apply
        (0, 10, set(), {"a"}, 1, Step.WAIT, 1),  # a carried aggregate is not the live gateway's report
        (0, None, set(), set(), 1, Step.WAIT, 0),
        (99, None, {"a"}, {"a", "b"}, 1, Step.WAIT, 0),  # round 1 before its clock starts
    ],
)
def test_next_step(now, deadline, reported, live, minimum, step, carried) -> None:
    got = next_step(now=now, deadline=deadline, reported=reported, live=live, min_gateways=minimum, carried=carried)
    assert got is step


def test_liveness_window_is_twice_the_timeout() -> None:
    assert live_since(100.0, 5.0) == 90.0
    assert all_reported(["a", "b"], ["b"], 2) and not all_reported(["a"], ["a", "b"], 1)


def test_global_update_is_base_plus_weighted_mean_delta() -> None:
    base = np.array([1.0, -1.0, 0.5], np.float32)
    d1, d2 = np.array([0.2, 0.0, -0.4]), np.array([-0.1, 0.3, 0.1])
    update = global_update(base, [(3 * d1, 3, 2, 0.6), (1 * d2, 1, 1, 0.2)])
    expected = base + (3 * d1 + d2) / 4
    np.testing.assert_allclose(update.weights, expected, rtol=1e-6)
    assert update.weights.dtype == np.float32 and (update.n, update.k) == (4, 3)
    assert update.train_loss == pytest.approx((3 * 0.6 + 0.2) / 4)
    half = global_update(base, [(3 * d1, 3, 2, 0.6)], OptParams(lr=0.5))
    np.testing.assert_allclose(half.weights, base + 0.5 * d1, rtol=1e-6)
