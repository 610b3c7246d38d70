"""Which warm pools are up: their workers' heartbeats (functions/pool.py), read by clients and
operators.

A worker rewrites ``pool/workers/<worker>.json`` every few seconds; it counts as alive while the
object is younger than the ttl it names, on the storage server's clock (as leases are read), so
clients need no clock in common with the cluster.
"""

from __future__ import annotations

import contextlib

from . import layout
from .leases import server_now
from .messages import Heartbeat, MessageError
from .signing import SignatureError
from .storage import Storage, StorageError


def live_workers(storage: Storage) -> list[Heartbeat]:
    """The heartbeats of the deployment's live pool workers."""
    beats = storage.modified(layout.POOL_HEARTBEATS)
    if not beats:
        return []
    now = server_now(storage)
    alive = []
    for key, modified in beats.items():
        with contextlib.suppress(StorageError, MessageError, SignatureError):  # one just removed, or not ours
            beat = Heartbeat.from_json(storage.get_bytes(key))
            if now - modified < beat.ttl:
                alive.append(beat)
    return alive
