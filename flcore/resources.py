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
