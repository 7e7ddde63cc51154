"""Fault-injection plans (``iotfl demo --chaos SPEC``, ``iotfl fleet --chaos SPEC``) as values: parsed, checked,
and with "a fraction of the run" resolved to a round. Nothing here touches a process or a socket.

SPEC is a comma-separated list of faults, each ``KIND[:ARG…][@WHEN]``:

=============================  ===========================================================================  =====
fault                          what happens                                                                 by
=============================  ===========================================================================  =====
``kill-broker[:DOWN]``         ``kill -9`` the broker; restart it DOWN later (default 1 s) on the same      demo
                               port and persistence file
``kill-gateway:GW[:DOWN]``     ``kill -9`` gateway GW; restart it DOWN later (default 1 s) with the same    demo
                               state dir
``cloud-down[:DURATION]``      stop the cloud; restart it DURATION later (default 30 s) on the same port    demo
                               and database
``partition:GW[:DURATION]``    freeze gateway GW (SIGSTOP) for DURATION (default 20 s), then SIGCONT: its   demo
                               broker and cloud connections hang like a dead uplink
``drop-devices:PCT``           PCT of the devices vanish: no DISCONNECT, no FIN, never back; the broker     fleet
                               notices after 1.5 × keepalive and publishes their Last Will
``slow-devices:PCT``           PCT of the devices publish each update 1 s after the task's deadline         fleet
                               (stragglers, answered ``late``)
=============================  ===========================================================================  =====

WHEN is ``roundN`` — *mid-round N*: as soon as the first update of round N was accepted (for a fault aimed at a
gateway, the first update *that gateway* accepted), so the round is open with work in flight — or a fraction
``F`` in (0, 1] (``0.5`` or ``50%``) of an R-round run, meaning mid-round ``ceil(F·R)``. Without ``@`` a fault
fires mid-run (``@0.5``), except ``slow-devices``, whose devices are slow from round 1. DOWN and DURATION are
``30s``, ``1.5s``, ``500ms`` or ``2m`` (a bare number means seconds); PCT is ``30%`` or ``0.3``.
Example: ``kill-gateway:gw0@0.5,drop-devices:30%,cloud-down:30s@round3``.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

from flcore.topics import is_valid_id

PROCESS_FAULTS = ("kill-broker", "kill-gateway", "cloud-down", "partition")
DEVICE_FAULTS = ("drop-devices", "slow-devices")
KINDS = PROCESS_FAULTS + DEVICE_FAULTS
# Default outage of each fault that has one (seconds).
DEFAULT_SECONDS = {"kill-broker": 1.0, "kill-gateway": 1.0, "cloud-down": 30.0, "partition": 20.0}
MAX_SECONDS = 24 * 3600.0
_EXAMPLES = {
    "kill-broker": "kill-broker@round2",
    "kill-gateway": "kill-gateway:gw1@0.5",
    "cloud-down": "cloud-down:30s",
    "partition": "partition:gw2:20s",
    "drop-devices": "drop-devices:30%",
    "slow-devices": "slow-devices:20%",
}
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|s|m)?")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}


class ChaosError(ValueError):
    """A SPEC that cannot be run; the message names the fault and shows a valid one."""


@dataclass(frozen=True)
class Trigger:
    """When a fault fires: mid-round ``round``, or mid-round ``ceil(fraction·R)`` of an R-round run."""

    round: int | None = None
    fraction: float | None = None

    def __post_init__(self) -> None:
        if (self.round is None) == (self.fraction is None):
            raise ChaosError("a trigger is either a round or a fraction of the run")
        if self.round is not None and self.round < 1:
            raise ChaosError(f"rounds are numbered from 1, got round{self.round}")
        if self.fraction is not None and not 0.0 < self.fraction <= 1.0:
            raise ChaosError(f"a fraction of the run must be in (0, 1], got {self.fraction:g}")

    def resolve(self, rounds: int) -> int:
        """The round this trigger means in a run of ``rounds`` rounds."""
        if self.round is not None:
            return self.round
        assert self.fraction is not None  # one of the two, checked above
        return max(1, math.ceil(self.fraction * rounds - 1e-9))

    def __str__(self) -> str:
        return f"round{self.round}" if self.round is not None else f"{self.fraction:g}"


@dataclass(frozen=True)
class Fault:
    """One fault of a plan: its ``kind``, when it fires, and its gateway / outage / share of devices."""

    kind: str
    when: Trigger
    target: str | None = None
    seconds: float | None = None
    share: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ChaosError(f"unknown fault {self.kind!r}; known: {', '.join(KINDS)}")
        wants_target = self.kind in ("kill-gateway", "partition")
        if wants_target != (self.target is not None):
            raise self._error("needs a gateway id" if wants_target else "takes no gateway id")
        if self.target is not None and not is_valid_id(self.target):
            raise self._error(f"gateway id {self.target!r} must match [A-Za-z0-9_-]{{1,64}}")
        if (self.kind in DEFAULT_SECONDS) != (self.seconds is not None):
            raise self._error("needs an outage" if self.kind in DEFAULT_SECONDS else "takes no duration")
        if self.seconds is not None and not 0.0 <= self.seconds <= MAX_SECONDS:
            raise self._error(f"outage {self.seconds:g} s must be in 0..{MAX_SECONDS:g} s")
        if (self.kind in DEVICE_FAULTS) != (self.share is not None):
            raise self._error("needs a share of devices" if self.kind in DEVICE_FAULTS else "takes no share")
        if self.share is not None and not 0.0 < self.share <= 1.0:
            raise self._error(f"share {self.share:g} must be in (0, 1] (e.g. 30% or 0.3)")

    def _error(self, problem: str) -> ChaosError:
        return ChaosError(f"chaos fault {self.kind!r} {problem}; e.g. {_EXAMPLES[self.kind]}")

    @property
    def by_demo(self) -> bool:
        """A process fault: only the demo, which owns the processes, can inject it."""
        return self.kind in PROCESS_FAULTS

    def round_in(self, rounds: int) -> int:
        return self.when.resolve(rounds)

    def resolved(self, rounds: int) -> Fault:
        """The same fault with its trigger as an absolute round of a ``rounds``-round run."""
        return replace(self, when=Trigger(round=self.round_in(rounds)))

    def __str__(self) -> str:
        parts = [self.kind]
        if self.target is not None:
            parts.append(self.target)
        if self.seconds is not None:
            parts.append(f"{self.seconds:.10g}s")
        if self.share is not None:
            parts.append(f"{self.share * 100:.10g}%")
        return ":".join(parts) + f"@{self.when}"


@dataclass(frozen=True)
class ChaosPlan:
    """The faults of one run, in SPEC order; ``str()`` is a canonical SPEC that parses back to the same plan."""

    faults: tuple[Fault, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.faults)

    def __str__(self) -> str:
        return ",".join(str(f) for f in self.faults)

    def resolved(self, rounds: int) -> ChaosPlan:
        return ChaosPlan(tuple(f.resolved(rounds) for f in self.faults))

    def for_demo(self) -> ChaosPlan:
        """The process faults (broker, gateways, cloud)."""
        return ChaosPlan(tuple(f for f in self.faults if f.by_demo))

    def for_fleet(self) -> ChaosPlan:
        """The device faults."""
        return ChaosPlan(tuple(f for f in self.faults if not f.by_demo))

    def kinds(self) -> set[str]:
        return {f.kind for f in self.faults}


def parse_duration(text: str) -> float:
    """``30s``, ``1.5s``, ``500ms``, ``2m`` or a bare number of seconds."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise ChaosError(f"duration {text!r} must look like 30s, 1.5s, 500ms or 2m")
    return round(float(match.group(1)) * _UNITS[match.group(2)], 6)  # µs: the canonical text round-trips


