"""Property test of the gateway's whole ingest path on hostile (topic, payload) pairs: it never raises, a message it
does not accept leaves every sum (and the held robust rows and seqs) untouched, and an accepted one keeps them finite.
The strategies are benchmarks/fuzz_wire.py's (run at 100,000+ inputs there)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

from benchmarks.fuzz_wire import TARGETS, Target, inputs

COLLECTORS = [t for t in TARGETS if t.name.startswith("Collector")]


@pytest.mark.parametrize("target", COLLECTORS, ids=lambda t: t.name)
def test_ingest_never_raises_and_rejections_change_nothing(target: Target) -> None:
    @settings(max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(inputs(target))
    def probe(case: tuple[str, bytes]) -> None:
        target.check(*case)

    probe()
