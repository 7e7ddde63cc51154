"""The ``up`` message: a device's encoded model delta, and its decoding with every contract check.

``Up.decode`` takes the common case (int8, the usual field types, every value valid) in one pass of a few
expressions; anything else, valid or not, goes through the per-field checks, which name the first problem in the
contract's order. Both give the same result for every payload the first one accepts (tests/flcore pin this).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import numpy as np

from flcore.encodings import ENCODINGS, F32, INT8, SIZED, TOPK, Encoded, parse, scales_in_range
from flcore.errors import WireError
from flcore.hetero import sub_layers
from flcore.messages.limits import MAX_LOSS, MAX_PARAMS, MAX_SAMPLES, MAX_SEQ, MAX_UPDATE_BYTES
from flcore.model import ModelSpec
from flcore.quantize import MAX_CHUNK, chunk_count
from flcore.schema import WIRE_VERSION, Fields, f32_bytes, pack, unpack, without_none
from flcore.signing import SIG_BYTES, SIG_TAIL, TAIL_BYTES, attach, sign
from flcore.topics import is_valid_id

_META_TYPES: dict[str, tuple[type, ...]] = {
    "battery": (float, int),
    "train_ms": (int,),
    "ram_class": (str,),
    "fw": (str,),
    "pacc": (float, int),
    "gacc": (float, int),
}
# Local held-out accuracies (personal head, global model): fractions, sent together or not at all.
_ACCURACY_KEYS = ("pacc", "gacc")

# The fields every `up` carries, in the order the contract checks them, and their types in the common case.
_UP_FIELDS = itemgetter("dev", "round", "base", "seq", "n", "chunk", "loss", "scales", "q")
_UP_TYPES = (str, int, int, int, int, int, float, bytes, bytes)
# The `meta` keys a simulated or MicroPython device sends, with their types, all present: the fast path's case.
_META_KEYS = tuple(k for k in _META_TYPES if k not in _ACCURACY_KEYS)
_META_COMMON = tuple(_META_TYPES[k][0] for k in _META_KEYS)
# dtype objects made once: np.frombuffer spends half its time turning a dtype argument like "<f4" into one.
_F32_WIRE = np.dtype("<f4")
_INT8 = np.dtype(np.int8)


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
    width: float | None = None

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
        width: float | None = None,
    ) -> Up:
        """An update carrying an encoded delta (``flcore.encodings.encode``); ``width`` < 1 when it is the delta of
        a width-sliced sub-model (``flcore.hetero``)."""
        p = body.size if body.enc == TOPK else None
        width = None if width is None or width >= 1.0 else width
        return cls(
            dev,
            round,
            base,
            n,
            loss,
            seq,
            body.chunk,
            body.scales,
            body.q,
            sub,
            meta,
            None,
            body.enc,
            body.idx,
            p,
            width,
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
            without_none(
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
                    ("scales", f32_bytes(self.scales)),
                    ("q", body.q_bytes()),
                    ("sub", self.sub or None),
                    ("meta", self.meta),
                    ("enc", None if self.enc == INT8 else self.enc),
                    ("p", body.size if self.enc in SIZED else None),
                    ("idx", body.idx_bytes()),
                    ("width", self.width),
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
        layers: tuple[int, ...] | None = None,
    ) -> Up:
        """Validate and decode; ``params`` is P of the round's model and ``layers`` its widths (a width-sliced update
        must hold exactly its sub-model's parameters), ``topic_dev`` the ``<dev>`` of the topic."""
        obj = unpack(data, "up", max_bytes)
        up = _decode_common(obj, data, params, topic_dev, max_samples)
        return up if up is not None else _decode_checked(obj, data, params, topic_dev, max_samples, layers)


def _decode_checked(
    obj: dict[str, Any],
    data: bytes,
    params: int | None,
    topic_dev: str | None,
    max_samples: int,
    layers: tuple[int, ...] | None = None,
) -> Up:
    """Every check, field by field in the contract's order: the first problem raises ``WireError``."""
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
    width = _width(f, enc, params, layers)
    # Without the round's P (a decoder on its own), an int8 update's P is len(q), an f32 one's len(q) / 4.
    size = params if params is not None else p if p is not None else len(q_raw) // (4 if enc == F32 else 1)
    if width is not None:
        size = len(q_raw) if layers is None else ModelSpec(sub_layers(layers, width)).param_count
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
        for key in ("battery", *_ACCURACY_KEYS):
            value = meta.get(key)
            if value is not None and not 0.0 <= value <= 1.0:
                raise f.fail("schema", f"meta.{key}={value} outside 0..1")
        if (meta.get("pacc") is None) != (meta.get("gacc") is None):
            raise f.fail("schema", "meta.pacc and meta.gacc come together")
    sig = f.obj.get("sig")
    if "sig" in f.obj and not _signed_tail(data, sig):
        raise f.fail("signature", "sig must be bin 32 and the last field of the map")
    return Up(dev, rnd, base, n, loss, seq, chunk, body.scales, body.q, sub, meta, sig, enc, body.idx, p, width)


def _width(f: Fields, enc: str, params: int | None, layers: tuple[int, ...] | None) -> float | None:
    """The optional ``width`` of a sliced update: a fraction in (0, 1) of an int8 delta; None for a whole one."""
    width = f.finite("width", optional=True)
    if width is None or width == 1.0:
        return None
    if not 0.0 < width < 1.0:
        raise f.fail("schema", f"width={width} outside (0, 1]")
    if enc != INT8:
        raise f.fail("enc", "a width-sliced update is int8")
    if params is not None and layers is None:
        raise f.fail("length", "a width-sliced update, and this receiver does not know the model's layers")
    return width


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
    if tuple(map(type, values)) != _UP_TYPES or "enc" in obj or "width" in obj:
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
    scales = np.frombuffer(scales_raw, _F32_WIRE)
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
        q=np.frombuffer(q_raw, _INT8),
        sub=sub,
        meta=meta,
        sig=sig,
        enc=INT8,
        idx=None,
        p=None,
        width=None,
    )
    return up


def _common_meta(meta: Any) -> bool:
    """Every ``meta`` key a gateway reads present with its usual type, the battery in 0..1, and no local
    accuracies (an update carrying them takes the per-field checks)."""
    return (
        type(meta) is dict
        and tuple(map(type, map(meta.get, _META_KEYS))) == _META_COMMON
        and 0.0 <= meta["battery"] <= 1.0
        and "pacc" not in meta
        and "gacc" not in meta
    )


def _signed_tail(data: bytes, sig: Any) -> bool:
    """The MAC covers the bytes before a fixed tail, so `sig` must be exactly that tail (see flcore.signing)."""
    return isinstance(sig, bytes) and len(sig) == SIG_BYTES and bytes(data[-TAIL_BYTES:]) == SIG_TAIL + sig
