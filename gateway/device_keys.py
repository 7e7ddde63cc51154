"""The gateway's device keys: a JSON file ``{"<dev id>": "<64 hex digits>", ...}`` (mode 0600), re-read when it changes.

``iotfl provision`` rewrites the file when it adds devices; the gateway picks the new keys up at the next update it
judges, without a restart. A file that turns bad while the gateway runs (a half-written copy) is logged and the keys
read before stay in use until the file changes again.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from flcore.signing import KeyFileError, parse_key_file

log = logging.getLogger(__name__)

DeviceKeysError = KeyFileError


def load_device_keys(path: Path) -> dict[str, bytes]:
    """The keys in the file; ``DeviceKeysError`` (one line) when it cannot be read or is bad."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise DeviceKeysError(f"cannot read the device key file {path}: {exc.strerror or exc}") from None
    return parse_key_file(text, f"device key file {path}")


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


class DeviceKeys:
    """``keys(dev)`` is the device's key or None; the file is read at construction (``DeviceKeysError``) and again
    whenever its modification time, size or inode changed."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._stamp = _stamp(self.path)
        self._keys = load_device_keys(self.path)
        mode = os.stat(self.path).st_mode & 0o777
        if mode & 0o077:
            log.warning("device key file %s is readable by others (mode %o): chmod 600 it", self.path, mode)
        log.info("signed updates required: %d device keys in %s", len(self._keys), self.path)

    def __len__(self) -> int:
        return len(self._keys)

    def __call__(self, dev: str) -> bytes | None:
        self.refresh()
        return self._keys.get(dev)

    def refresh(self) -> None:
        stamp = _stamp(self.path)
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            keys = load_device_keys(self.path)
        except DeviceKeysError as exc:
            log.error("%s; keeping the %d keys read before", exc, len(self._keys))
            return
        log.info("device key file %s changed: %d keys (were %d)", self.path, len(keys), len(self._keys))
        self._keys = keys


__all__ = ["DeviceKeys", "DeviceKeysError", "load_device_keys"]
