# The test board: the same API as firmware/board.py for the unix MicroPython, installed in its place (compiled).
#
# No radio (the host network is up), no real sleeping: deepsleep() and reset() append a line to board.log and
# end the interpreter (the test starts it again, as a wake-up would); the battery and the clock can be set from
# board.json; read_samples() reads samples.bin written by the test:
#   b"IFS1", n (u32 LE), features (u32 LE), n*features float32 LE, n label bytes.
#
# Kept lean, since it sits in the heap of every phase: names bound rather than wrapped, few distinct names (each
# name a module uses is interned for good, and the heap-capped loop tests count every byte).
import gc
import json
import time

debug = False
peak = 0
ticks_ms = time.ticks_ms
ticks_diff = time.ticks_diff
ticks_add = time.ticks_add


_opts = None


def _opt(key, default):
    global _opts
    if _opts is None:
        try:
            with open("board.json") as f:
                _opts = json.load(f)
        except OSError:
            _opts = {}
    return _opts.get(key, default)


def event(*words):
    line = " ".join(str(w) for w in words)
    with open("board.log", "a") as f:
        f.write(line + "\n")
    print("BOARD", line)


def sleep_ms(ms):
    # backoff sleeps happen for real but short: the waits they bound are measured with ticks
    time.sleep_ms(min(ms, int(_opt("sleep_cap_ms", 50))))


def wifi_connect(*args):
    event("wifi", args[0])
    return "127.0.0.1"


def wifi_off():
    pass


def rssi():
    return int(_opt("rssi", -55))


def sync_time(*args):
    return True


def unix_time():
    return time.time() + float(_opt("clock_offset", 0))


def battery(cfg):
    return float(_opt("battery", cfg.get("value", 1.0)))


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
        n = gc.mem_alloc()
        peak = max(peak, n)
        print("MEM", tag, n, gc.mem_free(), peak)


def read_samples(cfg, n):
    # the reader lives in its own test module, so the network phases do not carry its code
    from samplefile import read

    return read(_opt("samples", "samples.bin"), n)
