"""The ``task`` message: the retained round announcement a gateway publishes to its devices."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flcore.encodings import ENCODINGS
from flcore.model import ModelSpec
from flcore.quantize import MAX_CHUNK
from flcore.schema import WIRE_VERSION, Fields, f32_array, f32_bytes, is_number, pack, unpack, without_none
from flcore.topics import is_valid_id


@dataclass(frozen=True, eq=False)
class Task:
    """The retained round announcement a gateway publishes to its devices; ``enc`` (and ``topk``, the kept fraction
    of a topk update) names the encoding the devices should use, None = their own setting (``flcore.encodings``);
    ``personal`` > 0 asks devices to fine-tune a personal head for that many epochs and report local accuracies."""

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
    personal: int = 0
    # The width each named RAM class trains at (flcore.hetero); a class not named trains the whole model.
    widths: dict[str, float] | None = None

    @property
    def spec(self) -> ModelSpec:
        return ModelSpec(self.layers)

    def encode(self) -> bytes:
        return pack(
            without_none(
                [
                    ("v", WIRE_VERSION),
                    ("t", "task"),
                    ("round", self.round),
                    ("base", self.base),
                    ("layers", list(self.layers)),
                    ("w", f32_bytes(self.w)),
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
                    ("personal", self.personal or None),
                    ("widths", self.widths or None),
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
        w = f32_array(w_raw)
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
        personal = f.integer("personal", optional=True, lo=0, hi=1000) or 0
        widths = f.mapping("widths", optional=True)
        if widths is not None and not all(
            is_valid_id(k) and is_number(v) and 0.0 < v <= 1.0 for k, v in widths.items()
        ):
            raise f.fail("schema", "widths must map RAM class names to fractions in (0, 1]")
        return cls(
            rnd,
            base,
            spec.layers,
            w,
            lr,
            epochs,
            batch,
            chunk,
            deadline,
            min_battery,
            select,
            sub,
            done,
            known,
            topk,
            personal,
            {str(k): float(v) for k, v in widths.items()} if widths else None,
        )
