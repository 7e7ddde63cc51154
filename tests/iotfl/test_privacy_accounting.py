"""The ε accountant (iotfl.privacy): monotone in z and R, the same as dp-accounting called directly for the same
event, near the textbook analytic Gaussian mechanism for one release, and the demo report's privacy section."""

from __future__ import annotations

import math

import dp_accounting
import numpy as np
import pytest
from dp_accounting.rdp import RdpAccountant
from scipy.optimize import brentq
from scipy.stats import norm
from typer.testing import CliRunner

from iotfl.cli import app
from iotfl.datasets import load
from iotfl.demo import build_report
from iotfl.demo_processes import dp_flags
from iotfl.demo_settings import DemoSettings
from iotfl.privacy import epsilon, privacy_section, releases


def analytic_gaussian_epsilon(sigma: float, delta: float) -> float:
    """Balle & Wang (2018), Theorem 8: the exact ε of one Gaussian release with sensitivity 1 and std sigma."""

    def excess(eps: float) -> float:
        return (
            norm.cdf(1 / (2 * sigma) - eps * sigma) - math.exp(eps) * norm.cdf(-1 / (2 * sigma) - eps * sigma) - delta
        )

    return float(brentq(excess, 1e-9, 100.0))


def test_epsilon_falls_as_noise_grows_and_rises_with_rounds() -> None:
    by_noise = [epsilon(z, 20, 1e-5) for z in (0.5, 1.0, 2.0, 4.0)]
    by_rounds = [epsilon(1.0, r, 1e-5) for r in (1, 5, 20, 100)]
    assert all(a > b > 0 for a, b in zip(by_noise, by_noise[1:], strict=False)), by_noise
    assert all(0 < a < b for a, b in zip(by_rounds, by_rounds[1:], strict=False)), by_rounds
    assert epsilon(1.0, 20, 1e-6) > epsilon(1.0, 20, 1e-5)  # a smaller δ costs ε
    assert epsilon(1.0, 0, 1e-5) == 0.0


def test_same_as_dp_accounting_called_directly_for_the_same_event() -> None:
    q, z, steps, delta = 0.3, 1.1, 50, 1e-5
    accountant = RdpAccountant()
    for _ in range(steps):  # composed one release at a time, not through SelfComposedDpEvent
        accountant.compose(dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(z)))
    assert epsilon(z, steps, delta, sampling_rate=q) == pytest.approx(accountant.get_epsilon(delta), rel=1e-9)
    # subsampling at q < 1 would amplify; the run's figure uses q = 1
    assert epsilon(z, steps, delta) > epsilon(z, steps, delta, sampling_rate=q)


def test_one_release_at_z_1_is_near_the_analytic_gaussian_mechanism() -> None:
    exact = analytic_gaussian_epsilon(1.0, 1e-5)
    assert exact == pytest.approx(4.38, abs=0.01)  # the textbook value of σ = 1, δ = 1e-5
    rdp = epsilon(1.0, 1, 1e-5)
    # RDP → (ε, δ) conversion is an upper bound, a few percent loose for a single release
    assert exact <= rdp <= 1.1 * exact, (exact, rdp)


def test_classic_gaussian_mechanism_noise_gives_at_most_its_epsilon() -> None:
    # Dwork & Roth Thm A.1: σ = sqrt(2 ln(1.25/δ)) / ε gives (ε, δ)-DP for ε < 1
    target, delta = 0.5, 1e-5
    z = math.sqrt(2 * math.log(1.25 / delta)) / target
    assert analytic_gaussian_epsilon(z, delta) <= epsilon(z, 1, delta) <= target * 1.05


def test_privacy_section_composes_the_most_active_device() -> None:
    per_device = [{"trainings": 3}, {"trainings": 7}, {"trainings": 0}]
    assert releases(per_device) == 7 and releases([]) == 0
    section = privacy_section(0.5, 1.0, 1e-5, 10, releases(per_device))
    assert section == {
        "epsilon": epsilon(1.0, 7, 1e-5),
        "epsilon_replace": epsilon(0.5, 7, 1e-5),
        "delta": 1e-5,
        "noise_multiplier": 1.0,
        "clip": 0.5,
        "rounds": 10,
        "releases": 7,
        "sampling_rate": 1.0,
    }
    assert 0 < section["epsilon"] < section["epsilon_replace"] < math.inf


