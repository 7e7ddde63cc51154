"""This process's resources: the open-files limit a fleet (a socket per device) or a broker needs, and the memory
and CPU a fleet report states. Linux (``/proc``, ``getrusage``); light to import (no torch)."""

from __future__ import annotations

import logging
import os
import resource

log = logging.getLogger(__name__)

# Descriptors beyond one per connection: the network loop's wake-up pair, torch, logs and data files.
FD_MARGIN = 256


def raise_fd_limit(connections: int) -> int:
    """Raise the soft limit of open files to ``connections + FD_MARGIN`` (at most the hard limit); child
    processes (a broker) inherit it. Returns the soft limit now in force."""
    need = connections + FD_MARGIN
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        soft = need if hard == resource.RLIM_INFINITY else min(need, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        log.info("raised the open-files limit to %d for %d connections", soft, connections)
    if soft != resource.RLIM_INFINITY and soft < need:
        log.warning("open-files limit %d is below the %d that %d connections need", soft, need, connections)
    return soft


def rss_mb() -> float:
    """Resident memory now, in MiB."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def process_usage(base_rss_mb: float, threads: int) -> dict[str, float | int]:
    """Peak and current RSS (MiB) and CPU seconds (user, system) of this process; ``base_rss_mb`` is the RSS
    measured before the devices were made (the anchor of the per-device memory), ``threads`` the live threads
    counted while every device was up."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),  # Linux reports KiB
        "rss_mb": round(rss_mb(), 1),
        "base_rss_mb": round(base_rss_mb, 1),
        "cpu_user_s": round(usage.ru_utime, 2),
        "cpu_system_s": round(usage.ru_stime, 2),
        "threads": threads,
    }


__all__ = ["FD_MARGIN", "process_usage", "raise_fd_limit", "rss_mb"]
