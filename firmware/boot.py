# Runs before main.py on every boot. Never replaced over the air: it swaps a staged firmware image in, counts
# the new image's trial boots, rolls back to the previous files after ota.json's max_boots boots that did not
# reach the broker, and runs main.py under supervision while on trial (an exception resets the board instead of
# leaving it at the REPL, so the next boot counts). Self-contained on purpose: it must work when every other
# file is broken.
import json
import os

STATE = "ota.json"
STAGING = "ota_new"
BACKUP = "ota_old"


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def _remove(path):
    try:
        os.remove(path)
    except OSError:
        pass


def _read():
    for name in (STATE, STATE + ".tmp"):
        try:
            with open(name) as f:
                return json.load(f)
        except (OSError, ValueError):
            pass
    return None


def _write(st):
    with open(STATE + ".tmp", "w") as f:
        json.dump(st, f)
    try:
        os.rename(STATE + ".tmp", STATE)
    except OSError:
        _remove(STATE)
        os.rename(STATE + ".tmp", STATE)


def _swap(st):
    # "swapping" makes an interrupted swap finish on the next boot: each step below can be repeated
    st["state"] = "swapping"
    st.setdefault("backup", [])
    _write(st)
    if not _exists(BACKUP):
        os.mkdir(BACKUP)
    for name in st["files"]:
        new = STAGING + "/" + name
        if not _exists(new):
            continue  # moved in by an interrupted swap
        if _exists(name):
            if name not in st["backup"]:
                os.rename(name, BACKUP + "/" + name)
                st["backup"].append(name)
                _write(st)
            else:
                _remove(name)
        os.rename(new, name)
    st["state"] = "trial"
    st["boots"] = 0
    _write(st)
    print("ota: installed", st.get("version"), "on trial for", st.get("max_boots"), "boots")


def _rollback(st):
    for name in st.get("files", ()):
        old = BACKUP + "/" + name
        if name in st.get("backup", ()):
            if _exists(old):
                _remove(name)
                os.rename(old, name)
        else:
            _remove(name)  # a file the image added
    bad = st.get("bad", [])
    bad.append(st.get("version"))
    print("ota: rolled back from", st.get("version"), "to", st.get("prev"))
    new = {"state": "ok", "version": st.get("prev"), "serial": st.get("serial", 0), "bad": bad[-8:]}
    _write(new)
    for name in os.listdir(BACKUP) if _exists(BACKUP) else ():
        _remove(BACKUP + "/" + name)


def _reset():
    try:
        import board

        board.reset()
    except Exception:  # noqa: BLE001 - a broken board.py must not stop the reset
        pass
    import machine

    machine.reset()


def check():
    """Apply a pending image and count a trial boot; returns the OTA state after this boot's decisions."""
    st = _read()
    if not st:
        return None
    if st.get("state") in ("pending", "swapping"):
        _swap(st)
    if st.get("state") == "trial":
        st["boots"] = st.get("boots", 0) + 1
        _write(st)
        if st["boots"] > st.get("max_boots", 3):
            _rollback(st)
            return "ok"
    return st.get("state")


def _supervise():
    try:
        __import__("main")  # runs the new firmware; it ends in a sleep or a reset when it works
    except Exception as exc:  # noqa: BLE001 - any failure of new code counts as a failed trial boot
        import sys

        print("ota: the new firmware failed:", repr(exc))
        sys.print_exception(exc)
    _reset()


try:
    if check() == "trial":
        _supervise()
except OSError as exc:
    print("ota: boot check failed:", exc)
