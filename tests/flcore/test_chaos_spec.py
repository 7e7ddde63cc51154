"""The ``--chaos SPEC`` grammar: every named fault, triggers, defaults, canonical text, errors, device picks."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flcore.chaos import (
    ChaosError,
    ChaosPlan,
    Fault,
    Trigger,
    parse_chaos,
    parse_duration,
    parse_share,
    pick,
)


def test_the_issue_examples_parse_to_what_they_say() -> None:
    plan = parse_chaos(
        "kill-broker@round2, kill-gateway:gw1@0.5, cloud-down:30s, drop-devices:30%, slow-devices:20%, "
        "partition:gw2:20s"
    )
    assert [f.kind for f in plan.faults] == [
        "kill-broker",
        "kill-gateway",
        "cloud-down",
        "drop-devices",
        "slow-devices",
        "partition",
    ]
    broker, gateway, cloud, drop, slow, partition = plan.faults
    assert broker == Fault("kill-broker", Trigger(round=2), seconds=1.0)
    assert gateway == Fault("kill-gateway", Trigger(fraction=0.5), target="gw1", seconds=1.0)
    assert cloud == Fault("cloud-down", Trigger(fraction=0.5), seconds=30.0)
    assert drop == Fault("drop-devices", Trigger(fraction=0.5), share=0.3)
    assert slow == Fault("slow-devices", Trigger(round=1), share=0.2)  # stragglers from the start
    assert partition == Fault("partition", Trigger(fraction=0.5), target="gw2", seconds=20.0)
    assert [f.by_demo for f in plan.faults] == [True, True, True, False, False, True]
    assert plan.for_fleet().kinds() == {"drop-devices", "slow-devices"}
    assert plan.for_demo().kinds() == {"kill-broker", "kill-gateway", "cloud-down", "partition"}


def test_fractions_resolve_to_mid_round_ceil_of_the_run() -> None:
    plan = parse_chaos("kill-gateway:gw0@0.5,drop-devices:30%@50%,kill-broker:2s@round7,cloud-down@0.01")
    assert [f.round_in(20) for f in plan.faults] == [10, 10, 7, 1]
    assert [f.round_in(5) for f in plan.faults] == [3, 3, 7, 1]
    assert Trigger(fraction=1.0).resolve(4) == 4
    resolved = plan.resolved(5)
    assert (
        str(resolved)
        == "kill-gateway:gw0:1s@round3,drop-devices:30%@round3,kill-broker:2s@round7,cloud-down:30s@round1"
    )
    assert parse_chaos(str(resolved)) == resolved


@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30.0), ("1.5s", 1.5), ("500ms", 0.5), ("2m", 120.0), ("7", 7.0), (".5s", 0.5)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


def test_shares() -> None:
    assert parse_share("30%") == pytest.approx(0.3)
    assert parse_share("0.25") == 0.25
    assert parse_share("100%") == 1.0


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("explode-broker", "unknown fault 'explode-broker'"),
        ("kill-gateway@0.5", "needs a gateway id"),
        ("partition", "needs a gateway id"),
        ("kill-gateway:gw 1", "must match"),
        ("drop-devices", "takes one share"),
        ("drop-devices:0%", "share 0 must be in (0, 1]"),
        ("slow-devices:150%", "share 1.5 must be in (0, 1]"),
        ("drop-devices:lots", "must look like 30% or 0.3"),
        ("cloud-down:soon", "must look like 30s"),
        ("cloud-down:-5s", "must look like 30s"),
        ("kill-broker:1s:2s", "too many ':' parts"),
        ("kill-broker@", "nothing after @"),
        ("kill-broker@round0", "numbered from 1"),
        ("kill-broker@roundx", "must be roundN"),
        ("kill-broker@1.5", "(0, 1]"),
        ("kill-broker@later", "must be roundN"),
        ("kill-broker@nan", "not a number"),
        ("kill-broker,,drop-devices:5%", "empty item"),
        ("cloud-down:48h", "must look like 30s"),
        ("cloud-down:2000m", "must be in 0..86400"),
    ],
)
def test_errors_name_the_problem(spec: str, says: str) -> None:
    with pytest.raises(ChaosError) as err:
        parse_chaos(spec)
    assert says in str(err.value)


def test_values_check_themselves() -> None:
    with pytest.raises(ChaosError, match="either a round or a fraction"):
        Trigger()
    with pytest.raises(ChaosError, match="takes no share"):
        Fault("kill-broker", Trigger(round=1), seconds=1.0, share=0.5)
    with pytest.raises(ChaosError, match="takes no gateway"):
        Fault("cloud-down", Trigger(round=1), target="gw0", seconds=1.0)
    with pytest.raises(ChaosError, match="needs an outage"):
        Fault("partition", Trigger(round=1), target="gw0")


def test_empty_spec_is_the_empty_plan() -> None:
    assert parse_chaos("") == ChaosPlan() and not parse_chaos("  ")
    assert str(ChaosPlan()) == ""


def test_pick_is_stable_sized_and_order_free() -> None:
    ids = [f"d{i:04d}" for i in range(50)]
    chosen = pick(ids, 0.3, seed=0, salt="drop")
    assert len(chosen) == 15 and set(chosen) <= set(ids)
    assert pick(list(reversed(ids)), 0.3, seed=0, salt="drop") == chosen
    assert pick(ids, 0.3, seed=1, salt="drop") != chosen
    assert pick(ids, 0.3, seed=0, salt="slow") != chosen
    assert len(pick(ids[:3], 0.01, seed=0, salt="x")) == 1  # a positive share hits at least one device
    assert pick(ids, 1.0, seed=0, salt="x") == ids and pick([], 0.5, 0, "x") == []


@given(
    st.lists(
        st.one_of(
            st.builds(lambda r, s: f"kill-broker:{s}s@round{r}", st.integers(1, 99), st.integers(0, 60)),
            st.builds(lambda g, f: f"kill-gateway:gw{g}@{f}", st.integers(0, 9), st.sampled_from([0.1, 0.5, 1])),
            st.builds(lambda p: f"drop-devices:{p}%", st.integers(1, 100)),
            st.builds(lambda p, r: f"slow-devices:{p}%@round{r}", st.integers(1, 100), st.integers(1, 9)),
            st.builds(lambda g, s: f"partition:gw{g}:{s}s", st.integers(0, 9), st.integers(0, 99)),
            st.builds(lambda s: f"cloud-down:{s}ms", st.integers(0, 99_000)),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_canonical_text_parses_back(items: list[str]) -> None:
    plan = parse_chaos(",".join(items))
    assert parse_chaos(str(plan)) == plan
    assert len(plan.faults) == len(items)
