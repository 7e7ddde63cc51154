# The model's shape: the layer widths a task may name and what follows from them. A module of its own so the
# network phase can validate a task without loading the MLP's training code.

from micropython import const

_MAX_WIDTH = const(4096)
_MAX_DEPTH = const(8)


def check_layers(layers):
    if not isinstance(layers, (list, tuple)) or not 2 <= len(layers) <= _MAX_DEPTH + 1:
        raise ValueError("layers must list 2..9 widths")
    for width in layers:
        if isinstance(width, bool) or not isinstance(width, int) or not 1 <= width <= _MAX_WIDTH:
            raise ValueError("each layer width must be an int in 1..4096")
    return layers


def param_count(layers):
    total = 0
    for i in range(len(layers) - 1):
        total += (layers[i] + 1) * layers[i + 1]
    return total


def footprint(layers, batch=1):
    """flcore's training-memory rule (parameters, gradients, a batch of activations): the fleet's admission test."""
    return 4 * (2 * param_count(layers) + batch * sum(layers) * 2)
