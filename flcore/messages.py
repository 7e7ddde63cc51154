"""Wire format v1: the ``up``, ``task``, ``ack``, ``agg`` and ``status`` messages as frozen dataclasses.

``encode()`` writes the contract's msgpack map (keys in field order, optional fields omitted when unset);
``decode()`` validates every field and raises ``flcore.errors.WireError`` with a reason code on the first problem,
in the order the contract lists the checks. Unknown keys are ignored for forward compatibility.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

import numpy as np

from flcore.encodings import ENCODINGS, F32, INT8, MAX_SCALE, SIZED, TOPK, Encoded, parse, scales_in_range
from flcore.errors import WireError
from flcore.model import ModelSpec
from flcore.quantize import MAX_CHUNK, chunk_count
from flcore.schema import WIRE_VERSION, Fields, is_number, pack, unpack
from flcore.signing import SIG_BYTES, SIG_TAIL, TAIL_BYTES, attach, sign
from flcore.topics import is_valid_id

MAX_UPDATE_BYTES = 1 << 20
MAX_SAMPLES = 100_000
# A gateway stores seq in SQLite (signed 64-bit); a signing device starts at unix milliseconds, far below this.
MAX_SEQ = (1 << 63) - 1
# The cloud stores rounds, versions and update counts as 32-bit SQL INTEGER, byte and sample totals as 64-bit.
MAX_INT32 = (1 << 31) - 1
# `p` of an int4/topk update: a model no larger than the largest bin the decoder takes (64 MiB of float32).
MAX_PARAMS = 1 << 24
# Hostile-input caps: a largest update (|delta| ≤ 127·MAX_SCALE, in flcore.encodings; n ≤ MAX_SAMPLES) keeps
# n·delta, summed over ~10⁷ updates, finite in float32, so one device cannot turn its gateway's aggregate (or model)
# into inf; and n·loss summed over a fleet stays finite in float64 (an inf mean loss would make the cloud's JSON
# unservable).
MAX_LOSS = 1e30
ACK_STATUSES = ("accepted", "duplicate", "late", "rejected")
DEVICE_STATES = ("online", "sleeping", "offline")
_META_TYPES: dict[str, tuple[type, ...]] = {
    "battery": (float, int),
    "train_ms": (int,),
    "ram_class": (str,),
    "fw": (str,),
}

# The fields every `up` carries, in the order the contract checks them, and their types in the common case.
_UP_FIELDS = itemgetter("dev", "round", "base", "seq", "n", "chunk", "loss", "scales", "q")
_UP_TYPES = (str, int, int, int, int, int, float, bytes, bytes)
# The `meta` keys a simulated or MicroPython device sends, with their types, all present: the fast path's case.
_META_KEYS = tuple(_META_TYPES)
_META_COMMON = tuple(types[0] for types in _META_TYPES.values())


def _f32(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<f4").astype(np.float32)


def _f32_bytes(values: np.ndarray) -> bytes:
    return np.asarray(values, dtype="<f4").tobytes()


def _without_none(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    return {k: v for k, v in pairs if v is not None}


@dataclass(frozen=True, eq=False)
class Up:
    """A device's quantized model delta for one (round, sub); ``sig`` is the HMAC of a signed one
    (``flcore.signing``).

    ``enc`` names how ``q``/``scales``/``idx`` carry the delta (``flcore.encodings``): for int8 and int4 ``q`` holds
    P int8 values (int4's unpacked), for topk the k kept values at ``idx`` of a ``p``-value model, for f32 the
    float32 delta. ``p`` is only needed for topk (P is ``len(q)`` otherwise).
    """

    dev: str
    round: int
    base: int
    n: int
    loss: float
    seq: int
    chunk: int
    scales: np.ndarray
    q: np.ndarray
    sub: int = 0
    meta: dict[str, Any] | None = None
    sig: bytes | None = None
    enc: str = INT8
    idx: np.ndarray | None = None
    p: int | None = None

    @classmethod
    def of(
        cls,
        body: Encoded,
        dev: str,
        round: int,
        base: int,
        n: int,
        loss: float,
        seq: int,
        sub: int = 0,
        meta: dict[str, Any] | None = None,
    ) -> Up:
        """An update carrying an encoded delta (``flcore.encodings.encode``)."""
        p = body.size if body.enc == TOPK else None
        return cls(
            dev, round, base, n, loss, seq, body.chunk, body.scales, body.q, sub, meta, None, body.enc, body.idx, p
        )

    @property
    def body(self) -> Encoded:
        size = len(self.q) if self.p is None else self.p
        return Encoded(self.enc, size, self.chunk, self.scales, self.q, self.idx)

    def delta(self, dtype: type[np.floating] = np.float32) -> np.ndarray:
        return self.body.delta(dtype)

    def encode(self, key: bytes | None = None) -> bytes:
        """The wire bytes; signed with ``key`` when given, else carrying ``sig`` when set (a decoded signed one).
        An int8 update writes no ``enc``: its bytes are the contract's v1 ``up``."""
        body = self.body
        payload = pack(
            _without_none(
                [
                    ("v", WIRE_VERSION),
                    ("t", "up"),
                    ("dev", self.dev),
                    ("round", self.round),
                    ("base", self.base),
                    ("n", self.n),
                    ("loss", float(self.loss)),
                    ("seq", self.seq),
                    ("chunk", self.chunk),
                    ("scales", _f32_bytes(self.scales)),
                    ("q", body.q_bytes()),
                    ("sub", self.sub or None),
                    ("meta", self.meta),
                    ("enc", None if self.enc == INT8 else self.enc),
                    ("p", body.size if self.enc in SIZED else None),
                    ("idx", body.idx_bytes()),
                ]
            )
        )
        if key is not None:
            return sign(payload, key)
        return payload if self.sig is None else attach(payload, self.sig)

    @classmethod
    def decode(
        cls,
        data: bytes,
        *,
        params: int | None = None,
        topic_dev: str | None = None,
        max_bytes: int = MAX_UPDATE_BYTES,
        max_samples: int = MAX_SAMPLES,
    ) -> Up:
        """Validate and decode; ``params`` is P of the round's model, ``topic_dev`` the ``<dev>`` of the topic."""
        obj = unpack(data, "up", max_bytes)
        up = _decode_common(obj, data, params, topic_dev, max_samples)
        if up is not None:
            return up
        f = Fields(obj)
        values = f.exact(_UP_FIELDS, _UP_TYPES)
        if values is None or not (values[1] >= 1 and values[2] >= 0 and 0 <= values[3] <= MAX_SEQ):
            # Not the well-typed common case: the per-field checks, in the contract's order, name the problem.
            values = (
                f.text("dev"),
                f.integer("round", lo=1),
                f.integer("base", lo=0),
                f.integer("seq", lo=0, hi=MAX_SEQ),
                f.integer("n"),
                f.integer("chunk"),
                f.number("loss"),
                f.bin("scales"),
                f.bin("q"),
            )
        dev, rnd, base, seq, n, chunk, loss, scales_raw, q_raw = values
        sub = f.integer("sub", optional=True, lo=0) or 0
        meta = f.mapping("meta", optional=True)
        enc = f.text("enc", optional=True)
        enc = INT8 if enc is None else enc
        if enc not in ENCODINGS:
            raise f.fail("enc", f"unknown encoding {enc!r}")
        p = f.integer("p", lo=1, hi=MAX_PARAMS) if enc in SIZED else None
        idx_raw = f.bin("idx") if enc == TOPK else None
        if not is_valid_id(dev) or (topic_dev is not None and dev != topic_dev):
            raise f.fail("dev_mismatch", f"payload dev {dev!r} != topic dev {topic_dev!r}")
        if not 1 <= n <= max_samples:
            raise f.fail("n_range", f"n={n} outside 1..{max_samples}")
        if not 1 <= chunk <= MAX_CHUNK:
            raise f.fail("schema", f"chunk={chunk} outside 1..{MAX_CHUNK}")
        # Without the round's P (a decoder on its own), an int8 update's P is len(q), an f32 one's len(q) / 4.
        size = params if params is not None else p if p is not None else len(q_raw) // (4 if enc == F32 else 1)
        if p is not None and p != size:
            raise f.fail("length", f"p={p}, the model has {size}")
        try:
            body = parse(enc, size, chunk, scales_raw, q_raw, idx_raw)
        except WireError as exc:
            raise f.fail(exc.reason, exc.detail) from None
        if not (math.isfinite(loss) and abs(loss) <= MAX_LOSS):
            raise f.fail("loss", f"loss is not finite or beyond ±{MAX_LOSS:g}")
        if meta is not None:
            for key, types in _META_TYPES.items():
                value = meta.get(key)
                # Exact types: msgpack decodes to the builtins only, and a bool is not an int here.
                if value is not None and type(value) not in types:
                    raise f.fail("schema", f"meta.{key} has type {type(value).__name__}")
            battery = meta.get("battery")
            if battery is not None and not 0.0 <= battery <= 1.0:
                raise f.fail("schema", f"meta.battery={battery} outside 0..1")
        sig = f.obj.get("sig")
        if "sig" in f.obj and not _signed_tail(data, sig):
            raise f.fail("signature", "sig must be bin 32 and the last field of the map")
        return cls(dev, rnd, base, n, loss, seq, chunk, body.scales, body.q, sub, meta, sig, enc, body.idx, p)


def _decode_common(
    obj: dict[str, Any], data: bytes, params: int | None, topic_dev: str | None, max_samples: int
) -> Up | None:
    """The common ``up`` — int8, the usual field types, every value valid — with the same checks as ``Up.decode`` in
    a few expressions; None for anything else, valid or not, which the per-field path then decodes or names.

    A gateway decodes one of these per device per round: a per-field pass and the dataclass's ``__init__`` (one
    ``object.__setattr__`` per field) cost more than twice this.
    """
    try:
        values = _UP_FIELDS(obj)
    except KeyError:
        return None
    if tuple(map(type, values)) != _UP_TYPES or "enc" in obj:
        return None
    dev, rnd, base, seq, n, chunk, loss, scales_raw, q_raw = values
    size = len(q_raw) if params is None else params
    sub = obj.get("sub", 0)
    meta = obj.get("meta")
    sig = obj.get("sig")
    if not (
        rnd >= 1
        and base >= 0
        and 0 <= seq <= MAX_SEQ
        and type(sub) is int
        and sub >= 0
        and 1 <= n <= max_samples
        and 1 <= chunk <= MAX_CHUNK
        and -MAX_LOSS <= loss <= MAX_LOSS  # false for NaN and ±inf too
        and len(q_raw) == size
        and len(scales_raw) == 4 * chunk_count(size, chunk)
        and (topic_dev is None or dev == topic_dev)
        and is_valid_id(dev)
        and (meta is not None or "meta" not in obj)
        and (meta is None or _common_meta(meta))
        and (sig is not None or "sig" not in obj)
        and (sig is None or _signed_tail(data, sig))
    ):
        return None
    # A little-endian view is native float32 on the hosts gateways run on (and still correct, non-native, elsewhere).
    scales = np.frombuffer(scales_raw, dtype="<f4")
    if not scales_in_range(scales):
        return None
    up = object.__new__(Up)
    # The fields straight into the instance's __dict__: it stays frozen to its users, without 15 __setattr__ calls.
    up.__dict__.update(
        dev=dev,
        round=rnd,
        base=base,
        n=n,
        loss=loss,
        seq=seq,
        chunk=chunk,
        scales=scales,
        q=np.frombuffer(q_raw, dtype=np.int8),
        sub=sub,
        meta=meta,
        sig=sig,
        enc=INT8,
        idx=None,
        p=None,
    )
    return up


def _common_meta(meta: Any) -> bool:
    """Every ``meta`` key a gateway reads present with its usual type, the battery in 0..1."""
    return (
        type(meta) is dict
        and tuple(map(type, map(meta.get, _META_KEYS))) == _META_COMMON
        and 0.0 <= meta["battery"] <= 1.0
    )


def _signed_tail(data: bytes, sig: Any) -> bool:
    """The MAC covers the bytes before a fixed tail, so `sig` must be exactly that tail (see flcore.signing)."""
    return isinstance(sig, bytes) and len(sig) == SIG_BYTES and bytes(data[-TAIL_BYTES:]) == SIG_TAIL + sig


@dataclass(frozen=True, eq=False)
class Task:
    """The retained round announcement a gateway publishes to its devices; ``enc`` (and ``topk``, the kept fraction
    of a topk update) names the encoding the devices should use, None = their own setting (``flcore.encodings``)."""

    round: int
    base: int
    layers: tuple[int, ...]
    w: np.ndarray
    lr: float
    epochs: int
    batch: int
    chunk: int
    deadline: float
    min_battery: float
    select: list[str] | float | None = None
    sub: int = 0
    done: bool = False
    enc: str | None = None
    topk: float | None = None

    @property
    def spec(self) -> ModelSpec:
        return ModelSpec(self.layers)

    def encode(self) -> bytes:
        return pack(
            _without_none(
                [
                    ("v", WIRE_VERSION),
                    ("t", "task"),
                    ("round", self.round),
                    ("base", self.base),
                    ("layers", list(self.layers)),
                    ("w", _f32_bytes(self.w)),
                    ("lr", float(self.lr)),
                    ("epochs", self.epochs),
                    ("batch", self.batch),
                    ("chunk", self.chunk),
                    ("deadline", float(self.deadline)),
                    ("min_battery", float(self.min_battery)),
                    ("select", self.select),
                    ("sub", self.sub or None),
                    ("done", self.done or None),
                    ("enc", self.enc),
                    ("topk", self.topk),
                ]
            )
        )

    @classmethod
    def decode(cls, data: bytes, *, max_bytes: int = 64 << 20) -> Task:
        f = Fields(unpack(data, "task", max_bytes))
        rnd, base = f.integer("round", lo=0), f.integer("base", lo=0)
        raw_layers = f.array("layers")
        try:
            spec = ModelSpec(tuple(raw_layers))
        except ValueError as exc:
            raise f.fail("schema", str(exc)) from None
        w_raw = f.bin("w")
        if len(w_raw) != 4 * spec.param_count:
            raise f.fail("length", f"w has {len(w_raw)} bytes, the model needs {4 * spec.param_count}")
        w = _f32(w_raw)
        if not np.all(np.isfinite(w)):
            raise f.fail("schema", "w holds non-finite values")
        lr = f.finite("lr")
        epochs, batch = f.integer("epochs", lo=0, hi=1000), f.integer("batch", lo=1, hi=1 << 16)
        chunk = f.integer("chunk", lo=1, hi=MAX_CHUNK)
        deadline, min_battery = f.finite("deadline"), f.finite("min_battery")
        select = f.obj.get("select")
        if select is not None and not (
            (is_number(select) and 0.0 <= select <= 1.0)
            or (isinstance(select, list) and all(is_valid_id(d) for d in select))
        ):
            raise f.fail("schema", "select must be a fraction in 0..1 or a list of device ids")
        sub = f.integer("sub", optional=True, lo=0) or 0
        done = bool(f.flag("done", optional=True))
        # An encoding this receiver does not know is ignored like an unknown key: the device keeps its own.
        enc = f.text("enc", optional=True)
        topk = f.finite("topk", optional=True)
        if topk is not None and not 0.0 < topk <= 1.0:
            raise f.fail("schema", f"topk={topk} outside (0, 1]")
        known = enc if enc in ENCODINGS else None
        return cls(
            rnd, base, spec.layers, w, lr, epochs, batch, chunk, deadline, min_battery, select, sub, done, known, topk
        )


@dataclass(frozen=True)
class Ack:
    """The gateway's answer to one ``up``."""

    round: int | None
    seq: int | None
    status: str
    reason: str = ""

    def __post_init__(self) -> None:
        if self.status not in ACK_STATUSES:
            raise ValueError(f"ack status must be one of {ACK_STATUSES}, got {self.status!r}")

    def encode(self) -> bytes:
        return pack(
            {
                "v": WIRE_VERSION,
                "t": "ack",
                "round": self.round,
                "seq": self.seq,
                "status": self.status,
                "reason": self.reason,
            }
        )

    @classmethod
    def decode(cls, data: bytes) -> Ack:
        f = Fields(unpack(data, "ack", 4096))
        status, reason = f.text("status"), f.text("reason")
        if status not in ACK_STATUSES:
            raise f.fail("schema", f"status {status!r}")
        for key in ("round", "seq"):
            if f.obj.get(key) is not None:
                f.integer(key)
        return cls(f.round, f.seq, status, reason)


@dataclass(frozen=True, eq=False)
class Agg:
    """One gateway's aggregate for a global round: ``sum`` = Σ nᵢ·deltaᵢ over its ``k`` device updates.

    Two iotfl extensions, ignored by receivers that do not know them: ``bytes_up`` (wire key ``bytes``), the MQTT
    payload bytes of the ``up`` messages the gateway received for the round, and ``devices`` (wire key ``devs``),
    the ids of the devices whose updates were accepted.
    """

    gw: str
    round: int
    base: int
    n: int
    k: int
    sum: np.ndarray
    loss: float
    bytes_up: int = 0
    devices: tuple[str, ...] = ()

    def encode(self) -> bytes:
        return pack(
            {
                "v": WIRE_VERSION,
                "t": "agg",
                "gw": self.gw,
                "round": self.round,
                "base": self.base,
                "n": self.n,
                "k": self.k,
                "sum": _f32_bytes(self.sum),
                "loss": float(self.loss),
                "bytes": self.bytes_up,
                "devs": list(self.devices),
            }
        )

    @classmethod
    def decode(
        cls, data: bytes, *, params: int | None = None, max_bytes: int = 64 << 20, max_samples: int = MAX_SAMPLES
    ) -> Agg:
        """Validate and decode; ``n`` may not exceed ``k · max_samples`` (no device counts for more than the cap)."""
        f = Fields(unpack(data, "agg", max_bytes))
        gw = f.text("gw")
        if not is_valid_id(gw):
            raise f.fail("schema", f"gateway id {gw!r}")
        rnd, base = f.integer("round", lo=1, hi=MAX_INT32), f.integer("base", lo=0, hi=MAX_INT32)
        n, k = f.integer("n", lo=1), f.integer("k", lo=1, hi=MAX_INT32)
        if n > k * max_samples:
            raise f.fail("n_range", f"n={n} is more than k={k} updates of at most {max_samples} samples")
        raw = f.bin("sum")
        loss = f.finite("loss", "loss")
        if abs(loss) > MAX_LOSS:
            raise f.fail("loss", f"loss beyond ±{MAX_LOSS:g}")
        bytes_up = f.integer("bytes", optional=True, lo=0, hi=MAX_SEQ) or 0
        devices = f.array("devs", optional=True) or []
        if not all(is_valid_id(d) for d in devices):
            raise f.fail("schema", "devs must list device ids")
        if params is not None and len(raw) != 4 * params:
            raise f.fail("length", f"sum has {len(raw)} bytes, the model needs {4 * params}")
        if len(raw) % 4:
            raise f.fail("length", "sum is not a whole number of float32")
        total = _f32(raw)
        if not np.all(np.isfinite(total)):
            raise f.fail("scale", "sum holds non-finite values")
        if np.any(np.abs(total) > n * 127 * MAX_SCALE):
            raise f.fail("scale", "sum is beyond what n samples of capped updates can add up to")
        return cls(gw, rnd, base, n, k, total, loss, bytes_up, tuple(devices))


@dataclass(frozen=True)
class Status:
    """A device's retained status (also its Last Will with ``state="offline"``).

    Beyond the contract's fields, ``gw`` names the device's gateway and ``round``/``sub``/``skip`` tell the gateway
    that the device declined that task (and why), so a round can close as soon as every live device has answered.
    """

    dev: str
    state: str
    battery: float | None = None
    rssi: int | None = None
    ram_class: str | None = None
    fw: str | None = None
    gw: str | None = None
    round: int | None = None
    sub: int | None = None
    skip: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.state not in DEVICE_STATES:
            raise ValueError(f"state must be one of {DEVICE_STATES}, got {self.state!r}")

    def encode(self) -> bytes:
        return pack(
            _without_none(
                [
                    ("v", WIRE_VERSION),
                    ("t", "status"),
                    ("dev", self.dev),
                    ("state", self.state),
                    ("battery", self.battery),
                    ("rssi", self.rssi),
                    ("ram_class", self.ram_class),
                    ("fw", self.fw),
                    ("gw", self.gw),
                    ("round", self.round),
                    ("sub", self.sub),
                    ("skip", self.skip),
                ]
                + sorted(self.extra.items())
            )
        )

    @classmethod
    def decode(cls, data: bytes) -> Status:
        f = Fields(unpack(data, "status", 16384))
        dev, state = f.text("dev"), f.text("state")
        if not is_valid_id(dev) or state not in DEVICE_STATES:
            raise f.fail("schema", f"dev {dev!r} / state {state!r}")
        battery = f.finite("battery", optional=True)
        known = {"v", "t", "dev", "state", "battery", "rssi", "ram_class", "fw", "gw", "round", "sub", "skip"}
        extra = {k: v for k, v in f.obj.items() if k not in known and isinstance(k, str)}
        return cls(
            dev,
            state,
            battery,
            f.integer("rssi", optional=True),
            f.text("ram_class", optional=True),
            f.text("fw", optional=True),
            f.text("gw", optional=True),
            f.integer("round", optional=True),
            f.integer("sub", optional=True),
            f.text("skip", optional=True),
            extra,
        )


__all__ = ["Ack", "Agg", "Status", "Task", "Up", "WireError", "MAX_SAMPLES", "MAX_UPDATE_BYTES"]
