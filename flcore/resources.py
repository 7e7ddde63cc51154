"""Device RAM classes (from the IoT tutorial) and whether a model fits one for training."""

from __future__ import annotations

from flcore.model import ModelSpec

# RAM available for training per class, in bytes. Class 0 (< 10 KB sensors) never trains.
RAM_CLASSES: dict[str, int] = {
    "class0": 0,
    "class1": 10 * 1024,
    "class2": 50 * 1024,
    "constrained": 256 * 1024,
}


def can_train(spec: ModelSpec, ram_class: str, batch: int) -> bool:
    """True when the model's training footprint (parameters, gradients, one batch) fits the class's RAM."""
    if ram_class not in RAM_CLASSES:
        raise ValueError(f"unknown RAM class {ram_class!r}; known: {', '.join(RAM_CLASSES)}")
    return 0 < spec.footprint_bytes(batch) <= RAM_CLASSES[ram_class]


def parse_class_map(text: str, *, what: str, lo: float, hi: float, lo_open: bool = True) -> dict[str, float]:
    """``"class1=0.5,class2=0.75"`` as ``{"class1": 0.5, "class2": 0.75}``: known RAM classes, each value a number
    in (lo, hi] (or [lo, hi] with ``lo_open=False``); a ValueError naming ``what`` otherwise."""
    out: dict[str, float] = {}
    for item in (part.strip() for part in text.split(",")):
        name, sep, raw = item.partition("=")
        name = name.strip()
        if not sep or name not in RAM_CLASSES:
            raise ValueError(f"{what}: {item!r} is not CLASS=VALUE with CLASS one of {', '.join(RAM_CLASSES)}")
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"{what}: {raw.strip()!r} is not a number") from None
        if not (lo < value <= hi if lo_open else lo <= value <= hi):
            raise ValueError(f"{what}: {name}={value:g} is outside {'(' if lo_open else '['}{lo:g}, {hi:g}]")
        out[name] = value
    return out


def class_map_text(values: dict[str, float]) -> str:
    """The inverse of ``parse_class_map``."""
    return ",".join(f"{name}={value:g}" for name, value in values.items())
