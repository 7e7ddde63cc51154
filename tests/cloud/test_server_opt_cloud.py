"""The cloud's server optimizer: FedAdam's rounds follow the formula, a restart continues with the stored moments,
a state of another optimizer starts fresh, and the selection fraction reaches the gateways' poll."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from cloud_client import Cloud
from conftest import StartCloud
from typer.testing import CliRunner

from cloud.policy import global_update
from flcore.robust import RuleParams
from flcore.server_opt import OptParams, step
from gateway.cloud_client import RoundInfo
from iotfl.cli import app

ADAM = {"server_opt": "fedadam", "server_lr": 0.05, "server_momentum": 0.8, "server_beta2": 0.9, "server_eps": 0.01}


def run_rounds(cloud: Cloud, rounds: range, sums: list[np.ndarray]) -> None:
    for r in rounds:
        assert cloud.post(cloud.agg("gw0", r, n=4, sum=sums[r - 1])).json()["accepted"] is True
        cloud.wait_for(lambda r=r: cloud.round(r)["state"] == "closed", timeout=10)


def sums_for(cloud: Cloud, count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(11)
    return [rng.normal(0.0, 0.05, cloud.spec.param_count).astype(np.float32) * 4 for _ in range(count)]


def test_fedadam_rounds_follow_the_formula(start_cloud: StartCloud) -> None:
    cloud = start_cloud(**ADAM)
    sums = sums_for(cloud, 3)
    run_rounds(cloud, range(1, 4), sums)
    x = cloud.spec.init(0).astype(np.float64)
    m, v = np.zeros_like(x), np.full_like(x, 0.01**2)
    for total in sums:
        delta = total.astype(np.float64) / 4
        m = 0.8 * m + 0.2 * delta
        v = 0.9 * v + 0.1 * delta**2
        x = x + 0.05 * m / (np.sqrt(v) + 0.01)
    np.testing.assert_allclose(cloud.model()[1], x, rtol=1e-5, atol=1e-6)
    status = cloud.status()
    assert (status["server_opt"], status["server_lr"]) == ("fedadam", 0.05)


def test_a_restart_continues_with_the_stored_moments(start_cloud: StartCloud) -> None:
    first = start_cloud(**ADAM)
    sums = sums_for(first, 3)
    run_rounds(first, range(1, 3), sums)
    first.stop()
    second = start_cloud(**ADAM)
    run_rounds(second, range(3, 4), sums)
    # The uninterrupted run, in memory: the same float32 weights and moments at every step.
    x, state = second.spec.init(0), None
    p = OptParams("fedadam", lr=0.05, momentum=0.8, beta2=0.9, eps=0.01)
    for total in sums:
        update = global_update(x, [(total, 4, 2, 0.7)], p, state=state)
        x, state = update.weights, update.opt_state
    assert state is not None and state.step == 3
    assert second.model()[1].tobytes() == x.tobytes()


def test_a_state_of_another_optimizer_starts_fresh(start_cloud: StartCloud, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="cloud.rounds")
    first = start_cloud(server_opt="fedavgm", server_lr=0.5)
    sums = sums_for(first, 2)
    run_rounds(first, range(1, 2), sums)
    w1 = first.model()[1]
    first.stop()
    second = start_cloud(**ADAM)
    run_rounds(second, range(2, 3), sums)
    fresh_step, _ = step(OptParams("fedadam", lr=0.05, momentum=0.8, beta2=0.9, eps=0.01), w1, sums[1] / 4)
    np.testing.assert_array_equal(second.model()[1], fresh_step)
    assert (
        "model version 1: the optimizer state belongs to 'fedavgm', not 'fedadam'; fedadam starts fresh" in caplog.text
    )


def test_robust_rules_compose_with_the_server_optimizer() -> None:
    base = np.zeros(3, dtype=np.float32)
    deltas = [np.array([1.0, 0.0, -1.0]), np.array([0.5, 2.0, -0.5]), np.array([9.0, 9.0, 9.0])]
    p = OptParams("fedyogi", lr=0.1)
    update = global_update(base, [(d * 2, 2, 1, 0.5) for d in deltas], p, "median", RuleParams())
    expected, state = step(p, base, np.median(np.stack(deltas), axis=0).astype(np.float32))
    assert update.weights.tobytes() == expected.tobytes() and update.opt_state.to_bytes() == state.to_bytes()


def test_select_reaches_the_gateways_poll(start_cloud: StartCloud) -> None:
    cloud = start_cloud(select=0.5)
    body = cloud.current()
    assert body["select"] == 0.5 and RoundInfo.from_json(body).select == 0.5
    everyone = {k: v for k, v in body.items() if k != "select"}
    assert RoundInfo.from_json(everyone).select is None
    assert RoundInfo.from_json({**body, "select": None}).select is None


def test_cli_refuses_bad_server_optimizer_values() -> None:
    for flags, word in (
        (["--server-opt", "sgd"], "sgd"),
        (["--server-lr", "0"], "server_lr"),
        (["--server-momentum", "1"], "server_momentum"),
        (["--server-eps", "-1"], "server_eps"),
        (["--select", "0"], "select"),
    ):
        for command in ("cloud", "demo"):
            result = CliRunner().invoke(app, [command, *flags, "--rounds", "1"])
            assert result.exit_code == 2 and word in result.output, (command, flags, result.output)


def test_iotfl_status_shows_the_server_optimizer(start_cloud: StartCloud) -> None:
    cloud = start_cloud(server_opt="fedyogi")
    result = CliRunner().invoke(app, ["status", "--cloud", cloud.url], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "server fedyogi (lr 0.05)" in result.output.splitlines()[0]
