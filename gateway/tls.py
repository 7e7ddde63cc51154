"""The gateway's TLS client context: verify the broker or the cloud against a given CA file, TLS 1.2 or newer."""

from __future__ import annotations

import ssl
from pathlib import Path


def tls_context(ca: Path | None) -> ssl.SSLContext:
    """A client context that verifies the server against ``ca`` (else the system's CAs) with TLS 1.2 or newer."""
    context = ssl.create_default_context(cafile=None if ca is None else str(ca))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


__all__ = ["tls_context"]
