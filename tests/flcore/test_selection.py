"""flcore.selection: a gateway names ceil(F × live) of its devices, stably, at least one."""

from __future__ import annotations

import pytest

from flcore.selection import MAX_NAMED, choose, task_select

DEVICES = [f"d{i:02d}" for i in range(20)]


@pytest.mark.parametrize(("fraction", "count"), [(0.2, 4), (0.21, 5), (0.5, 10), (1.0, 20), (0.01, 1)])
def test_choose_names_the_ceiling_of_the_share_and_at_least_one(fraction: float, count: int) -> None:
    chosen = choose(DEVICES, fraction, "gw0", 3, 0)
    assert len(chosen) == count and set(chosen) <= set(DEVICES) and chosen == sorted(set(chosen))


def test_the_draw_is_stable_and_differs_by_round_sub_and_gateway() -> None:
    first = choose(DEVICES, 0.2, "gw0", 1, 0)
    assert choose(reversed(DEVICES), 0.2, "gw0", 1, 0) == first  # order of the live set does not matter
    others = [choose(DEVICES, 0.2, "gw0", 2, 0), choose(DEVICES, 0.2, "gw0", 1, 1), choose(DEVICES, 0.2, "gw1", 1, 0)]
    assert all(o != first for o in others)
    # over many rounds every device gets its turn, about equally often
    picks = [dev for r in range(1, 201) for dev in choose(DEVICES, 0.2, "gw0", r, 0)]
    assert set(picks) == set(DEVICES) and max(picks.count(d) for d in DEVICES) < 70  # mean 40


def test_task_select_falls_back_to_the_fraction_until_the_devices_are_known() -> None:
    assert task_select(None, DEVICES, True, "gw0", 1, 0) is None
    assert task_select(1.0, DEVICES, True, "gw0", 1, 0) is None
    assert task_select(0.2, DEVICES, False, "gw0", 1, 0) == 0.2
    assert task_select(0.2, [], True, "gw0", 1, 0) == 0.2
    assert task_select(0.2, DEVICES, True, "gw0", 1, 0) == choose(DEVICES, 0.2, "gw0", 1, 0)
    many = [f"d{i}" for i in range(int(MAX_NAMED / 0.5) + 10)]
    assert task_select(0.5, many, True, "gw0", 1, 0) == 0.5


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5])
def test_a_fraction_outside_0_1_is_refused(fraction: float) -> None:
    with pytest.raises(ValueError, match="fraction must be"):
        choose(DEVICES, fraction, "gw0", 1, 0)
