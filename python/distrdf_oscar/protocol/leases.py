"""Which jobs in storage still have a client waiting for them, so that cleanup never hurts a live job.

A client rewrites its job's lease object while it waits (:class:`Holder`). The lease's age is read
on the storage server's clock (its ``LastModified`` against that of an object written just now),
so clients and the operator running ``cleanup`` need no common clock. A job whose lease is older
than the ``ttl`` it names, or that has no lease and was created longer than ``DEFAULT_TTL`` ago (a
client killed before its first renewal), is abandoned.
"""

from __future__ import annotations

import contextlib
import secrets
from dataclasses import dataclass

from . import layout
from .messages import Lease, MessageError
from .storage import Storage, StorageError

DEFAULT_TTL = 120.0  # seconds without renewal after which a job counts as abandoned
RENEW_PERIOD = 20.0  # how often a waiting client renews: several renewals fit in a ttl
# A warm pool's job: its workers drop a job whose lease lapsed (functions/pool.py), so that a client
# killed outright stops costing the pool within seconds, not minutes.
POOL_TTL = 15.0


class Holder:
    """A client's hold on its job: ``renew()`` from the wait loop, at most every RENEW_PERIOD."""

    def __init__(
        self, storage: Storage, keys: layout.JobKeys, ttl: float = DEFAULT_TTL, owner: str = ""
    ) -> None:
        self.storage, self.keys, self.ttl, self.owner = storage, keys, ttl, owner
        self.period = min(RENEW_PERIOD, ttl / 4)
        self._renewed: float | None = None

    def renew(self, now: float) -> None:
        if self._renewed is None or now - self._renewed >= self.period:
            self.storage.put_bytes(self.keys.lease, Lease(self.keys.job_id, self.ttl, self.owner).to_json())
            self._renewed = now


@dataclass(frozen=True)
class JobState:
    job_id: str
    objects: int
    lease_age: float | None  # seconds since the last renewal, None without a lease
    ttl: float

    @property
    def alive(self) -> bool:
        return self.lease_age is not None and self.lease_age < self.ttl

    def describe(self) -> str:
        if self.lease_age is None:
            return "no lease"
        return f"lease renewed {self.lease_age:.0f} s ago ({'alive' if self.alive else 'lapsed'}, ttl {self.ttl:.0f} s)"


def server_now(storage: Storage) -> float:
    """The storage server's current time: the LastModified of an object written for the purpose."""
    key = layout.probe_key(secrets.token_hex(8))
    storage.put_bytes(key, b"")
    try:
        return storage.modified(key)[key]
    finally:
        storage.delete([key])


def job_states(storage: Storage, counts: dict[str, int]) -> dict[str, JobState]:
    """The lease state of every job in ``counts`` (job id -> its number of objects)."""
    now = server_now(storage)
    leases = {
        key: mtime for key, mtime in storage.modified(layout.JOBS + "/").items() if layout.lease_job(key)
    }
    states = {}
    for job_id, objects in counts.items():
        keys = layout.JobKeys(job_id)
        ttl, age = DEFAULT_TTL, None
        if keys.lease in leases:
            age = max(0.0, now - leases[keys.lease])
            # Unreadable (half-removed, or not ours): the default ttl decides.
            with contextlib.suppress(MessageError, StorageError):
                ttl = Lease.from_json(storage.get_bytes(keys.lease)).ttl
        elif now - layout.job_created(job_id) < DEFAULT_TTL:
            age = max(
                0.0, now - layout.job_created(job_id)
            )  # just created: its client may not have renewed yet
        states[job_id] = JobState(job_id, objects, age, ttl)
    return states
