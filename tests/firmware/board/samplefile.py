# The test board's sample reader (board.read_samples() calls it): samples.bin as the test wrote it,
#   b"IFS1", n (u32 LE), features (u32 LE), n*features float32 LE, n label bytes.
import gc
import struct
from array import array


def read(name, n):
    """(xs array('f'), ys bytearray, count) of the first n samples in the file name."""
    with open(name, "rb") as f:
        head = f.read(12)
        if len(head) != 12 or head[:4] != b"IFS1":
            raise ValueError(name + " is not a samples file")
        total, features = struct.unpack("<II", head[4:])
        n = min(total, n)
        gc.collect()
        xs = array("f", (0.0 for _ in range(n * features)))
        f.readinto(xs)
        f.seek(12 + 4 * total * features)
        ys = bytearray(n)
        f.readinto(ys)
    return xs, ys, n
