"""Fault injection: the failures of a real OSCAR cluster, on demand.

A real cluster loses MinIO webhook calls (no queue), delivers some twice,
kills functions when nodes go away, has slow nodes, and its MinIO answers
503 or refuses connections while it restarts. Rules here reproduce each of
these, so the client's recovery can be tested and problems reproduced:

- ``drop_trigger``: an object appears but the service is not invoked.
- ``duplicate_trigger``: the service is invoked twice for one object.
- ``kill``: the function is killed (SIGKILL, no clean-up) just before or just
  after it uploads its first object (``when="before-write"`` / ``"after-write"``).
  Every matching invocation is armed; the first ``times`` that reach the point
  die (each takes a token file, atomically), so a function that never writes
  (e.g. a reducer whose group is incomplete) does not use the fault up.
- ``delay``: the function starts ``seconds`` late, holding its CPU slot (a straggler).
- ``storage_outage``: the S3 endpoint clients use answers ``503 SlowDown``
  (``mode="503"``) or refuses connections (``mode="refuse"``) for ``seconds``,
  starting ``after`` seconds after the rule is added.

Not a rule but OSCAR's own doing: :class:`MinioRestarts`, the restart of MinIO on
every service create and delete.

A rule matches by service role (``mapper``, ``reducer``, ``coordinator``,
``batch``, or ``None`` for any) and by a glob on the triggering object key, and
fires ``times`` times. The platform reports how often each rule fired, so a
test can tell that the fault really happened.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import shutil
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .gate import StorageGate

# How a function learns where to die: the failpoint it must stop at.

log = logging.getLogger(__name__)

# How long MinIO refuses connections when OSCAR restarts it. An estimate: MinIO's ServiceRestart
# stops serving (pending requests get up to 5 s, says OSCAR), re-executes its binary and loads its
# configuration, IAM and bucket metadata again, a second or two for a small single-node server; no
# OSCAR cluster could be measured here. OSCAR itself allows 6 s before it checks that MinIO is back
# (pkg/utils/minio.go RestartServer, v3.5.3 to v4.1.2).
RESTART_SECONDS = 2.0
RESTART_SECONDS_VARIABLE = "DRO_LOCAL_MINIO_RESTART_SECONDS"  # overrides it for a whole test run

KINDS = ("drop_trigger", "duplicate_trigger", "kill", "delay", "storage_outage")
KILL_POINTS = ("before-write", "after-write")
OUTAGE_MODES = ("503", "refuse")


@dataclass
class Fault:
    """One fault rule; build it with the class methods."""

    kind: str
    service: str | None = None  # role: mapper, reducer, coordinator, batch; None: any
    key: str = "*"  # glob on the triggering object key
    times: int = 1
    when: str | None = None  # kill: before-write / after-write
    seconds: float = 0.0  # delay, storage_outage
    mode: str | None = None  # storage_outage: 503 / refuse
    after: float = 0.0  # storage_outage: start this many seconds after the rule is added
    fired: int = field(default=0)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; one of {KINDS}")
        if self.kind == "kill" and self.when not in KILL_POINTS:
            raise ValueError(f"a kill fault needs when= one of {KILL_POINTS}, got {self.when!r}")
        if self.kind == "storage_outage" and self.mode not in OUTAGE_MODES:
            raise ValueError(f"a storage outage needs mode= one of {OUTAGE_MODES}, got {self.mode!r}")
        if self.times < 1 or self.seconds < 0 or self.after < 0:
            raise ValueError("times must be at least 1, seconds and after must not be negative")

    @classmethod
    def drop_trigger(cls, service: str | None = None, key: str = "*", times: int = 1) -> Fault:
        return cls("drop_trigger", service, key, times)

    @classmethod
    def duplicate_trigger(cls, service: str | None = None, key: str = "*", times: int = 1) -> Fault:
        return cls("duplicate_trigger", service, key, times)

    @classmethod
    def kill(
        cls, service: str | None = None, when: str = "before-write", key: str = "*", times: int = 1
    ) -> Fault:
        return cls("kill", service, key, times, when=when)

    @classmethod
    def delay(
        cls, service: str | None = None, seconds: float = 10.0, key: str = "*", times: int = 1
    ) -> Fault:
        return cls("delay", service, key, times, seconds=seconds)

    @classmethod
    def storage_outage(cls, seconds: float, mode: str = "503", after: float = 0.0) -> Fault:
        return cls("storage_outage", seconds=seconds, mode=mode, after=after)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Fault:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    def matches(self, kind: str, service_name: str, key: str, unlimited: bool = False) -> bool:
        role_ok = (
            self.service is None or service_name == self.service or service_name.endswith("-" + self.service)
        )
        left = unlimited or self.fired < self.times
        return self.kind == kind and left and role_ok and fnmatch.fnmatchcase(key, self.key)


class FaultPlan:
    """The active rules of a platform; thread-safe, each match consumes one firing."""

    def __init__(self, gate: StorageGate | None = None, token_dir: str | None = None) -> None:
        self._lock = threading.Lock()
        self._rules: list[Fault] = []
        self._tokens: dict[int, str] = {}  # kill rule (by id) -> its directory of tokens
        self._gate = gate
        self._token_dir = token_dir  # where kill rules keep their tokens (in the platform's directory)

    def add(self, rules: list[Fault]) -> None:
        if any(rule.kind == "storage_outage" for rule in rules) and self._gate is None:
            raise ValueError("storage outages need a platform started with fault_injection=True")
        if any(rule.kind == "kill" for rule in rules) and self._token_dir is None:
            raise ValueError("kill faults need a directory for their tokens")
        with self._lock:
            for rule in rules:
                if rule.kind == "kill":
                    assert self._token_dir is not None
                    folder = os.path.join(self._token_dir, f"kill-{len(self._tokens)}")
                    os.makedirs(folder)
                    for n in range(rule.times):
                        open(os.path.join(folder, str(n)), "w").close()
                    self._tokens[id(rule)] = folder
            self._rules.extend(rules)
        for rule in rules:
            if rule.kind == "storage_outage":
                assert self._gate is not None
                self._gate.schedule(rule)

    @property
    def gate(self) -> StorageGate | None:
        """The storage front, when the platform was started with fault injection."""
        return self._gate

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()
            for folder in self._tokens.values():
                shutil.rmtree(folder, ignore_errors=True)
            self._tokens.clear()

    def report(self) -> list[dict[str, Any]]:
        with self._lock:
            for rule in self._rules:
                if rule.kind == "kill":
                    rule.fired = rule.times - len(os.listdir(self._tokens[id(rule)]))
            return [rule.to_json() for rule in self._rules]

    def take(self, kind: str, service_name: str, key: str) -> Fault | None:
        """The first rule of ``kind`` matching this invocation, counted as fired."""
        with self._lock:
            for rule in self._rules:
                if rule.matches(kind, service_name, key):
                    rule.fired += 1
                    log.warning("fault injected: %s on %s (%s)", kind, key, service_name)
                    return rule
        return None

    def arm_kill(self, service_name: str, key: str) -> str | None:
        """The failpoint setting for an invocation a kill rule matches: ``<when>:<token dir>``."""
        with self._lock:
            for rule in self._rules:
                folder = self._tokens.get(id(rule))
                if (
                    folder
                    and rule.kind == "kill"
                    and os.listdir(folder)
                    and rule.matches("kill", service_name, key, unlimited=True)
                ):
                    return f"{rule.when}:{folder}"
        return None


class MinioRestarts:
    """MinIO's restart whenever OSCAR changes its webhooks (an emulator model, not a fault rule).

    OSCAR registers a service's MinIO webhook on create and removes it on delete, each time with
    MinIO's admin ``ServiceRestart`` and a 6 s sleep before it checks MinIO is back
    (pkg/handlers/create.go registerMinIOWebhook, delete.go removeMinIOWebhook,
    pkg/utils/minio.go RestartServer, v3.5.3 to v4.1.2); an update does it once per bucket it adds
    (update.go, 3.6.0 and later). Each restart here refuses connections for ``seconds`` and cuts
    the open ones, through the storage front; the API answers once it is over (OSCAR: after its
    6 s). Restarts are serialised. Without a storage front (an API built without the platform
    process, as some tests do) restarts are only counted.
    """

    def __init__(self, gate: StorageGate | None, seconds: float = RESTART_SECONDS) -> None:
        self._gate = gate
        self.seconds = seconds
        self.count = 0
        self._lock = threading.Lock()

    @property
    def modelled(self) -> bool:
        return self._gate is not None

    def restart(self, times: int = 1) -> None:
        for _ in range(times):
            with self._lock:
                self.count += 1
                if self._gate is None or self.seconds <= 0:
                    continue
                log.warning("MinIO restarts: storage refuses connections for %.1f s", self.seconds)
                self._gate._begin("refuse")
                try:
                    time.sleep(self.seconds)
                finally:
                    self._gate._end()

    def report(self) -> dict[str, Any]:
        return {"restart_seconds": self.seconds, "restarts": self.count, "modelled": self.modelled}
