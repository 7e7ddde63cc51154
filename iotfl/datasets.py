"""Dataset sources at the edge: ``digits`` (scikit-learn's bundled copy), ``sensors``, ``har``, ``csv:PATH``."""

from __future__ import annotations

from pathlib import Path

from flcore import datasets
from flcore.datasets import Dataset

NAMES = ("digits", "sensors", "har", "csv:PATH")


def load(spec: str, seed: int) -> Dataset:
    """The dataset named by ``spec``; raises ``ValueError`` with a readable message for a bad spec or file."""
    if spec == "digits":
        try:
            from sklearn.datasets import load_digits
        except ImportError:
            raise ValueError("the digits dataset needs scikit-learn: pip install 'iotfl[cloud]'") from None
        bunch = load_digits()
        return datasets.prepare("digits", bunch.data, bunch.target, seed, hidden=(32,))
    if spec == "sensors":
        return datasets.sensors(seed)
    if spec == "har":
        return datasets.har(seed)
    if spec.startswith("csv:"):
        path = Path(spec[4:]).expanduser()
        try:
            text = path.read_text()
        except OSError as exc:
            raise ValueError(f"cannot read {path}: {exc.strerror}") from None
        try:
            x, y, classes = datasets.parse_csv(text)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
        return datasets.prepare(f"csv:{path.name}", x, y, seed, hidden=(32,), classes=classes)
    raise ValueError(f"unknown dataset {spec!r}; choose one of {', '.join(NAMES)}")
