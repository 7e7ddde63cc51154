# The test board: the same API as firmware/board.py for the unix MicroPython, put first on the import path.
#
# No radio (the host network is up), no real sleeping: deepsleep() and reset() append a line to board.log and
# end the interpreter (the test starts it again, as a wake-up would); the battery and the clock can be set from
# board.json; read_samples() reads samples.bin written by the test:
#   b"IFS1", n (u32 LE), features (u32 LE), n*features float32 LE, n label bytes.
import gc
import json
import struct
import time
from array import array

LOG = "board.log"
_opts = None
debug = False
peak = 0


def _options():
    global _opts
    if _opts is None:
        try:
            with open("board.json") as f:
                _opts = json.load(f)
        except OSError:
            _opts = {}
    return _opts


def event(*words):
    line = " ".join(str(w) for w in words)
    with open(LOG, "a") as f:
        f.write(line + "\n")
    print("BOARD", line)


def ticks_ms():
    return time.ticks_ms()


def ticks_diff(a, b):
    return time.ticks_diff(a, b)


def ticks_add(t, delta):
    return time.ticks_add(t, delta)


def sleep_ms(ms):
    # backoff sleeps happen for real but short: the waits they bound are measured with ticks
    cap = int(_options().get("sleep_cap_ms", 50))
    time.sleep_ms(min(ms, cap))


def wifi_connect(ssid, password, timeout_ms=15000, retries=3):
    event("wifi", ssid)
    return "127.0.0.1"


def wifi_off():
    pass


def rssi():
    return int(_options().get("rssi", -55))


def sync_time(timeout_s=3):
    return True


def unix_time():
    return time.time() + float(_options().get("clock_offset", 0))


def battery(cfg):
    level = _options().get("battery")
    if level is None:
        return float(cfg.get("value", 1.0))
    return float(level)


def unique_id():
    return "test"


def deepsleep(ms):
    event("deepsleep", int(ms))
    raise SystemExit(0)


def reset():
    event("reset")
    raise SystemExit(0)


def restart():
    event("restart")
    raise SystemExit(0)


def mem(tag):
    global peak
    if debug:
        gc.collect()
        used = gc.mem_alloc()
        peak = max(peak, used)
        print("MEM", tag, used, gc.mem_free(), peak)


def read_samples(cfg, max_samples):
    path = _options().get("samples", "samples.bin")
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) != 12 or head[:4] != b"IFS1":
            raise ValueError(path + " is not a samples file")
        total, features = struct.unpack("<II", head[4:])
        n = min(total, max_samples)
        gc.collect()
        xs = array("f", (0.0 for _ in range(n * features)))
        f.readinto(xs)
        f.seek(12 + 4 * total * features)
        ys = bytearray(n)
        f.readinto(ys)
    return xs, ys, n
