"""The caps receivers apply to wire messages (``flcore.messages``): what hostile input cannot exceed."""

from __future__ import annotations

from flcore.encodings import MAX_SCALE

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

__all__ = ["MAX_INT32", "MAX_LOSS", "MAX_PARAMS", "MAX_SAMPLES", "MAX_SCALE", "MAX_SEQ", "MAX_UPDATE_BYTES"]
