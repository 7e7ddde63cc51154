# config.json: load, fill defaults, validate. `iotfl provision device` writes the file; see docs/firmware.md.
import json
from binascii import unhexlify

# Training RAM per class in bytes, as in flcore/resources.py (class0 never trains).
RAM_CLASSES = {"class0": 0, "class1": 10 * 1024, "class2": 50 * 1024, "constrained": 256 * 1024}

_DEFAULTS = {
    "fleet": "default",
    "wifi": None,
    "ram_class": "class2",
    "fw": "0.1.0",
    "battery": {"source": "fixed", "value": 1.0},
    # charge one training round takes: a device trains only when battery >= max(min_battery, floor) + cost
    "battery_cost": 0.05,
    "battery_floor": 0.10,
    "sensor": {"source": "synthetic", "features": 10, "classes": 5, "seed": 0},
    "max_samples": 64,
    "ota": None,
    "ack_timeout_ms": 10000,
    "max_resends": 3,
    "task_wait_ms": 5000,
    "connect_retries": 4,
    "sock_timeout_ms": 5000,
    "seed": 0,
    "debug": False,
    "hmac": None,  # the device's update-signing key, 64 hex digits; None sends unsigned updates
}
# the nested objects' defaults: broker, sleep, ota (module-level names are interned for good on the board, so few)
_NESTED = {
    "broker": {"port": 1883, "user": None, "password": None, "tls": False, "ca": None, "keepalive": 60},
    "sleep": {
        "deep": True,  # deep sleep between rounds (battery boards); False stays connected (mains power)
        "min_ms": 5000,
        "max_ms": 3600000,
        "default_ms": 60000,  # when the clock is unknown, or no task came
        "listen_ms": 3000,  # after answering, how long to wait for the next task before sleeping
        "margin_ms": 2000,  # wake this long after the deadline, when the next round has opened
        "done_ms": 3600000,
        "retry_ms": 30000,  # after Wi-Fi / broker failures
    },
    "ota": {"key": None, "max_boots": 3, "chunk_timeout_ms": 5000},
}


class ConfigError(ValueError):
    pass


def _is_id(value):
    if not isinstance(value, str) or not 1 <= len(value) <= 64:
        return False
    for ch in value:
        if not (ch.isalpha() or ch.isdigit() or ch == "_" or ch == "-") or ord(ch) > 127:
            return False
    return True


def _hex(text):
    # unhexlify, not a loop over the characters: each 1-char string would be interned on the board for good
    try:
        unhexlify(text)
        return True
    except ValueError:
        return False


def _merge(default, value, key):
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise ConfigError(key + " must be an object")
    out = dict(default)
    out.update(value)
    return out


def _num(cfg, key, lo, hi, where="", kind=float):
    """cfg[key] is a number (an integer when kind is int) in lo..hi; where: the enclosing object's name."""
    value = cfg[key]
    types = int if kind is int else (int, float)
    if isinstance(value, bool) or not isinstance(value, types) or not lo <= value <= hi:
        what = "an integer" if kind is int else "a number"
        where = where + "." if where else ""
        raise ConfigError(f"{where}{key} must be {what} in {lo}..{hi}, got {value!r}")