@pytest.mark.parametrize(
    ("z", "steps", "delta", "q"), [(0.0, 1, 1e-5, 1.0), (1.0, -1, 1e-5, 1.0), (1.0, 1, 0.0, 1.0), (1.0, 1, 1e-5, 0.0)]
)
def test_bad_accountant_arguments_raise(z: float, steps: int, delta: float, q: float) -> None:
    with pytest.raises(ValueError):
        epsilon(z, steps, delta, sampling_rate=q)


def _status(rounds: int) -> dict:
    history = [
        {"round": r, "accuracy": 0.5, "loss": 1.0, "k": 4, "n": 40, "bytes_up": 1000, "closed_at": 0.0}
        for r in range(1, rounds + 1)
    ]
    return {"history": history, "devices_seen": 4}


def test_demo_report_states_epsilon_and_records_the_dp_settings() -> None:
    dataset = load("sensors", 0)
    settings = DemoSettings(devices=4, gateways=1, rounds=3, dataset="sensors", dp_clip=0.5, dp_noise=2.0)
    # the fleet's own section (from its IOTFL_ROUNDS, 20 by default) gives way to the demo's
    fleet = {"per_device": [{"trainings": 2}, {"trainings": 3}], "battery_by_round": {}, "privacy": {"rounds": 20}}
    report = build_report(settings, dataset, _status(3), {}, fleet, 0.9)
    assert "privacy" not in report["fleet"]
    assert report["config"]["dp_clip"] == 0.5 and report["config"]["dp_noise"] == 2.0
    assert report["config"]["dp_delta"] == 1e-5
    assert report["privacy"]["releases"] == 3 and report["privacy"]["rounds"] == 3
    assert report["privacy"]["epsilon"] == pytest.approx(epsilon(2.0, 3, 1e-5))
    # without the fleet's report every device is assumed to have trained in every sub-round
    lost = build_report(settings.model_copy(update={"gateway_rounds": 2}), dataset, _status(3), {}, None, 0.9)
    assert lost["privacy"]["releases"] == 6
    off = build_report(DemoSettings(dataset="sensors"), dataset, _status(3), {}, fleet, 0.9)
    assert "privacy" not in off and off["config"]["dp_clip"] == 0.0


def test_demo_passes_dp_flags_to_the_fleet_only_when_on() -> None:
    assert dp_flags(DemoSettings()) == []
    flags = dp_flags(DemoSettings(dp_clip=0.25, dp_noise=0.5, dp_delta=1e-6))
    assert flags == ["--dp-clip", "0.25", "--dp-noise", "0.5", "--dp-delta", "1e-06"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["demo", "--dp-clip", "1", "--dp-noise", "0"], "dp_noise"),
        (["demo", "--dp-clip", "1", "--dp-delta", "1.5"], "dp_delta"),
        (["fleet", "--dp-clip", "nan"], "dp_clip"),
        (["demo", "--dp-clip", "-1"], "dp_clip"),
        (["fleet", "--dp-clip", "1", "--dp-noise", "-1"], "dp_noise"),
    ],
)
def test_bad_dp_flags_are_one_clear_error(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "error:" in result.output and message in result.output and "Traceback" not in result.output


def test_noise_multiplier_scales_the_real_noise_of_a_float32_delta() -> None:
    # the device-side arithmetic and the accountant agree on what z means: std / clip
    from flcore.privacy import clip_and_noise

    out, _ = clip_and_noise(np.zeros(100_000, dtype=np.float32), 0.2, 1.5, np.random.default_rng(3))
    assert float(out.std()) / 0.2 == pytest.approx(1.5, rel=0.02)
