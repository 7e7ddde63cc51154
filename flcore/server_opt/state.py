"""A server optimizer's state between rounds: its name, step count and float32 moment arrays, as msgpack bytes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgpack
import numpy as np

STATE_VERSION = 1


@dataclass(frozen=True, eq=False)
class OptState:
    """``slots`` maps a moment's name (``m``, ``v``) to a float32 array of ``size`` values; ``step`` counts the
    rounds the optimizer applied. Arrays are read-only, so a state can be shared."""

    name: str
    size: int
    step: int = 0
    slots: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"optimizer state: name must be a non-empty string, got {self.name!r}")
        for key, value in (("size", self.size), ("step", self.step)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"optimizer state: {key} must be an integer >= 0, got {value!r}")
        frozen = {}
        for slot, array in self.slots.items():
            a = np.array(array, dtype=np.float32)
            if a.shape != (self.size,):
                raise ValueError(f"optimizer state: slot {slot!r} has shape {a.shape}, expected ({self.size},)")
            a.flags.writeable = False
            frozen[slot] = a
        object.__setattr__(self, "slots", frozen)

    def check(self, name: str, size: int) -> OptState:
        """This state when it belongs to optimizer ``name`` over ``size`` parameters, else a ValueError."""
        if self.name != name:
            raise ValueError(f"the optimizer state belongs to {self.name!r}, not {name!r}")
        if self.size != size:
            raise ValueError(f"the optimizer state holds {self.size} parameters, the model has {size}")
        return self

    def to_bytes(self) -> bytes:
        """msgpack map ``{v, name, step, size, slots: {name: little-endian float32 bytes}}``."""
        slots = {k: a.astype("<f4").tobytes() for k, a in self.slots.items()}
        body = {"v": STATE_VERSION, "name": self.name, "step": self.step, "size": self.size, "slots": slots}
        return msgpack.packb(body, use_bin_type=True)

    @classmethod
    def from_bytes(cls, data: bytes) -> OptState:
        """The state ``to_bytes`` wrote, or a ValueError saying what is wrong."""
        try:
            body: Any = msgpack.unpackb(data, raw=False, strict_map_key=True)
        except (ValueError, msgpack.UnpackException) as exc:
            raise ValueError(f"optimizer state is not msgpack: {exc}") from None
        if not isinstance(body, dict) or body.get("v") != STATE_VERSION:
            raise ValueError(f"optimizer state must be a msgpack map with v={STATE_VERSION}")
        slots, size = body.get("slots"), body.get("size")
        if not isinstance(slots, dict) or not isinstance(size, int) or isinstance(size, bool):
            raise ValueError("optimizer state needs an integer size and a map of slots")
        arrays = {}
        for slot, raw in slots.items():
            if not isinstance(slot, str) or not isinstance(raw, bytes) or len(raw) != 4 * size:
                raise ValueError(f"optimizer state slot {slot!r} must hold {size} float32 values")
            arrays[slot] = np.frombuffer(raw, dtype="<f4")
        return cls(name=body.get("name", ""), size=size, step=body.get("step", -1), slots=arrays)


__all__ = ["OptState"]
