"""Who is who: the admin (basic auth), OIDC users, their MinIO accounts, what they may see, and
Kueue's per-user quotas.

OSCAR gives every OIDC user a MinIO account whose access key is the user's
``sub``, and grants the users of a service (its owner; everyone if public; the
``allowed_users`` if restricted) access to its buckets. With Kueue (3.7 and
later) the jobs of a service owned by an OIDC user are admitted from that
user's ClusterQueue, 2 CPUs and 2Gi by default (``KUEUE_DEFAULT_CPU``,
``KUEUE_DEFAULT_MEMORY``; pkg/utils/kueue.go), and the jobs of a service owned
by nobody known (``""`` after an admin's update) are never admitted.
"""

from __future__ import annotations

import secrets
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ...quantities import parse_quantity
from .validation import DEFAULT_OWNER
from .versions import OscarVersion

DEFAULT_QUOTA = ("2", "2Gi")  # cpu, memory of a user's ClusterQueue


@dataclass(frozen=True)
class User:
    sub: str
    token: str = field(repr=False)  # the OIDC access token the user presents
    secret_key: str = field(repr=False)  # of the user's MinIO account, whose access key is ``sub``


def new_users(subs: tuple[str, ...]) -> dict[str, dict[str, str]]:
    """Credentials for OIDC users (sent to the platform process with its configuration)."""
    # Not 64 characters long: OSCAR takes a 64-character bearer token for a service token.
    return {sub: {"token": secrets.token_urlsafe(40), "secret_key": secrets.token_urlsafe(30)} for sub in subs}


class Accounts:
    def __init__(self, root_access_key: str, users: dict[str, dict[str, str]], version: OscarVersion) -> None:
        self.root_access_key = root_access_key
        self.version = version
        self.users = {sub: User(sub, **creds) for sub, creds in users.items()}

    def access_keys(self) -> set[str]:
        return {self.root_access_key, *self.users}

    def user_for_token(self, token: str) -> User | None:
        for user in self.users.values():
            if secrets.compare_digest(user.token.encode(), token.encode()):
                return user
        return None

    def can_see(self, sub: str | None, service: dict[str, Any]) -> bool:
        """Whether a caller (None: the admin) sees a service (pkg/handlers/list.go, read.go)."""
        if sub is None:
            return True
        allowed = service.get("allowed_users") or []
        if self.version.release < (3, 6, 0):
            return not allowed or sub in allowed or service.get("owner") == sub
        visibility = service.get("visibility")
        return (visibility == "public" or service.get("owner") == sub
                or (visibility == "restricted" and sub in allowed))


class Kueue:
    """Admission of the jobs of services not owned by the admin, one ClusterQueue per owner.

    ``admit(job)`` is called for every new job of such a service; ``release(job)`` when an admitted
    job ends. ``start(job)`` is how an admitted job goes on to be scheduled. Queueing is
    best-effort FIFO (Kueue's default): a job that does not fit lets smaller later ones pass.
    """

    def __init__(self, users: set[str], quota: tuple[str, str], start: Callable[[Any], None]) -> None:
        self._users = users
        self._cpu, self._memory = parse_quantity(quota[0]), parse_quantity(quota[1])
        self._start = start
        self._lock = threading.Lock()
        self._used: dict[str, list[float]] = {}
        self._waiting: dict[str, deque[Any]] = {}

    @staticmethod
    def queued(service: dict[str, Any]) -> bool:
        return service.get("owner") != DEFAULT_OWNER

    @staticmethod
    def _needs(job: Any) -> tuple[float, float]:
        return job.cpu, parse_quantity(job.service.get("memory") or "256Mi")

    def admit(self, job: Any) -> bool:
        """True if the job may start now; else it waits (for ever, if its owner has no queue)."""
        owner = job.service.get("owner") or ""
        with self._lock:
            if owner not in self._users:
                return False
            self._waiting.setdefault(owner, deque()).append(job)
            started = self._admit_waiting(owner)
        for admitted in started:
            self._start(admitted)
        return job in started

    def release(self, job: Any) -> None:
        owner = job.service.get("owner") or ""
        with self._lock:
            used = self._used.get(owner)
            if used is None or not getattr(job, "admitted", False):
                return
            cpu, memory = self._needs(job)
            used[0] -= cpu
            used[1] -= memory
            started = self._admit_waiting(owner)
        for admitted in started:
            self._start(admitted)

    def _admit_waiting(self, owner: str) -> list[Any]:
        used = self._used.setdefault(owner, [0.0, 0.0])
        started = []
        for job in list(self._waiting.get(owner, ())):
            cpu, memory = self._needs(job)
            if getattr(job, "cancelled", False):
                self._waiting[owner].remove(job)
            elif used[0] + cpu <= self._cpu + 1e-9 and used[1] + memory <= self._memory:
                used[0] += cpu
                used[1] += memory
                job.admitted = True
                self._waiting[owner].remove(job)
                started.append(job)
        return started

    def quota(self, sub: str) -> dict[str, Any]:
        """``GET /system/quotas/user``: 4.1 gives integers (milli-CPUs, bytes), 3.7 and 4.0 strings."""
        with self._lock:
            cpu_used, memory_used = self._used.get(sub, [0.0, 0.0])
        return {"user_id": sub, "cluster_queue": f"oscar-cq-{sub}",
                "resources": {"cpu": (int(self._cpu * 1000), int(cpu_used * 1000)),
                              "memory": (int(self._memory), int(memory_used))}}
