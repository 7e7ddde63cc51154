# The MQTT session over micropython-lib's umqtt.simple (`mpremote mip install umqtt.simple`), made bounded:
# umqtt.simple puts its socket back in plain blocking mode after every read and waits for a PUBACK with no
# deadline, so the socket is wrapped (SockTimeout) to keep a timeout and to fail reads past a deadline.
# Connection attempts are bounded, with exponential backoff and jitter. Incoming messages over _SMALL bytes go
# into one receive buffer allocated early (umqtt.simple would allocate each one, and a model-sized block is hard
# to find in a fragmented heap); a bigger one is skipped and its size noted in Client.too_big.
import random
import struct

import board
from micropython import const
from umqtt.simple import MQTTClient, MQTTException

ERRORS = (OSError, MQTTException, AssertionError, IndexError, TypeError)
_SMALL = const(1024)  # a const: no global name to intern


class SockTimeout:
    def __init__(self, sock, timeout, raw=None):
        self.sock = sock
        self.raw = raw  # under TLS: the TCP socket the TLS layer reads from
        self.timeout = timeout
        self.deadline = None

    def read(self, n):
        if self.deadline is not None and board.ticks_diff(self.deadline, board.ticks_ms()) <= 0:
            raise OSError(110)  # ETIMEDOUT
        return self.sock.read(n)

    def readinto(self, buf):
        if self.deadline is not None and board.ticks_diff(self.deadline, board.ticks_ms()) <= 0:
            raise OSError(110)
        return self.sock.readinto(buf)

    def write(self, buf, n=None):
        return self.sock.write(buf) if n is None else self.sock.write(buf, n)

    def setblocking(self, value):
        if self.raw is not None:
            self.sock.setblocking(value)
            if value:
                self.raw.settimeout(self.timeout)
        elif value:
            self.sock.settimeout(self.timeout)
        else:
            self.sock.setblocking(False)

    def close(self):
        self.sock.close()


class Client(MQTTClient):
    """umqtt.simple with wait_msg() reading big payloads into the receive buffer ``rx`` (a memoryview of it is
    what the callback gets: valid until the next big message)."""

    rx = None
    too_big = 0

    def wait_msg(self):
        sock = self.sock
        res = sock.read(1)
        sock.setblocking(True)
        if res is None:
            return None
        if res == b"":
            raise OSError(-1)
        if res == b"\xd0":  # PINGRESP
            sock.read(1)
            return None
        op = res[0]
        if op & 0xF0 != 0x30:
            return op
        sz = self._recv_len()
        topic = sock.read(struct.unpack("!H", sock.read(2))[0])
        sz -= len(topic) + 2
        if op & 6:
            pid = sock.read(2)
            sz -= 2
        rx = self.rx
        if sz <= _SMALL:
            msg = sock.read(sz)
        elif rx is not None and sz <= len(rx):
            msg = memoryview(rx)[:sz]
            sock.readinto(msg)
        else:
            self.too_big = sz
            msg = None
            while sz:
                got = len(sock.read(min(sz, 64)))
                if not got:
                    raise OSError(-1)
                sz -= got
        if msg is not None:
            self.cb(topic, msg)
        if op & 6 == 2:
            sock.write(b"\x40\x02" + pid)
        return op


class Link:
    def __init__(self, cfg, on_msg, will=None, rx=None):
        self.cfg = cfg
        self.on_msg = on_msg
        self.will = will  # (topic, payload): retained QoS 1 Last Will
        self.rx = rx
        self.client = None
        self.topics = []
        self.ping_at = 0

    def _connect_once(self):
        b = self.cfg["broker"]
        tls = None
        if b["tls"]:
            from tlsctx import TLS  # only boards that use TLS load it (not "tls": a built-in module)

            tls = TLS(b["ca"])
        c = Client("iotfl-dev-{}".format(self.cfg["dev"]), b["host"], b["port"], b["user"], b["password"],
                       b["keepalive"], tls)  # fmt: skip
        c.set_callback(self.on_msg)
        c.rx = self.rx
        if self.will:
            c.set_last_will(self.will[0], self.will[1], True, 1)
        timeout = self.cfg["sock_timeout_ms"] / 1000
        self.client = c
        c.connect(True, timeout)
        c.sock = SockTimeout(c.sock, timeout, tls.raw if tls else None)
        self.ping_at = board.ticks_ms()
        for topic in self.topics:
            self.bounded(c.subscribe, topic, 1)

    def connect(self):
        """Connect and (re)subscribe; raises OSError after connect_retries failed retries."""
        delay = 500
        retries = self.cfg["connect_retries"]
        for attempt in range(retries + 1):
            try:
                self._connect_once()
                return
            except ERRORS as exc:
                self.close()
                print(f"iotfl: broker attempt {attempt + 1} failed: {exc!r}")
                if attempt == retries:
                    raise OSError("broker unreachable") from None
                board.sleep_ms(delay + random.getrandbits(16) % (delay // 2 + 1))  # jitter: a fleet spreads out
                delay = min(delay * 2, 30000)

    def close(self, value=False):
        """value: a clean DISCONNECT (the broker drops the Last Will) rather than just closing the socket."""
        c, self.client = self.client, None
        if c is not None and c.sock is not None:
            try:
                if value:
                    c.disconnect()
                else:
                    c.sock.close()
            except OSError:
                pass

    def bounded(self, *args):
        """Call a umqtt method that waits for the broker (PUBACK, SUBACK) with the socket timeout as deadline."""
        sock = self.client.sock
        sock.deadline = board.ticks_add(board.ticks_ms(), self.cfg["sock_timeout_ms"])
        try:
            return args[0](*args[1:])
        finally:
            sock.deadline = None

    def publish(self, topic, msg, retain=False):
        self.bounded(self.client.publish, topic, msg, retain, 1)

    def pump(self, ms, key):
        """Handle incoming messages until key() holds (True) or ms pass (False); pings keep the session."""
        end = board.ticks_add(board.ticks_ms(), ms)
        keep = self.cfg["broker"]["keepalive"] * 500
        while not key():
            now = board.ticks_ms()
            if board.ticks_diff(end, now) <= 0:
                return False
            if keep and board.ticks_diff(now, self.ping_at) > keep:
                self.client.ping()
                self.ping_at = now
            if self.client.check_msg() is None:
                board.sleep_ms(10)
        return True
