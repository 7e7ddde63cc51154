"""An append-only journal of the accepted updates of the current round, so a restarted gateway resumes it.

One file per round in ``state_dir`` (``<gw>-round-<r>.journal``): a stream of msgpack records — ``open`` (round,
base), ``up`` (sub, topic, raw payload) written before the device is acked, ``close`` (sub). Replaying the raw
payloads through a fresh ``Collector`` rebuilds the sums, the dedup keys and the gateway weights exactly.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import msgpack

log = logging.getLogger(__name__)


@dataclass
class Replay:
    """What the journal holds for a round: accepted payloads per sub-round and the sub-rounds that closed."""

    base: int
    ups: dict[int, list[tuple[str, bytes]]] = field(default_factory=dict)
    closed: set[int] = field(default_factory=set)


class Journal:
    """The journal of one gateway; ``begin()`` a round, then ``update()``/``closed()`` as it runs."""

    def __init__(self, directory: Path, gw: str) -> None:
        self.directory = Path(directory)
        self.gw = gw
        self._file: IO[bytes] | None = None

    def path(self, round: int) -> Path:
        return self.directory / f"{self.gw}-round-{round}.journal"

    def begin(self, round: int, base: int) -> Replay | None:
        """Open the journal of ``round``; returns what an earlier run journaled for the same (round, base)."""
        self.close()
        self.directory.mkdir(parents=True, exist_ok=True)
        for old in self.directory.glob(f"{self.gw}-round-*.journal"):
            if old != self.path(round):
                old.unlink(missing_ok=True)
        replay, valid_bytes = self._load(round, base)
        self._file = open(self.path(round), "r+b" if replay else "wb")
        # Drop a torn last record so what is appended next stays readable.
        self._file.truncate(valid_bytes)
        self._file.seek(valid_bytes)
        if replay is None:
            self._write({"op": "open", "round": round, "base": base})
        return replay

    def update(self, sub: int, topic: str, payload: bytes) -> None:
        """Record an accepted update durably (called before its ``accepted`` ack goes out)."""
        self._write({"op": "up", "sub": sub, "topic": topic, "data": payload})

    def closed(self, sub: int) -> None:
        self._write({"op": "close", "sub": sub})

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _write(self, record: dict[str, Any]) -> None:
        if self._file is None:
            return
        self._file.write(msgpack.packb(record, use_bin_type=True))
        self._file.flush()
        os.fsync(self._file.fileno())

    def _load(self, round: int, base: int) -> tuple[Replay | None, int]:
        """The replay of ``round`` (None when absent or for another base) and the length of its valid records."""
        path = self.path(round)
        if not path.exists():
            return None, 0
        replay: Replay | None = None
        valid = 0
        unpacker = msgpack.Unpacker(raw=False, max_bin_len=64 << 20)
        unpacker.feed(path.read_bytes())
        try:
            for record in unpacker:
                if not isinstance(record, dict):
                    break
                op = record.get("op")
                if op == "open":
                    if record.get("round") != round or record.get("base") != base:
                        break
                    replay = Replay(base)
                elif replay is not None and op == "up":
                    replay.ups.setdefault(int(record["sub"]), []).append((str(record["topic"]), record["data"]))
                elif replay is not None and op == "close":
                    replay.closed.add(int(record["sub"]))
                valid = unpacker.tell()
        except Exception as exc:  # a torn last record after a power cut: keep what came before it
            log.warning("journal %s is damaged after its valid records (%s); keeping those", path, exc)
        if replay is None:
            log.info("journal %s belongs to another base model; starting the round afresh", path)
            return None, 0
        return replay, valid


__all__ = ["Journal", "Replay"]
