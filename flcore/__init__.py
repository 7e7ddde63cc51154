"""iotfl's pure core: model spec, quantization, wire messages, aggregation, topics, datasets. No I/O here."""

from flcore.errors import WireError
from flcore.fedavg import WeightedSum
from flcore.messages import Ack, Agg, Status, Task, Up
from flcore.model import ModelSpec
from flcore.quantize import dequantize, quantize
from flcore.topics import GatewayTopics

__all__ = [
    "Ack",
    "Agg",
    "GatewayTopics",
    "ModelSpec",
    "Status",
    "Task",
    "Up",
    "WeightedSum",
    "WireError",
    "dequantize",
    "quantize",
]
