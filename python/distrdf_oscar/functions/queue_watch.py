"""Wakes a warm pool worker when something is queued: MinIO's bucket-notification stream, read in
a small process of its own, one byte down a pipe per object created under ``queue/``.

A process, not a thread: the worker forks a child per job and must be single-threaded when it does
(a thread holding a lock at the fork would leave it held for ever in the child). It is forked
before the worker imports ROOT, so it costs little memory. When the storage does not offer the
stream (an S3 server other than MinIO), it says so once (``NO_EVENTS``) and exits; the worker then
lists the queue at a fixed period instead.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable

from ..protocol import layout
from ..protocol.storage import Storage, StorageError
from . import job_process

EVENT = b"."
NO_EVENTS = b"!"
RECONNECT_MAX = 5.0  # seconds between attempts to reopen a stream that failed


def start(make_storage: Callable[[], Storage]) -> tuple[int, int]:
    """Fork the watcher; returns (its pid, the read end of its pipe)."""
    read_end, write_end = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            os.close(read_end)
            job_process.die_with_parent()
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            status = _watch(make_storage(), write_end)
        finally:
            os._exit(status)
    os.close(write_end)
    os.set_blocking(read_end, False)
    return pid, read_end


def _watch(storage: Storage, pipe: int) -> int:
    pause = 0.1
    while True:
        try:
            for _key in storage.listen_created(layout.QUEUE + "/"):
                os.write(pipe, EVENT)
                pause = 0.1
        except StorageError as exc:
            if not exc.transient:
                print(
                    f"pool worker: storage offers no notifications ({exc}); listing the queue instead",
                    file=sys.stderr,
                    flush=True,
                )
                with contextlib.suppress(OSError):
                    os.write(pipe, NO_EVENTS)
                return 0
        except BrokenPipeError:
            return 0  # the worker is gone
        # The stream ended or broke (a storage restart): the worker lists the queue meanwhile.
        with contextlib.suppress(OSError):
            os.write(pipe, EVENT)
        time.sleep(pause)
        pause = min(RECONNECT_MAX, pause * 2)


def drain(pipe: int) -> bytes:
    """Everything the watcher wrote since the last call (non-blocking)."""
    data = b""
    with contextlib.suppress(BlockingIOError):
        while chunk := os.read(pipe, 4096):
            data += chunk
    return data
