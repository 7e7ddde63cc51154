"""Field checks shared by every wire message: the one place where decoded values are validated."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import msgpack
import numpy as np

from flcore.errors import WireError

WIRE_VERSION = 1
# Bounds on what the msgpack decoder may allocate, so a hostile header cannot ask for gigabytes.
_UNPACK_LIMITS = dict(max_str_len=1 << 16, max_bin_len=64 << 20, max_array_len=1 << 16, max_map_len=256)


def pack(fields: dict[str, Any]) -> bytes:
    """msgpack with ``bin`` for bytes and float64 for floats, keys in the given order."""
    return msgpack.packb(fields, use_bin_type=True)


def f32_array(data: bytes) -> np.ndarray:
    """A wire float32 bin as a writable native float32 array (a copy)."""
    return np.frombuffer(data, dtype="<f4").astype(np.float32)


def f32_bytes(values: np.ndarray) -> bytes:
    """float32 values as they travel (little-endian)."""
    return np.asarray(values, dtype="<f4").tobytes()


def without_none(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """The map of ``pairs`` in their order, without the unset (None) optional fields."""
    return {k: v for k, v in pairs if v is not None}


def unpack(data: bytes, kind: str, max_bytes: int | None = None) -> dict[str, Any]:
    """Decode ``data`` into a map of message type ``kind`` with wire version 1, or raise ``WireError``."""
    if max_bytes is not None and len(data) > max_bytes:
        raise WireError("too_large", f"{len(data)} bytes > {max_bytes}")
    try:
        # raw=False and strict_map_key=True are msgpack ≥ 1.0's defaults (pyproject pins it): not passed, as every
        # keyword argument costs a gateway time per message.
        obj = msgpack.unpackb(data, **_UNPACK_LIMITS)
    except Exception as exc:  # msgpack raises several unrelated types for malformed input
        raise WireError("decode", f"not msgpack: {type(exc).__name__}") from None
    # Exact type tests: msgpack builds the builtins only (and a bool is not an int here).
    if type(obj) is not dict:
        raise WireError("decode", f"expected a map, got {type(obj).__name__}")
    version = obj.get("v")
    if type(version) is not int or version != WIRE_VERSION:
        raise Fields(obj).fail("version", f"v={version!r}, expected {WIRE_VERSION}")
    if obj.get("t") != kind:
        raise Fields(obj).fail("schema", f"t={obj.get('t')!r}, expected {kind!r}")
    return obj


def readable_int(value: Any) -> int | None:
    return value if is_int(value) else None


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class Fields:
    """Typed access to a decoded map; every failure is a ``WireError`` with the message's round/seq."""

    def __init__(self, obj: dict[str, Any]):
        self.obj = obj

    # round/seq are read only when needed (a failure, an ack): a valid message never pays for them.
    @property
    def round(self) -> int | None:
        return readable_int(self.obj.get("round"))

    @property
    def seq(self) -> int | None:
        return readable_int(self.obj.get("seq"))

    def fail(self, reason: str, detail: str) -> WireError:
        return WireError(reason, detail, round=self.round, seq=self.seq)

    def exact(
        self, keys: Callable[[dict[str, Any]], tuple[Any, ...]], types: tuple[type, ...]
    ) -> tuple[Any, ...] | None:
        """The values ``keys`` (an ``operator.itemgetter``) picks when each is present with exactly its type in
        ``types`` (the well-typed common case, checked in one pass), else None: the caller then runs its per-field
        checks, which name the first problem."""
        try:
            values = keys(self.obj)
        except KeyError:
            return None
        return values if tuple(map(type, values)) == types else None

    def _get(self, key: str, ok: bool, type_name: str, optional: bool) -> Any:
        if key not in self.obj:
            if optional:
                return None
            raise self.fail("schema", f"missing field {key!r}")
        value = self.obj[key]
        if not ok:
            raise self.fail("schema", f"field {key!r} must be {type_name}, got {type(value).__name__}")
        return value

    def integer(self, key: str, optional: bool = False, lo: int | None = None, hi: int | None = None) -> Any:
        value = self.obj.get(key)
        # The common case in one type test (a bool is not an int here); anything else goes through the full check.
        if type(value) is not int:
            value = self._get(key, is_int(value), "an int", optional)
        if value is not None and ((lo is not None and value < lo) or (hi is not None and value > hi)):
            raise self.fail("schema", f"field {key!r}={value} outside {lo}..{hi}")
        return value

    def number(self, key: str, optional: bool = False) -> Any:
        value = self._get(key, is_number(self.obj.get(key)), "a number", optional)
        return None if value is None else float(value)

    def finite(self, key: str, reason: str = "schema", optional: bool = False) -> Any:
        value = self.number(key, optional)
        if value is not None and not math.isfinite(value):
            raise self.fail(reason, f"field {key!r} is not finite")
        return value

    def text(self, key: str, optional: bool = False) -> Any:
        value = self.obj.get(key)
        return value if type(value) is str else self._get(key, isinstance(value, str), "a string", optional)

    def bin(self, key: str, optional: bool = False) -> Any:
        value = self.obj.get(key)
        return value if type(value) is bytes else self._get(key, isinstance(value, bytes), "bin", optional)

    def flag(self, key: str, optional: bool = False) -> Any:
        return self._get(key, isinstance(self.obj.get(key), bool), "a bool", optional)

    def mapping(self, key: str, optional: bool = False) -> Any:
        value = self.obj.get(key)
        return value if type(value) is dict else self._get(key, isinstance(value, dict), "a map", optional)

    def array(self, key: str, optional: bool = False) -> Any:
        return self._get(key, isinstance(self.obj.get(key), list), "an array", optional)
