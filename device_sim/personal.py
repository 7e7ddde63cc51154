"""A device's personal head: fine-tuned on its own training split over the global body, kept between rounds (never
uploaded), and judged with the global model on the samples it holds out (``flcore.personal``).

The body under the head is the global model the task carries, not the device's new local model: the personal model
a device serves is global body + personal head, and on a quick check (digits, α = 0.1, docs/learning.md) a head
fitted over the new local body was no better. Each round the head starts again from the task's global head: a head
carried over from the last round fits the device's training split better and its held-out samples worse (0.82 vs
0.93 after 20 rounds on that check), so the device keeps its head between rounds only as the model it serves.

The head is softmax regression on the body's features, in numpy: with the body frozen its features are computed
once, and a few hundred ``[h × classes]`` steps cost less than handing them to torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from device_sim.policy import draw, shuffle_seed
from flcore.messages import Task
from flcore.model import ModelSpec
from flcore.personal import features, head_slice, local_split, splice_head


def fit_head(
    spec: ModelSpec,
    w: np.ndarray,
    head: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    epochs: int,
    lr: float,
    batch: int,
    seed: int,
) -> np.ndarray:
    """SGD on the last layer only, from ``head`` over the frozen body of ``w``: the new head (flat, float32)."""
    if len(x) == 0 or len(x) != len(y) or batch < 1 or epochs < 0:
        raise ValueError(f"need samples with labels, batch >= 1 and epochs >= 0, got {len(x)}, {batch}, {epochs}")
    h = features(spec, w, x).astype(np.float64)
    classes, width = spec.layers[-1], spec.layers[-2]
    flat = np.asarray(head, dtype=np.float64).copy()
    weight, bias = flat[: classes * width].reshape(classes, width), flat[classes * width :]
    labels = np.asarray(y, dtype=np.int64)
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        order = rng.permutation(len(h))
        for start in range(0, len(h), batch):
            idx = order[start : start + batch]
            z = h[idx] @ weight.T + bias
            z -= z.max(axis=1, keepdims=True)
            p = np.exp(z)
            p /= p.sum(axis=1, keepdims=True)
            p[np.arange(len(idx)), labels[idx]] -= 1.0  # d(mean cross-entropy)/dz, times the batch size
            weight -= lr * (p.T @ h[idx]) / len(idx)
            bias -= lr * p.mean(axis=0)
    if not np.all(np.isfinite(flat)):
        raise ArithmeticError("head fine-tuning diverged (non-finite weights); lower the learning rate")
    return flat.astype(np.float32)


def few_shot(
    spec: ModelSpec, w: np.ndarray, x: np.ndarray, y: np.ndarray, steps: int = 20, lr: float = 0.1
) -> np.ndarray:
    """A new device's model after ``steps`` full-batch steps on the head of the global ``w`` with its few labelled
    examples ``(x, y)`` (5–10 are enough to shift the head towards the device's label mix)."""
    head = fit_head(spec, w, w[head_slice(spec)], x, y, steps, lr, len(x), 0)
    return splice_head(spec, w, head)


def personal_seed(seed: int, dev: str, task: Task) -> int:
    """The seed of a device's head fine-tuning shuffles for one task (apart from its training's)."""
    return shuffle_seed(seed, dev, task.round, task.sub) ^ 0x5EED


@dataclass(eq=False)
class Personal:
    """One device's personalization state: its local split (positions in its shard) and the personal head it
    serves, once fitted (never uploaded)."""

    train: np.ndarray
    test: np.ndarray
    head: np.ndarray | None = None

    @classmethod
    def of(cls, seed: int, dev: str, n: int) -> Personal:
        """The split of a device with ``n`` samples, fixed by the fleet's ``seed`` and the device id."""
        train, test = local_split(n, int(draw(seed, dev, 0, 0, "split") * 2**31))
        return cls(train, test)

    def step(self, task: Task, x: np.ndarray, y: np.ndarray, seed: int) -> tuple[float, float] | None:
        """Fine-tune the head for ``task.personal`` epochs on the training split of the shard ``(x, y)``; the held-out
        accuracies (personal, global) of the task's model, None for a device that holds nothing out."""
        if len(self.test) == 0:
            return None
        spec, w = task.spec, task.w
        start = w[head_slice(spec)]
        self.head = fit_head(spec, w, start, x[self.train], y[self.train], task.personal, task.lr, task.batch, seed)
        x_test, y_test = x[self.test], y[self.test]
        personal, _ = spec.evaluate(splice_head(spec, w, self.head), x_test, y_test)
        global_, _ = spec.evaluate(w, x_test, y_test)
        return personal, global_


__all__ = ["Personal", "few_shot", "fit_head", "personal_seed"]
