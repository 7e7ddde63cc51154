# The training phase of a wake, run with the network code unloaded: the task's MLP from BASE, local epochs on
# the samples from board.read_samples(), the int8 delta written to the store's pending file for node.py to send.
import binascii
import gc
import hashlib
import struct
import sys
from array import array

import board
from store import BASE


def _zeros(n):
    # grows in place: no temporary buffer of the same size
    return array("f", (0.0 for _ in range(n)))


def shuffle_seed(seed, dev, rnd, sub):
    h = hashlib.sha256(f"shuffle:{seed}:{dev}:{rnd}:{sub}".encode()).digest()
    return struct.unpack("<I", h[:4])[0] & 0x7FFFFFFF


def run(cfg, st):
    t = st.get("task")
    try:
        _train(cfg, st, t)
    except MemoryError:
        # the RAM class promised more than this board's heap has: decline the task rather than crash every wake
        print("iotfl: out of memory training round", t["round"], "- skipping it")
        st.set(task=None, last=[t["round"], t["sub"]], skip=[t["round"], t["sub"], "ram"])


def _train(cfg, st, t):
    import mlp

    layers = t["layers"]
    rnd, sub = t["round"], t["sub"]
    gc.collect()
    board.mem("trainer")
    model = mlp.MLP(layers, t["batch"])
    with open(BASE, "rb") as f:
        f.readinto(model.w)  # float32 little-endian, as every supported board stores it
    board.mem("model")
    xs, ys, n = board.read_samples(cfg, cfg["max_samples"])
    if n < 1 or len(xs) != n * layers[0]:
        print("iotfl: samples have", len(xs) // max(n, 1), "features, the model takes", layers[0])
        st.set(task=None, last=[rnd, sub], skip=[rnd, sub, "data"])
        return
    board.mem("samples")
    started = board.ticks_ms()
    seed = shuffle_seed(cfg["seed"], cfg["dev"], rnd, sub)
    loss = model.train(xs, ys, t["lr"], t["epochs"], t["batch"], seed)
    train_ms = board.ticks_diff(board.ticks_ms(), started)
    xs = ys = None
    board.mem("trained")
    # delta = w - base into the gradient buffer, the base read back in blocks
    w, g, P = model.w, model.g, model.P
    block = _zeros(64)
    with open(BASE, "rb") as f:
        k = 0
        while k < P:
            m = min(64, P - k)
            f.readinto(memoryview(block)[:m])
            for j in range(m):
                g[k + j] = w[k + j] - block[j]
            k += m
    model = w = block = mlp = None
    for name in ("mlp", "layers"):
        sys.modules.pop(name, None)  # the training code is done: its room goes to the encoder
    gc.collect()
    import quant
    import upmsg

    chunk = t["chunk"]
    scales = _zeros(quant.chunk_count(P, chunk))
    q = bytearray(P)
    quant.quantize(g, chunk, scales, q, P)
    g = None
    seq = st.next_seq()
    meta = {"battery": t["battery"], "train_ms": train_ms, "ram_class": cfg["ram_class"], "fw": t["fw"]}
    up = (cfg["dev"], rnd, t["base"], n, loss, seq, chunk, scales, q, sub, meta)
    key = binascii.unhexlify(cfg["hmac"]) if cfg["hmac"] else None  # config.json's key: a signed update
    with st.open_pending("wb") as f:
        upmsg.write_up(f.write, *up, key=key)
    pending = {"seq": seq, "round": rnd, "sub": sub, "base": t["base"], "size": upmsg.up_size(*up, key=key), "sends": 0}
    # stored before the first send, sig included: after a reset the same bytes go out again with the same seq
    st.set(pending=pending, task=None)
    board.mem("update")
    print("iotfl: round", rnd, "sub", sub, "trained on", n, "samples in", train_ms, "ms, loss", loss, "seq", seq)