def parse_share(text: str) -> float:
    """``30%`` or ``0.3`` as a fraction."""
    raw = text.strip()
    try:
        share = float(raw[:-1]) / 100.0 if raw.endswith("%") else float(raw)
    except ValueError:
        raise ChaosError(f"share {text!r} must look like 30% or 0.3") from None
    return round(share, 6) if math.isfinite(share) else share


def parse_trigger(text: str) -> Trigger:
    """``roundN``, ``0.5`` or ``50%``."""
    raw = text.strip().lower()
    if raw.startswith("round"):
        digits = raw[len("round") :]
        if not digits.isdigit():
            raise ChaosError(f"trigger @{text} must be roundN (N a round number), a fraction like 0.5, or 50%")
        return Trigger(round=int(digits))
    try:
        fraction = float(raw[:-1]) / 100.0 if raw.endswith("%") else float(raw)
    except ValueError:
        raise ChaosError(f"trigger @{text} must be roundN, a fraction of the run like 0.5, or 50%") from None
    if not math.isfinite(fraction):
        raise ChaosError(f"trigger @{text} is not a number")
    return Trigger(fraction=fraction)


def parse_fault(text: str) -> Fault:
    """One ``KIND[:ARG…][@WHEN]``."""
    body, at, when = text.strip().partition("@")
    kind, *args = [part.strip() for part in body.split(":")]
    kind = kind.lower()
    if kind not in KINDS:
        raise ChaosError(f"unknown fault {kind!r} in {text.strip()!r}; known: {', '.join(KINDS)}")
    if at and not when.strip():
        raise ChaosError(f"{text.strip()!r}: nothing after @ (write e.g. @round2 or @0.5)")
    trigger = parse_trigger(when) if at else Trigger(round=1) if kind == "slow-devices" else Trigger(fraction=0.5)
    target: str | None = None
    seconds: float | None = None
    share: float | None = None
    if kind in ("kill-gateway", "partition"):
        if not args or not args[0]:
            raise ChaosError(f"chaos fault {kind!r} needs a gateway id; e.g. {_EXAMPLES[kind]}")
        target, *args = args
    if kind in DEVICE_FAULTS:
        if len(args) != 1:
            raise ChaosError(f"chaos fault {kind!r} takes one share of devices; e.g. {_EXAMPLES[kind]}")
        share = parse_share(args[0])
    elif len(args) > 1:
        raise ChaosError(f"{text.strip()!r} has too many ':' parts; e.g. {_EXAMPLES[kind]}")
    else:
        seconds = parse_duration(args[0]) if args else DEFAULT_SECONDS[kind]
    return Fault(kind, trigger, target=target, seconds=seconds, share=share)