def validate(raw):
    """A complete config (defaults filled in) from the parsed JSON; raises ConfigError naming the bad key."""
    if not isinstance(raw, dict):
        raise ConfigError("config.json must hold an object")
    cfg = dict(_DEFAULTS)
    cfg.update(raw)
    for key in ("dev", "gw", "fleet"):
        if not _is_id(cfg.get(key)):
            raise ConfigError(key + " must match [A-Za-z0-9_-]{1,64}, got " + repr(cfg.get(key)))
    broker = cfg.get("broker")
    if not isinstance(broker, dict) or not isinstance(broker.get("host"), str) or not broker["host"]:
        raise ConfigError("broker.host is required")
    cfg["broker"] = _merge(_NESTED["broker"], broker, "broker")
    _num(cfg["broker"], "port", 1, 65535, "broker", int)
    _num(cfg["broker"], "keepalive", 0, 65535, "broker", int)
    if (cfg["broker"]["user"] is None) != (cfg["broker"]["password"] is None):
        raise ConfigError("broker.user and broker.password go together")
    if cfg["broker"]["tls"] and not isinstance(cfg["broker"]["ca"], str):
        raise ConfigError("broker.ca (the CA certificate file on the board) is required with broker.tls")
    wifi = cfg["wifi"]
    if wifi is not None:
        cfg["wifi"] = _merge({"password": "", "timeout_ms": 15000, "retries": 3}, wifi, "wifi")
        if not isinstance(cfg["wifi"].get("ssid"), str) or not cfg["wifi"]["ssid"]:
            raise ConfigError("wifi.ssid is required when wifi is given")
    if cfg["ram_class"] not in RAM_CLASSES:
        raise ConfigError("ram_class must be one of " + ", ".join(sorted(RAM_CLASSES)))
    if not isinstance(cfg["fw"], str) or not cfg["fw"]:
        raise ConfigError("fw must be a version string")
    bat = _merge({"source": "fixed", "value": 1.0, "divider": 2.0, "v_empty": 3.3, "v_full": 4.2},
                 cfg["battery"], "battery")  # fmt: skip
    if bat["source"] == "fixed":
        _num(bat, "value", 0, 1, "battery")
    elif bat["source"] == "adc":
        if "pin" not in bat:
            raise ConfigError("battery.pin is required when battery.source is adc")
        _num(bat, "pin", 0, 1000, "battery", int)
        _num(bat, "divider", 0.01, 100, "battery")
        if not bat["v_full"] > bat["v_empty"]:
            raise ConfigError("battery.v_full must be above battery.v_empty")
    else:
        raise ConfigError("battery.source must be fixed or adc")
    cfg["battery"] = bat
    for key in ("battery_cost", "battery_floor"):
        _num(cfg, key, 0, 1)
    if not isinstance(cfg["sensor"], dict):
        raise ConfigError("sensor must be an object")
    for key, lo, hi in (
        ("max_samples", 1, 100000),
        ("ack_timeout_ms", 100, 600000),
        ("max_resends", 0, 100),
        ("task_wait_ms", 0, 600000),
        ("connect_retries", 0, 100),
        ("sock_timeout_ms", 100, 600000),
    ):
        _num(cfg, key, lo, hi, "", int)
    cfg["sleep"] = _merge(_NESTED["sleep"], cfg.get("sleep"), "sleep")
    for key in ("min_ms", "max_ms", "default_ms", "listen_ms", "margin_ms", "done_ms", "retry_ms"):
        _num(cfg["sleep"], key, 0, 7 * 24 * 3600 * 1000, "sleep", int)
    if cfg["sleep"]["min_ms"] > cfg["sleep"]["max_ms"]:
        raise ConfigError("sleep.min_ms must not exceed sleep.max_ms")
    key = cfg["hmac"]
    if key is not None and not (isinstance(key, str) and len(key) == 64 and _hex(key)):
        raise ConfigError("hmac must be 64 hex digits (the device's update-signing key)")  # the key is not echoed
    if cfg["ota"] is not None:
        ota = _merge(_NESTED["ota"], cfg["ota"], "ota")
        if not isinstance(ota["key"], str) or len(ota["key"]) < 16:
            raise ConfigError("ota.key must be a string of at least 16 characters (the fleet's OTA secret)")
        _num(ota, "max_boots", 1, 100, "ota", int)
        _num(ota, "chunk_timeout_ms", 100, 600000, "ota", int)
        cfg["ota"] = ota
    return cfg


def load(path="config.json"):
    try:
        with open(path) as f:
            raw = json.load(f)
    except OSError:
        raise ConfigError(path + " not found: provision the board with `iotfl provision device`") from None
    except ValueError:
        raise ConfigError(path + " is not valid JSON") from None
    return validate(raw)
