# The task message of wire v1, read and validated (decode.py holds the shared envelope checks). Loaded only when
# a task has to be judged: delivering an update for a known task needs none of this.

from decode import envelope, int_field
from layers import check_layers, param_count


def is_valid_id(value):
    if not isinstance(value, str) or not 1 <= len(value) <= 64:
        return False
    for ch in value:
        if ch not in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-":
            return False
    return True


def _finite(obj, key):
    v = obj.get(key)
    # v - v is nan for inf and nan
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v - v != 0:
        raise ValueError(key + " must be a finite number")
    return float(v)


def _fraction(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1


def decode_task(buf):
    """Validate a task message; w is a memoryview into buf (keep buf alive while using it)."""
    obj = envelope(buf, "task")
    layers = check_layers(obj.get("layers"))
    params = param_count(layers)
    w = obj.get("w")
    if not isinstance(w, memoryview) or len(w) != 4 * params:
        raise ValueError(f"w must be bin of {4 * params} bytes")
    # a float32 is inf or nan when its exponent bits are all ones (little-endian: bytes 3 and 2)
    for k in range(3, len(w), 4):
        if w[k] & 0x7F == 0x7F and w[k - 1] & 0x80:
            raise ValueError("w holds non-finite values")
    select = obj.get("select")
    if isinstance(select, list):
        for dev in select:
            if not is_valid_id(dev):
                raise ValueError("select lists a bad device id")
    elif select is not None and not _fraction(select):
        raise ValueError("select must be a fraction in 0..1 or a list of device ids")
    done = obj.get("done", False)
    if done is not True and done is not False:
        raise ValueError("done must be a bool")
    task = {"layers": layers, "P": params, "w": w, "select": select, "done": done, "sub": 0}
    if "sub" in obj:
        task["sub"] = int_field(obj, "sub", 0)
    for key in ("round", "base", "epochs", "batch", "chunk"):
        # bounds: batch and chunk from 1; epochs up to 1000, batch and chunk up to 65536 (as quant.MAX_CHUNK)
        lo = 1 if key in ("batch", "chunk") else 0
        hi = None if key in ("round", "base") else 1000 if key == "epochs" else 1 << 16
        task[key] = int_field(obj, key, lo, hi)
    for key in ("lr", "deadline", "min_battery"):
        task[key] = _finite(obj, key)
    return task
