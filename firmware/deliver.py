# Delivering the stored update: a streamed QoS 1 publish of the pending file, re-sent with the same seq until the
# gateway acks it. Loaded only when an update is pending, so judging a new task does not carry this code.
import struct

import board
from decode import decode_ack, envelope

# the file-to-socket block, allocated when this module loads (before the connection fragments the heap)
_BUF = bytearray(256)


def answers(node, raw):
    """The pending update when raw is the task it answers (no full validation needed to re-send it)."""
    p = node.st.get("pending")
    try:
        t = envelope(raw, "task")
    except ValueError:
        return None
    if t.get("done") is True or (t.get("round"), t.get("sub", 0)) != (p["round"], p["sub"]):
        return None
    deadline = t.get("deadline")
    if isinstance(deadline, (int, float)) and not isinstance(deadline, bool) and deadline - deadline == 0:
        node.deadline = deadline
    return p


def publish_file(link, topic, path, size):
    """QoS 1 publish of a file's bytes, streamed (the payload is never whole in RAM)."""
    c = link.client
    n = 2 + len(topic) + 2 + size
    head = bytearray(b"\x32\0\0\0\0")
    i = 1
    while n > 0x7F:
        head[i] = (n & 0x7F) | 0x80
        n >>= 7
        i += 1
    head[i] = n
    c.pid = c.pid % 65535 + 1
    pid = c.pid

    def send():
        sock = c.sock
        sock.write(head, i + 1)
        sock.write(struct.pack("!H", len(topic)))
        sock.write(topic)
        sock.write(struct.pack("!H", pid))
        with open(path, "rb") as f:
            while True:
                got = f.readinto(_BUF)
                if not got:
                    break
                sock.write(_BUF, got)
        while True:
            if c.wait_msg() == 0x40 and sock.read(1) == b"\x02":
                got = sock.read(2)
                if got[0] << 8 | got[1] == pid:
                    return

    link.bounded(send)


def _acked(node, seq):
    raw, node.ack = node.ack, None
    if raw is None:
        return None
    try:
        ack = decode_ack(raw)
    except ValueError as exc:
        print("iotfl: bad ack:", exc)
        return None
    return ack if ack["seq"] == seq else None


def deliver(node, p, errors):
    """Publish the stored update until the gateway acks it, re-sending the same bytes (same seq) when no ack
    comes and reconnecting when the connection breaks: at most max_resends re-sends in this wake. Without an
    ack the update stays stored and the next wake sends it again, until the gateway moves on to a newer task
    (or 3 wakes' worth of sends went unanswered)."""
    cfg = node.cfg
    st = node.st
    link = node.link
    tries = cfg["max_resends"] + 1
    got = [None]

    def acked():
        if got[0] is None:
            got[0] = _acked(node, p["seq"])
        return got[0] is not None

    for _ in range(tries):
        node.ack = None
        try:
            if link.client is None:
                link.connect()
            if p["sends"]:
                print("iotfl: no ack for seq {} yet: sending it again".format(p["seq"]))
            publish_file(link, node.t_up, st.pending_path, p["size"])
            p["sends"] += 1
            st.save()
            board.mem("publish")
            if link.pump(cfg["ack_timeout_ms"], acked):
                print("iotfl: ack {} for seq {} {}".format(got[0]["status"], p["seq"], got[0]["reason"]))
                st.clear_pending()
                st.set(last=[p["round"], p["sub"]], version=p["base"])
                return
        except errors as exc:
            print("iotfl: connection lost while sending:", repr(exc))
            link.close()
    if p["sends"] >= 3 * tries:
        print("iotfl: gave up on seq {} after {} sends".format(p["seq"], p["sends"]))
        st.clear_pending()
        st.set(last=[p["round"], p["sub"]])
    else:
        print("iotfl: no ack for seq {} in this wake: keeping it for the next one".format(p["seq"]))
    if link.client is None:
        link.connect()
