"""The cloud's one error for problems worth a clear line to the operator (bad settings, database, port)."""

from __future__ import annotations


class CloudError(ValueError):
    """The cloud cannot start or go on; the message says why and what to change.

    A ``ValueError`` like ``iotfl.config.ConfigError``, so the CLI reports both the same way.
    """
