"""Memory limits, as Kubernetes enforces a pod's: over its ``memory`` limit, the function is killed.

OSCAR sets a service's ``memory`` as the container's limit (requests equal limits); a
function that exceeds it is OOM-killed by the kernel, leaving no error marker and no
output. Here the resident memory of the function's process group is sampled a few times
a second and the group is killed with SIGKILL once it is over the limit.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from typing import Self

PERIOD = 0.1  # seconds between two samples
_PAGE = os.sysconf("SC_PAGE_SIZE")


def group_rss(pgid: int) -> int:
    """Resident bytes of every process in process group ``pgid``."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
            if int(fields[2]) != pgid:  # the fields after the command: state, ppid, pgrp, ...
                continue
            with open(f"/proc/{entry}/statm", "rb") as statm:
                total += int(statm.read().split()[1]) * _PAGE
        except (OSError, IndexError, ValueError):
            continue  # the process ended meanwhile
    return total


class MemoryWatch:
    """Kills process group ``pgid`` once its resident memory exceeds ``limit`` bytes beyond
    ``baseline`` (what a pre-started worker held before the call); ``exceeded`` tells whether it did."""

    def __init__(self, pgid: int, limit: float, baseline: int = 0) -> None:
        self._pgid, self._limit, self._baseline = pgid, limit, baseline
        self.exceeded = False
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name=f"memory-{pgid}", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        while not self._stop.wait(PERIOD):
            used = group_rss(self._pgid) - self._baseline
            self.peak = max(self.peak, used)
            if used > self._limit:
                self.exceeded = True
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self._pgid, signal.SIGKILL)
                return
