# TLS for the broker connection: an SSL context for umqtt.simple (loaded by link.py only when broker.tls is on).


class TLS:
    """An SSL context for umqtt.simple that verifies the broker and remembers the TCP socket it wraps."""

    def __init__(self, cafile):
        import ssl

        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self.ctx.verify_mode = ssl.CERT_REQUIRED
        with open(cafile, "rb") as f:
            ca = f.read()
        if ca.startswith(b"-----BEGIN"):
            # MicroPython's mbedTLS builds take DER: decode the first certificate of a PEM file
            import binascii

            body = ca.split(b"-----")[2]
            ca = binascii.a2b_base64(b"".join(body.split()))
        self.ctx.load_verify_locations(cadata=ca)
        self.raw = None

    def wrap_socket(self, sock, server_hostname=None):
        self.raw = sock
        return self.ctx.wrap_socket(sock, server_hostname=server_hostname)
