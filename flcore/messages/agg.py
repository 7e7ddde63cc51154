"""The ``agg`` message: one gateway's weighted sum of its devices' updates for a round, sent to the cloud."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flcore.messages.limits import MAX_INT32, MAX_LOSS, MAX_SAMPLES, MAX_SCALE, MAX_SEQ
from flcore.personal import Pers
from flcore.schema import WIRE_VERSION, Fields, f32_array, f32_bytes, is_number, pack, unpack
from flcore.topics import is_valid_id


@dataclass(frozen=True, eq=False)
class Agg:
    """One gateway's aggregate for a global round: ``sum`` = Σ nᵢ·deltaᵢ over its ``k`` device updates.

    Three iotfl extensions, ignored by receivers that do not know them: ``bytes_up`` (wire key ``bytes``), the MQTT
    payload bytes of the ``up`` messages the gateway received for the round, ``devices`` (wire key ``devs``),
    the ids of the devices whose updates were accepted, and ``pers`` (optional, absent when no update carried
    them), the sums of the accepted updates' local accuracies ``{"p": Σ pacc, "g": Σ gacc, "c": count}``.
    ``cover`` (optional, float32 per parameter, 0..n): when some updates trained a width-sliced sub-model
    (flcore.hetero), the samples behind each parameter; the receiver averages parameter i as ``sum[i] / cover[i]``
    (absent: every parameter over ``n``).
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
    pers: Pers | None = None
    cover: np.ndarray | None = None

    def encode(self) -> bytes:
        pers = {} if self.pers is None else {"pers": {"p": self.pers.p, "g": self.pers.g, "c": self.pers.c}}
        cover = {} if self.cover is None else {"cover": f32_bytes(self.cover)}
        return pack(
            {
                "v": WIRE_VERSION,
                "t": "agg",
                "gw": self.gw,
                "round": self.round,
                "base": self.base,
                "n": self.n,
                "k": self.k,
                "sum": f32_bytes(self.sum),
                "loss": float(self.loss),
                "bytes": self.bytes_up,
                "devs": list(self.devices),
                **pers,
                **cover,
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
        pers = _pers(f, k)
        if params is not None and len(raw) != 4 * params:
            raise f.fail("length", f"sum has {len(raw)} bytes, the model needs {4 * params}")
        if len(raw) % 4:
            raise f.fail("length", "sum is not a whole number of float32")
        total = f32_array(raw)
        if not np.all(np.isfinite(total)):
            raise f.fail("scale", "sum holds non-finite values")
        if np.any(np.abs(total) > n * 127 * MAX_SCALE):
            raise f.fail("scale", "sum is beyond what n samples of capped updates can add up to")
        return cls(gw, rnd, base, n, k, total, loss, bytes_up, tuple(devices), pers, _cover(f, n, len(total)))


def _cover(f: Fields, n: int, size: int) -> np.ndarray | None:
    """The optional ``cover``: float32 per parameter, each in 0..n."""
    raw = f.obj.get("cover")
    if raw is None:
        return None
    if not isinstance(raw, bytes) or len(raw) != 4 * size:
        raise f.fail("length", f"cover must be bin of {4 * size} bytes (one float32 per parameter)")
    cover = f32_array(raw)
    if not np.all(np.isfinite(cover)) or np.any(cover < 0) or np.any(cover > n):
        raise f.fail("schema", f"cover values must lie in 0..n={n}")
    return cover


def _pers(f: Fields, k: int) -> Pers | None:
    """The optional ``pers`` sums: ``c`` devices (at most ``k``), each accuracy sum in 0..c."""
    raw = f.mapping("pers", optional=True)
    if raw is None:
        return None
    p, g, c = raw.get("p"), raw.get("g"), raw.get("c")
    top = c + 1e-6 if type(c) is int else 0  # float sums of fractions may round a hair past c
    if not (is_number(p) and is_number(g) and type(c) is int and 0 <= c <= k and 0 <= p <= top and 0 <= g <= top):
        raise f.fail("schema", f"pers must be {{p, g, c}} with 0 <= p, g <= c <= k={k}")
    return Pers(float(p), float(g), c)
