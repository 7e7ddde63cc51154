# The device's small persisted state (JSON in flash), written atomically (tmp file + rename).
#
# Keys: seq (last update sequence number used), version (model version last trained from), last ([round, sub]
# last answered), pending (the unacked update: {seq, round, sub, base, size, sends}; its bytes sit in PENDING),
# boots (boot counter), done (the fleet finished training), and the hand-over between the phases of a wake.
import json
import os

STATE = "state.json"
PENDING = "pending.up"
BASE = "base.bin"  # the task's float32 weights while the device trains on them
MANIFEST = "ota.man"  # a firmware manifest waiting for the OTA phase

_DEFAULTS = {
    "seq": 0,
    "version": -1,
    "last": None,
    "pending": None,
    "boots": 0,
    "done": False,
    "task": None,  # the parameters of the task being trained (its weights are in BASE)
    "skip": None,  # [round, sub, reason]: the latest task declined, named in every status
    "deadline": None,  # of the last task seen: when the next round opens at the latest
    "ota_seen": None,  # hash of the last firmware manifest handled
    "ota_wait": 0,  # no OTA check before this boot (after a download failed for network reasons)
    "phase": None,  # what the next boot runs: None (node), "train" or "ota"
    "rx": 0,  # receive buffer size: the biggest task seen
}


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def remove(path):
    try:
        os.remove(path)
    except OSError:
        pass


def write_json(path, obj):
    """Write ``obj`` so a reset mid-write leaves the old file or the new one, never half of one."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f)
    try:
        os.rename(tmp, path)
    except OSError:
        # some file systems refuse to rename over an existing file
        remove(path)
        os.rename(tmp, path)


def read_json(path):
    """The object in ``path`` (or its .tmp left by an interrupted write), else None."""
    for name in (path, path + ".tmp"):
        try:
            with open(name) as f:
                obj = json.load(f)
            if isinstance(obj, dict):
                return obj
        except (OSError, ValueError):
            pass
    return None


class Store:
    def __init__(self, path=STATE, pending_path=PENDING):
        self.path = path
        self.pending_path = pending_path
        self.state = dict(_DEFAULTS)
        saved = read_json(path)
        if saved:
            for key in _DEFAULTS:
                if key in saved:
                    self.state[key] = saved[key]
        if self.state["pending"] is not None and not _exists(pending_path):
            self.state["pending"] = None  # its bytes were lost: nothing to re-send

    def get(self, key):
        return self.state[key]

    def set(self, **values):
        for key in values:
            if key not in _DEFAULTS:
                raise KeyError(key)
        self.state.update(values)
        self.save()

    def save(self):
        write_json(self.path, self.state)

    def next_seq(self):
        seq = int(self.state["seq"]) + 1
        self.state["seq"] = seq
        return seq

    def answered(self, rnd, sub):
        """True when (rnd, sub) is not newer than the last task answered."""
        last = self.state["last"]
        return last is not None and (rnd, sub) <= (last[0], last[1])

    def open_pending(self, mode):
        return open(self.pending_path, mode)

    def clear_pending(self):
        self.state["pending"] = None
        remove(self.pending_path)
