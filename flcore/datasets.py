"""Datasets as pure values: synthetic sensor and HAR generators, CSV text parsing, the stratified split.

Reading files (the scikit-learn digits, a user's CSV) happens at the edge (``iotfl.datasets``); everything here
is a function of its arguments and a seed.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

import numpy as np

HAR_ACTIVITIES = ("walking", "running", "sitting", "standing", "upstairs", "downstairs")


@dataclass(frozen=True, eq=False)
class Dataset:
    """A standardized train/test split and the MLP shape that fits it."""

    name: str
    layers: tuple[int, ...]
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: tuple[str, ...]


def stratified_split(y: np.ndarray, test_fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Train and test indices with each class split ``1 - test_fraction : test_fraction``."""
    train, test = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        cut = int(round(len(idx) * test_fraction))
        if len(idx) > 1:
            cut = min(max(cut, 1), len(idx) - 1)
        test.append(idx[:cut])
        train.append(idx[cut:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def prepare(
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    seed: int,
    hidden: tuple[int, ...] = (32,),
    classes: tuple[str, ...] | None = None,
    test_fraction: float = 0.2,
) -> Dataset:
    """Split stratified by ``seed`` and standardize features with the training split's statistics."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    if x.ndim != 2 or len(x) != len(y) or len(y) < 4:
        raise ValueError(f"need a 2-D feature array with one label per row and at least 4 rows, got {x.shape}")
    n_classes = int(y.max()) + 1
    if classes is None:
        classes = tuple(str(c) for c in range(n_classes))
    train, test = stratified_split(y, test_fraction, np.random.default_rng(seed))
    mean = x[train].mean(axis=0)
    std = x[train].std(axis=0)
    std[std < 1e-8] = 1.0  # a constant column stays 0 instead of dividing by zero
    z = ((x - mean) / std).astype(np.float32)
    layers = (x.shape[1], *hidden, n_classes)
    return Dataset(name, layers, z[train], y[train], z[test], y[test], classes)


def sensors(seed: int, samples: int = 3125, features: int = 10, n_classes: int = 5, sigma: float = 0.5) -> Dataset:
    """The IoT tutorial's synthetic sensors: Gaussian features (σ ``sigma``), feature ``class mod features`` +1.0."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, size=samples)
    x = rng.normal(0.0, sigma, size=(samples, features))
    x[np.arange(samples), y % features] += 1.0
    return prepare("sensors", x, y, seed, hidden=(16,))


def _har_window(activity: int, rng: np.random.Generator, length: int, rate: float) -> np.ndarray:
    """One 3-axis accelerometer window (in g) of an activity, with per-window gait and sensor variation."""
    t = np.arange(length) / rate
    gravity_axis = np.array([0.0, 0.0, 1.0]) if activity not in (2,) else np.array([0.0, 0.7, 0.7])
    tilt = rng.normal(0.0, 0.08, 3)
    freq, amp = {0: (1.9, 0.35), 1: (2.8, 0.9), 2: (0.0, 0.0), 3: (0.0, 0.0), 4: (1.6, 0.45), 5: (2.1, 0.55)}[activity]
    freq *= rng.uniform(0.85, 1.15)
    amp *= rng.uniform(0.7, 1.3)
    phase = rng.uniform(0, 2 * np.pi)
    sway = np.array([0.4, 0.3, 1.0]) * amp
    if activity == 4:
        sway = sway * np.array([1.3, 0.6, 1.0])
    elif activity == 5:
        sway = sway * np.array([0.7, 1.2, 1.0])
    motion = np.outer(np.sin(2 * np.pi * freq * t + phase), sway)
    motion[:, 2] += 0.5 * amp * np.sin(4 * np.pi * freq * t + phase)
    noise = rng.normal(0.0, 0.03 if activity in (2, 3) else 0.08, size=(length, 3))
    return gravity_axis + tilt + motion + noise


def _har_features(window: np.ndarray, rate: float) -> np.ndarray:
    spectrum = np.abs(np.fft.rfft(window - window.mean(axis=0), axis=0))
    freqs = np.fft.rfftfreq(len(window), 1 / rate)
    magnitude = np.linalg.norm(window, axis=1)
    per_axis = [
        window.mean(axis=0),
        window.std(axis=0),
        window.min(axis=0),
        window.max(axis=0),
        np.abs(np.diff(window, axis=0)).mean(axis=0),
        freqs[spectrum.argmax(axis=0)],
    ]
    return np.concatenate([*per_axis, [magnitude.mean(), magnitude.std()]])


def har(seed: int, windows: int = 3000, length: int = 64, rate: float = 20.0) -> Dataset:
    """Synthetic human-activity windows (3-axis accelerometer at ``rate`` Hz) summarized as 20 features."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, len(HAR_ACTIVITIES), size=windows)
    x = np.stack([_har_features(_har_window(int(a), rng, length, rate), rate) for a in y])
    return prepare("har", x, y, seed, hidden=(32,), classes=HAR_ACTIVITIES)


def parse_csv(text: str) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Features, integer labels and class names from CSV text: label in the last column, header row optional.

    Labels are integers or strings, mapped to classes in sorted order. Raises ``ValueError`` naming the first
    bad line.
    """
    reader = csv.reader(io.StringIO(text))
    # keep each row's line in the file so errors name the right line even after blank lines
    numbered = [(reader.line_num, r) for r in reader if r and any(cell.strip() for cell in r)]
    rows = [r for _, r in numbered]
    if not rows:
        raise ValueError("the CSV file has no rows")

    def numeric(cell: str) -> bool:
        try:
            float(cell)
        except ValueError:
            return False
        return True

    # a header names columns: a word among the features, or a word above integer labels; a headerless file
    # with string labels ("5.1,3.5,setosa") starts with data
    first_label = rows[0][-1].strip()
    header = not all(numeric(c) for c in rows[0][:-1]) or (
        not numeric(first_label) and len(rows) > 1 and all(_is_int(r[-1].strip()) for r in rows[1:])
    )
    start = 1 if header else 0
    body = rows[start:]
    width = len(rows[0])
    if width < 2:
        raise ValueError("the CSV needs at least one feature column and a label column")
    features, labels = [], []
    for line, row in numbered[start:]:
        if len(row) != width:
            raise ValueError(f"line {line}: {len(row)} columns, expected {width}")
        try:
            features.append([float(c) for c in row[:-1]])
        except ValueError:
            raise ValueError(f"line {line}: a feature column is not a number") from None
        labels.append(row[-1].strip())
    if len(body) < 4:
        raise ValueError(f"the CSV has {len(body)} data rows; at least 4 are needed")
    x = np.array(features, dtype=np.float64)
    if not np.all(np.isfinite(x)):
        raise ValueError("the CSV holds non-finite feature values")
    if all(_is_int(v) for v in labels):
        names = sorted({int(v) for v in labels})
        classes = tuple(str(v) for v in names)
        index = {str(v): i for i, v in enumerate(names)}
        y = np.array([index[str(int(v))] for v in labels], dtype=np.int64)
    else:
        classes = tuple(sorted(set(labels)))
        index = {v: i for i, v in enumerate(classes)}
        y = np.array([index[v] for v in labels], dtype=np.int64)
    if len(classes) < 2:
        raise ValueError("the label column holds a single class; at least 2 are needed")
    return x, y, classes


def _is_int(value: str) -> bool:
    try:
        int(value)
    except ValueError:
        return False
    return True
