"""Wire format v1: the ``up``, ``task``, ``ack``, ``agg`` and ``status`` messages as frozen dataclasses.

``encode()`` writes the contract's msgpack map (keys in field order, optional fields omitted when unset);
``decode()`` validates every field and raises ``flcore.errors.WireError`` with a reason code on the first problem,
in the order the contract lists the checks. Unknown keys are ignored for forward compatibility.

One module per message: ``up`` (device → gateway), ``task`` (gateway → devices), ``control`` (``ack`` and
``status``), ``agg`` (gateway → cloud); ``limits`` holds the caps they share. Import them from here.
"""

from __future__ import annotations

from flcore.errors import WireError
from flcore.messages.agg import Agg
from flcore.messages.control import ACK_STATUSES, DEVICE_STATES, Ack, Status
from flcore.messages.limits import (
    MAX_INT32,
    MAX_LOSS,
    MAX_PARAMS,
    MAX_SAMPLES,
    MAX_SCALE,
    MAX_SEQ,
    MAX_UPDATE_BYTES,
)
from flcore.messages.task import Task
from flcore.messages.up import Up

__all__ = [
    "ACK_STATUSES",
    "DEVICE_STATES",
    "MAX_INT32",
    "MAX_LOSS",
    "MAX_PARAMS",
    "MAX_SAMPLES",
    "MAX_SCALE",
    "MAX_SEQ",
    "MAX_UPDATE_BYTES",
    "Ack",
    "Agg",
    "Status",
    "Task",
    "Up",
    "WireError",
]
