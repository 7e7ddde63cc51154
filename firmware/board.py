# The one module that touches the hardware (ESP32 / Raspberry Pi Pico W).
#
# Everything board-specific sits here: Wi-Fi, the battery ADC, RSSI, deep sleep, reset, the clock and the
# sensor-reading hook. Tests put their own board.py earlier on the import path; replace read_samples() with
# your own sensor code (keep the signature).
import time

_wlan = None
debug = False  # main.py sets it from config.json
peak = 0
# time.time() counts from 2000-01-01 on boards whose port uses that epoch; unix seconds need this offset.
_EPOCH_2000 = 946684800


# bound names, not wrappers: each function object would cost heap in every phase
ticks_ms = time.ticks_ms
ticks_diff = time.ticks_diff
ticks_add = time.ticks_add
sleep_ms = time.sleep_ms


def _jitter(ms):
    import random

    return random.getrandbits(16) % (ms // 2 + 1)


def wifi_connect(ssid, password, timeout_ms=15000, retries=3):
    """Join the network; bounded retries with backoff + jitter. Returns the IP address or raises OSError."""
    global _wlan
    import network

    wlan = network.WLAN(network.STA_IF)
    wlan.active(True)
    _wlan = wlan
    if wlan.isconnected():
        return wlan.ifconfig()[0]
    backoff = 500
    for attempt in range(retries + 1):
        try:
            wlan.connect(ssid, password)
        except OSError as exc:
            print("wifi: connect call failed:", exc)
        start = time.ticks_ms()
        while time.ticks_diff(time.ticks_ms(), start) < timeout_ms:
            if wlan.isconnected():
                return wlan.ifconfig()[0]
            time.sleep_ms(100)
        print("wifi: no connection to", ssid, "attempt", attempt + 1)
        try:
            wlan.disconnect()
        except OSError:
            pass
        if attempt < retries:
            time.sleep_ms(backoff + _jitter(backoff))
            backoff = min(backoff * 2, 8000)
    raise OSError("wifi: could not join " + ssid)


def wifi_off():
    if _wlan is not None:
        try:
            _wlan.disconnect()
            _wlan.active(False)
        except OSError:
            pass


def rssi():
    if _wlan is None:
        return None
    try:
        return int(_wlan.status("rssi"))
    except (OSError, ValueError, TypeError):
        return None


def sync_time(timeout_s=3):
    """Set the RTC from NTP (bounded); False when the clock stays unknown."""
    try:
        import ntptime

        ntptime.timeout = timeout_s
        ntptime.settime()
        return True
    except Exception as exc:  # noqa: BLE001 - any failure leaves the clock unknown, never fatal
        print("ntp: clock not set:", exc)
        return False


def unix_time():
    """Seconds since 1970, or None while the clock has not been set (a board boots in 2000 or 2021)."""
    now = time.time()
    if time.gmtime(0)[0] == 2000:
        now += _EPOCH_2000
    return now if now > 1600000000 else None


def battery(cfg):
    """Charge as a fraction 0..1: a fixed value, or an ADC pin behind a voltage divider."""
    if cfg.get("source", "fixed") == "fixed":
        return float(cfg.get("value", 1.0))
    import machine

    adc = machine.ADC(machine.Pin(cfg["pin"]))
    try:
        adc.atten(machine.ADC.ATTN_11DB)  # ESP32: the full 0..3.3 V range
    except AttributeError:
        pass
    total = 0
    reads = 8
    for _ in range(reads):
        if hasattr(adc, "read_uv"):
            total += adc.read_uv() / 1000000
        else:
            total += adc.read_u16() * 3.3 / 65535
    volts = total / reads * float(cfg.get("divider", 2.0))
    empty = float(cfg.get("v_empty", 3.3))
    full = float(cfg.get("v_full", 4.2))
    level = (volts - empty) / (full - empty)
    return 0.0 if level < 0 else 1.0 if level > 1 else level


def unique_id():
    import binascii

    import machine

    return binascii.hexlify(machine.unique_id()).decode()


def deepsleep(ms):
    """Sleep with the radio off; the board wakes through a reset and runs boot.py and main.py again."""
    import machine

    wifi_off()
    if hasattr(machine, "deepsleep"):
        machine.deepsleep(ms)
    machine.lightsleep(ms)
    machine.reset()


def reset():
    import machine

    machine.reset()


def restart():
    """A soft reset: the interpreter starts over on a fresh heap (the next phase of a wake)."""
    import machine

    machine.soft_reset()


def mem(tag):
    """In debug mode print the live heap at a stage of the loop: MEM tag alloc free peak (highest alloc seen)."""
    global peak
    if debug:
        import gc

        gc.collect()
        used = gc.mem_alloc()
        peak = max(peak, used)
        print("MEM", tag, used, gc.mem_free(), peak)


def read_samples(cfg, max_samples):
    """The sensor-reading hook: (xs array('f') of n*features, ys bytearray of n labels, n).

    The default reads the bundled synthetic sensor source; replace this function with your own sensors.
    """
    import sensors

    return sensors.read(cfg["sensor"], max_samples, sum(cfg["dev"].encode()))
