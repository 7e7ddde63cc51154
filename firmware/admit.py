# Whether this device trains on a task: RAM class, selection and battery. Loaded only when a new task is judged.
import hashlib

# training RAM per class in bytes, as flcore/resources.py
RAM_CLASSES = {"class0": 0, "class1": 10240, "class2": 51200, "constrained": 262144}


def draw(*args):
    """A number in [0, 1) fixed by its arguments (salt, seed, dev, round, sub) (select fractions)."""
    h = hashlib.sha256(":".join(str(a) for a in args).encode()).digest()
    return int.from_bytes(h[:4], "little") / 4294967296


def decide(cfg, battery, t):
    """None to train, else the skip reason: ram, select or battery (the charge-to-spare rule)."""
    layers = t["layers"]
    if 4 * (2 * t["P"] + t["batch"] * sum(layers) * 2) > RAM_CLASSES[cfg["ram_class"]]:
        return "ram"
    select = t["select"]
    dev = cfg["dev"]
    if isinstance(select, list):
        if dev not in select:
            return "select"
    elif select is not None and draw("select", cfg["seed"], dev, t["round"], t["sub"]) >= select:
        return "select"
    if battery < max(t["min_battery"], cfg["battery_floor"]) + cfg["battery_cost"] - 1e-9:
        return "battery"
    return None
