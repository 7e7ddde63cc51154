"""Gateway bearer tokens: only their sha256 is kept, and a presented token is compared in constant time."""

from __future__ import annotations

import hashlib
import hmac


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class Tokens:
    """Which gateway a bearer token belongs to."""

    def __init__(self, tokens: dict[str, str], hashes: dict[str, str] | None = None):
        """``tokens`` in plain text and/or ``hashes`` (gateway → sha256 hex, as ``iotfl provision fleet`` writes)."""
        self._hashes = {gw: token_hash(token) for gw, token in tokens.items()}
        self._hashes.update(hashes or {})

    @property
    def hashes(self) -> dict[str, str]:
        return dict(self._hashes)

    def __len__(self) -> int:
        return len(self._hashes)

    def identify(self, token: str) -> str | None:
        """The gateway whose token this is, or None."""
        digest = token_hash(token)
        found = None
        for gw, known in self._hashes.items():
            # No early exit: the time taken does not tell which gateway's token came close.
            if hmac.compare_digest(known, digest):
                found = gw
        return found
