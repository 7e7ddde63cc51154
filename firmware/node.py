# The connected part of a wake: status, the gateway's task, the decision to train, delivering the update.
#
# run() returns what main.py does next: ("train", 0) (the task's weights are in BASE and its parameters in the
# store: the next boot runs trainer.py, the one after it this module again to deliver the update), ("ota", 0)
# (a new firmware manifest is in MANIFEST for ota.py), ("rx", 0) (restart with a bigger receive buffer),
# ("sleep", ms), ("done", ms).
import binascii
import hashlib
import struct

import board
import wire
from link import ERRORS, Link
from store import BASE, MANIFEST

# training RAM per class in bytes, as flcore/resources.py
RAM_CLASSES = {"class0": 0, "class1": 10240, "class2": 51200, "constrained": 262144}


def log(*words):
    print("iotfl:", *words)


def draw(salt, seed, dev, rnd, sub):
    """A number in [0, 1) fixed by its arguments (select fractions, shuffle seeds)."""
    h = hashlib.sha256(f"{salt}:{seed}:{dev}:{rnd}:{sub}".encode()).digest()
    return struct.unpack("<I", h[:4])[0] / 4294967296


class Node:
    def __init__(self, cfg, st, fw, rx):
        self.cfg = cfg
        self.st = st
        self.fw = fw
        self.dev = dev = cfg["dev"]
        pre = "iotfl/" + cfg["fleet"] + "/gw/" + cfg["gw"] + "/"
        self.t_task = (pre + "task").encode()
        self.t_up = (pre + "up/" + dev).encode()
        self.t_ack = (pre + "ack/" + dev).encode()
        self.t_status = ("iotfl/" + cfg["fleet"] + "/dev/" + dev + "/status").encode()
        self.t_ota = ("iotfl/" + cfg["fleet"] + "/ota/manifest").encode() if cfg["ota"] else None
        self.battery = 1.0
        self.task = None
        self.ack = None
        self.manifest = None
        self.skipped = tuple(st.get("skip") or ())  # (round, sub, reason) of the latest task declined
        self.deadline = st.get("deadline")
        self.link = Link(cfg, self.on_msg, rx=rx)

    def status(self, state, rnd=None, sub=None, skip=None):
        return wire.status_bytes(self.dev, state, round(self.battery, 4), board.rssi(), self.cfg["ram_class"],
                                 self.fw, self.cfg["gw"], rnd, sub, skip)  # fmt: skip

    def publish_status(self, state, rnd=None, sub=None, skip=None):
        self.link.publish(self.t_status, self.status(state, rnd, sub, skip), True)

    def on_msg(self, topic, msg):
        if topic == self.t_task:
            self.task = msg or None  # an empty retained message clears the task
        elif topic == self.t_ack:
            try:
                self.ack = wire.decode_ack(msg)
            except ValueError as exc:
                log("bad ack:", exc)
        elif topic == self.t_ota:
            self.manifest = bytes(msg) or None  # a copy: msg may sit in the receive buffer

    def run(self):
        cfg = self.cfg
        st = self.st
        self.battery = board.battery(cfg["battery"])
        link = self.link
        link.will = (self.t_status, self.status("offline"))
        ota = self.t_ota and st.get("ota_wait") <= st.get("boots")
        link.topics = [self.t_ack, self.t_task] + ([self.t_ota] if ota else [])
        link.connect()
        board.mem("link")
        if confirm_ota():
            log("firmware", self.fw, "reached the broker: update kept")
        self.publish_status("online", *self.skipped)
        board.mem("connected")
        link.pump(cfg["task_wait_ms"], lambda: self.task is not None or link.client.too_big)
        if link.client.too_big:
            # the task did not fit the receive buffer: main.py allocates one of this size early and comes back
            log("task of", link.client.too_big, "bytes: growing the receive buffer")
            st.set(rx=max(st.get("rx"), link.client.too_big))
            return self.leave("rx", 0)
        pending = st.get("pending")
        if pending is not None and self.task is None:
            self.deliver(pending)  # no task to judge it by: let the gateway do so
        while True:
            if self.task is not None:
                act = self.handle_task()
                if act:
                    return act
            if self.manifest is not None:
                raw, self.manifest = self.manifest, None
                digest = binascii.hexlify(hashlib.sha256(raw).digest()).decode()
                if digest != st.get("ota_seen"):
                    with open(MANIFEST, "wb") as f:
                        f.write(raw)
                    return self.leave("ota", 0)
            if not cfg["sleep"]["deep"]:
                link.pump(cfg["sleep"]["listen_ms"], lambda: self.task is not None or self.manifest is not None)
            elif not link.pump(cfg["sleep"]["listen_ms"], lambda: self.task is not None):
                return self.leave("sleep", self.wake_ms())

    def leave(self, action, ms):
        if action in ("sleep", "done"):
            try:
                # the retained status keeps naming a declined task, for a gateway that (re)subscribes later
                self.publish_status("sleeping", *self.skipped)
            except ERRORS:
                pass
        self.link.close(True)
        return action, ms

    def wake_ms(self):
        """Until the last task's deadline (the next round opens by then) plus a margin, within the config's bounds."""
        s = self.cfg["sleep"]
        now = board.unix_time()
        if self.deadline is None or now is None:
            return s["default_ms"]
        return max(s["min_ms"], min(s["max_ms"], int((self.deadline - now) * 1000) + s["margin_ms"]))

    def handle_task(self):
        raw, self.task = self.task, None
        try:
            t = wire.decode_task(raw)
        except ValueError as exc:
            log("ignoring a bad task:", exc)
            return None
        st = self.st
        self.deadline = t["deadline"]
        if t["done"]:
            if not st.get("done"):
                log("training finished: final model version", t["base"])
                st.set(done=True, version=t["base"], deadline=None)
            return self.leave("done", self.cfg["sleep"]["done_ms"])
        key = (t["round"], t["sub"])
        pending = st.get("pending")
        if pending is not None:
            if (pending["round"], pending["sub"]) == key:
                self.deliver(pending)
                if self.task is not None or st.get("pending") is not None:
                    return None  # a newer task came meanwhile (in the receive buffer), or still no ack
            elif key > (pending["round"], pending["sub"]):
                st.clear_pending()  # the gateway moved on: the unacked update is moot
                st.save()
        if st.answered(key[0], key[1]):
            return None
        reason = self.decide(t)
        if reason is not None:
            log("round", key[0], "sub", key[1], "skipped:", reason)
            self.skipped = (key[0], key[1], reason)
            self.publish_status("sleeping" if reason == "battery" else "online", *self.skipped)
            st.set(last=list(key), done=False, deadline=t["deadline"], skip=list(self.skipped))
            return None
        with open(BASE, "wb") as f:
            f.write(t["w"])
        task = {"battery": round(self.battery, 4), "fw": self.fw}
        for k in ("round", "sub", "base", "layers", "lr", "epochs", "batch", "chunk"):
            task[k] = t[k]
        st.set(task=task, done=False, deadline=t["deadline"], skip=None)
        return self.leave("train", 0)

    def decide(self, t):
        """None to train, else the skip reason: ram, select or battery (the charge-to-spare rule)."""
        cfg = self.cfg
        layers = t["layers"]
        params = t["P"]
        if 4 * (2 * params + t["batch"] * sum(layers) * 2) > RAM_CLASSES[cfg["ram_class"]]:
            return "ram"
        select = t["select"]
        if isinstance(select, list):
            if self.dev not in select:
                return "select"
        elif select is not None and draw("select", cfg["seed"], self.dev, t["round"], t["sub"]) >= select:
            return "select"
        if self.battery < max(t["min_battery"], cfg["battery_floor"]) + cfg["battery_cost"] - 1e-9:
            return "battery"
        return None

    def deliver(self, p):
        """Publish the stored update until the gateway acks it, re-sending the same bytes (same seq) when no ack
        comes and reconnecting when the connection breaks: at most max_resends re-sends in this wake. Without an
        ack the update stays stored and the next wake sends it again, until the gateway moves on to a newer task
        (or 3 wakes' worth of sends went unanswered)."""
        cfg = self.cfg
        st = self.st
        link = self.link
        tries = cfg["max_resends"] + 1
        for _ in range(tries):
            self.ack = None
            try:
                if link.client is None:
                    link.connect()
                if p["sends"]:
                    log("no ack for seq", p["seq"], "yet: sending it again")
                link.publish_file(self.t_up, st.pending_path, p["size"])
                p["sends"] += 1
                st.save()
                board.mem("sent")
                if link.pump(cfg["ack_timeout_ms"], lambda: self.ack is not None and self.ack["seq"] == p["seq"]):
                    log("ack", self.ack["status"], "for seq", p["seq"], self.ack["reason"])
                    st.clear_pending()
                    st.set(last=[p["round"], p["sub"]], version=p["base"])
                    return
            except ERRORS as exc:
                log("connection lost while sending:", repr(exc))
                link.close()
        if p["sends"] >= 3 * tries:
            log("gave up on seq", p["seq"], "after", p["sends"], "sends")
            st.clear_pending()
            st.set(last=[p["round"], p["sub"]])
        else:
            log("no ack for seq", p["seq"], "in this wake: keeping it for the next one")
        if link.client is None:
            link.connect()


def confirm_ota():
    """On the first boot of a new firmware that reached the broker: keep it (boot.py stops counting)."""
    from store import read_json, remove, write_json

    st = read_json("ota.json")
    if not st or st.get("state") != "trial":
        return False
    write_json("ota.json", {"state": "ok", "version": st.get("version"), "serial": st.get("serial", 0),
                            "bad": st.get("bad", [])})  # fmt: skip
    for name in st.get("backup", ()):
        remove("ota_old/" + name)
    return True


def run(cfg, st, fw, rx=None):
    """rx: the receive buffer for tasks (a bytearray) or None."""
    return Node(cfg, st, fw, rx).run()
