# The connected part of a wake: status, the gateway's task, the decision to train, delivering the update.
#
# run() returns what main.py does next: ("train", 0) (the task's weights are in BASE and its parameters in the
# store: the next boot runs trainer.py, the one after it this module again to deliver the update), ("ota", 0)
# (a new firmware manifest is in MANIFEST for ota.py), ("rx", 0) (restart with a bigger receive buffer),
# ("sleep", ms), ("done", ms).
#
# Heap: the status payloads are encoded before the MQTT code loads and the encoder is unloaded again; judging a
# new task (taskmsg.py, admit.py) and delivering an update (deliver.py) load their code only when needed.
import binascii
import gc
import hashlib
import sys

import board
from store import BASE, MANIFEST


def unload(*names):
    for name in names:
        sys.modules.pop(name, None)
    gc.collect()


class Node:
    def __init__(self, cfg, st, fw, rx):
        self.cfg = cfg
        self.st = st
        self.fw = fw
        self.rx = rx
        # topics from format strings: short string constants would each be interned for good
        ids = (cfg["fleet"], cfg["gw"], cfg["dev"])
        self.t_task = "iotfl/{}/gw/{}/task".format(*ids).encode()
        self.t_up = "iotfl/{}/gw/{}/up/{}".format(*ids).encode()
        self.t_ack = "iotfl/{}/gw/{}/ack/{}".format(*ids).encode()
        self.t_status = "iotfl/{}/dev/{}/status".format(cfg["fleet"], cfg["dev"]).encode()
        self.t_ota = "iotfl/{}/ota/manifest".format(cfg["fleet"]).encode() if cfg["ota"] else None
        self.battery = 1.0
        self.task = None
        self.ack = None
        self.manifest = None
        self.skipped = tuple(st.get("skip") or ())  # (round, sub, reason) of the latest task declined
        self.deadline = st.get("deadline")
        self.payloads = None
        self.link = None
        self.trial = False

    def encode_status(self):
        """The status payloads for the current skip: offline (the Last Will), online and sleeping."""
        import wire

        cfg = self.cfg
        head = (cfg["dev"], round(self.battery, 4), board.rssi(), cfg["ram_class"], self.fw, cfg["gw"])
        out = {"offline": wire.status_bytes(head[0], "offline", *head[1:])}
        rnd, sub, skip = self.skipped or (None, None, None)
        for state in ("online", "sleeping"):
            out[state] = wire.status_bytes(head[0], state, head[1], head[2], head[3], head[4], head[5], rnd, sub, skip)
        self.payloads = out
        wire = None
        unload("wire", "mpack")  # the encoder's code is not needed until the skip changes

    def publish_status(self, state):
        self.link.publish(self.t_status, self.payloads[state], True)

    def on_msg(self, topic, msg):
        if topic == self.t_task:
            self.task = msg or None  # an empty retained message clears the task
        elif topic == self.t_ack:
            self.ack = bytes(msg)
        elif topic == self.t_ota:
            self.manifest = bytes(msg) or None  # a copy: msg may sit in the receive buffer

    def run(self):
        cfg = self.cfg
        st = self.st
        self.battery = board.battery(cfg["battery"])
        self.encode_status()  # first: the encoder's room is free again before the MQTT code loads
        # the code this wake will most likely need, loaded while the heap is still in one piece
        __import__("taskmsg" if st.get("pending") is None else "deliver")
        from link import ERRORS, Link

        self.errors = ERRORS
        self.link = link = Link(cfg, self.on_msg, (self.t_status, self.payloads["offline"]), self.rx)
        ota = self.t_ota and st.get("ota_wait") <= st.get("boots")
        link.topics = [self.t_ack, self.t_task] + ([self.t_ota] if ota else [])
        link.connect()
        board.mem("link")
        if self.trial:
            from trial import confirm

            if confirm():
                print("iotfl: firmware", self.fw, "reached the broker: update kept")
        self.publish_status("online")
        link.pump(cfg["task_wait_ms"], lambda: self.task is not None or link.client.too_big)
        if link.client.too_big:
            # the task did not fit the receive buffer: main.py allocates one of this size early and comes back
            print("iotfl: task of", link.client.too_big, "bytes: growing the receive buffer")
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
                # until the last task's deadline (the next round opens by then) plus a margin, within bounds
                s = cfg["sleep"]
                now = board.unix_time()
                if self.deadline is None or now is None:
                    return self.leave("sleep", s["default_ms"])
                ms = int((self.deadline - now) * 1000) + s["margin_ms"]
                return self.leave("sleep", max(s["min_ms"], min(s["max_ms"], ms)))

    def leave(self, action, ms):
        if action in ("sleep", "done"):
            try:
                # the retained status keeps naming a declined task, for a gateway that (re)subscribes later
                self.publish_status("sleeping")
            except self.errors:
                pass
        self.link.close(True)
        return action, ms

    def deliver(self, p):
        from deliver import deliver

        deliver(self, p, self.errors)
        unload("deliver")

    def handle_task(self):
        raw, self.task = self.task, None
        st = self.st
        if st.get("pending") is not None:
            from deliver import answers

            pending = answers(self, raw)
            if pending is not None:
                self.deliver(pending)
                return None  # acked, or kept for the next wake; a newer task may wait in the receive buffer
        from taskmsg import decode_task

        try:
            t = decode_task(raw)
        except ValueError as exc:
            print("iotfl: ignoring a bad task:", exc)
            return None
        finally:
            decode_task = None
            unload("taskmsg", "layers")  # a task is judged once per wake: its validation code can go
        self.deadline = t["deadline"]
        if t["done"]:
            if not st.get("done"):
                print("iotfl: training finished: final model version", t["base"])
                st.set(done=True, version=t["base"], deadline=None)
            return self.leave("done", self.cfg["sleep"]["done_ms"])
        key = (t["round"], t["sub"])
        pending = st.get("pending")
        if pending is not None and key > (pending["round"], pending["sub"]):
            st.clear_pending()  # the gateway moved on: the unacked update is moot
            st.save()
        if st.answered(key[0], key[1]):
            return None
        from admit import decide

        reason = decide(self.cfg, self.battery, t)  # None to train, else the skip reason
        decide = None
        unload("admit")
        if reason is not None:
            print("iotfl: round", key[0], "sub", key[1], "skipped:", reason)
            self.skipped = (key[0], key[1], reason)
            self.encode_status()
            self.publish_status("sleeping" if reason == "battery" else "online")
            st.set(last=list(key), done=False, deadline=t["deadline"], skip=list(self.skipped))
            return None
        with open(BASE, "wb") as f:
            f.write(t["w"])
        task = {"battery": round(self.battery, 4), "fw": self.fw}
        for k in ("round", "sub", "base", "layers", "lr", "epochs", "batch", "chunk"):
            task[k] = t[k]
        st.set(task=task, done=False, deadline=t["deadline"], skip=None)
        return self.leave("train", 0)


def run(cfg, st, fw, rx=None, trial=False):
    """rx: the receive buffer for tasks (a bytearray) or None; trial: this firmware is on trial (ota.json)."""
    node = Node(cfg, st, fw, rx)
    node.trial = trial
    return node.run()