def parse_chaos(spec: str) -> ChaosPlan:
    """A comma-separated SPEC as a plan (an empty SPEC is the empty plan); raises ``ChaosError``."""
    items = spec.split(",")
    if not spec.strip():
        return ChaosPlan()
    if any(not item.strip() for item in items):
        raise ChaosError(f"chaos SPEC {spec!r} has an empty item (a stray comma?)")
    return ChaosPlan(tuple(parse_fault(item) for item in items))


def pick(ids: Sequence[str], share: float, seed: int, salt: str) -> list[str]:
    """``round(share·len(ids))`` of ``ids`` (at least one when ``share`` > 0), chosen by a stable hash of
    (seed, salt, id): the same run always hits the same devices, whatever the order of ``ids``."""
    if not ids or share <= 0:
        return []
    count = min(len(ids), max(1, round(share * len(ids))))

    def rank(dev: str) -> bytes:
        return hashlib.blake2b(f"{seed}:{salt}:{dev}".encode(), digest_size=8).digest()

    return sorted(sorted(ids, key=rank)[:count])


__all__ = [
    "DEFAULT_SECONDS",
    "DEVICE_FAULTS",
    "KINDS",
    "PROCESS_FAULTS",
    "ChaosError",
    "ChaosPlan",
    "Fault",
    "Trigger",
    "parse_chaos",
    "parse_duration",
    "parse_fault",
    "parse_share",
    "parse_trigger",
    "pick",
]
