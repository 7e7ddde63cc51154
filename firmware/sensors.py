# A bundled synthetic sensor source for demos (the IoT tutorial's sensors, like flcore.datasets.sensors):
# `features` Gaussian readings (sigma 0.5) where reading (class mod features) carries +1.0.
# Replace board.read_samples() to train on real sensors.
import math
import random
from array import array


def _gauss(sigma):
    # Box-Muller; 1 - random() keeps log() away from 0
    return sigma * math.sqrt(-2.0 * math.log(1.0 - random.random())) * math.cos(6.283185307179586 * random.random())


def read(cfg, max_samples, salt=0):
    """(xs array('f') of n*features, ys bytearray of n labels, n) drawn reproducibly from cfg["seed"] + salt."""
    features = int(cfg.get("features", 10))
    classes = int(cfg.get("classes", 5))
    n = min(int(cfg.get("samples", max_samples)), max_samples)
    sigma = float(cfg.get("sigma", 0.5))
    if not (1 <= features <= 4096 and 2 <= classes <= 255 and n >= 1):
        raise ValueError("sensor: need features 1..4096, classes 2..255 and at least one sample")
    random.seed(int(cfg.get("seed", 0)) * 7919 + salt)
    xs = array("f", (0.0 for _ in range(n * features)))  # grows in place: no full-size temporary
    ys = bytearray(n)
    for i in range(n):
        label = random.getrandbits(16) % classes
        ys[i] = label
        row = i * features
        for j in range(features):
            xs[row + j] = _gauss(sigma)
        xs[row + label % features] += 1.0
    return xs, ys, n
