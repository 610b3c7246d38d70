"""Job records and their logs, as ``/system/logs`` reports them."""

from __future__ import annotations

import builtins
import contextlib
import datetime as _dt
import os
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

# Kubernetes pod phases, which OSCAR reports as job statuses.
PENDING = "Pending"
RUNNING = "Running"
SUCCEEDED = "Succeeded"
FAILED = "Failed"
SUSPENDED = "Suspended"  # OSCAR's word (3.6.4 and later) for a job without a pod: Kueue holds it


def _utc_now() -> str:
    # RFC 3339 like Kubernetes' timestamps, with microseconds (Kubernetes
    # rounds to seconds; timelines of short functions need more).
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def job_name(service: str) -> str:
    """OSCAR's job names: ``<service>-<uuid4>``, the service cut to 16 characters when it is long."""
    prefix = service[:16] if len(service) >= 25 else service
    return f"{prefix}-{uuid.uuid4()}"


@dataclass
class Job:
    """One invocation of a service; the service definition is frozen at submission, as in a Kubernetes Job."""

    name: str
    service: dict[str, Any]
    body: bytes
    log_path: str
    cpu: float
    status: str = PENDING
    owner: str | None = None  # OSCAR's job-owner label: the event's uploader, or the OIDC caller
    admitted: bool = False  # by Kueue (jobs of services not owned by the admin)
    creation_time: str = field(default_factory=_utc_now)
    start_time: str | None = None
    finish_time: str | None = None
    # Set by the runner while the job executes: stops it (kills its processes).
    cancel: Callable[[], None] | None = None
    cancelled: bool = False

    @property
    def service_name(self) -> str:
        return cast(str, self.service["name"])

    def log(self, message: str) -> None:
        """Append a supervisor line to the job's log."""
        stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M:%S,%f")[:-3]
        with open(self.log_path, "a", encoding="utf-8") as handle:
            handle.write(f"{stamp} - supervisor - INFO - {message}\n")

    def mark_running(self) -> None:
        self.status = RUNNING
        self.start_time = _utc_now()

    def mark_finished(self, status: str) -> None:
        self.status = status
        self.finish_time = _utc_now()

    def info(self) -> dict[str, Any]:
        info: dict[str, Any] = {"status": self.status, "creation_time": self.creation_time}
        if self.start_time:
            info["start_time"] = self.start_time
        if self.finish_time:
            info["finish_time"] = self.finish_time
        return info


class JobStore:
    """All jobs by service, in submission order; logs live under ``log_dir/<service>/<job>.log``."""

    def __init__(self, log_dir: str) -> None:
        self._log_dir = log_dir
        self._lock = threading.Lock()
        self._jobs: dict[str, dict[str, Job]] = {}

    def new(self, service: dict[str, Any], body: bytes, cpu: float, owner: str | None = None) -> Job:
        name = job_name(service["name"])
        directory = os.path.join(self._log_dir, service["name"])
        os.makedirs(directory, mode=0o700, exist_ok=True)
        job = Job(
            name=name,
            service=service,
            body=body,
            cpu=cpu,
            owner=owner,
            log_path=os.path.join(directory, name + ".log"),
        )
        open(job.log_path, "a").close()
        with self._lock:
            self._jobs.setdefault(service["name"], {})[name] = job
        return job

    def get(self, service: str, name: str) -> Job | None:
        with self._lock:
            return self._jobs.get(service, {}).get(name)

    def list(self, service: str) -> list[Job]:
        with self._lock:
            return list(self._jobs.get(service, {}).values())

    def remove(self, service: str, name: str) -> Job | None:
        with self._lock:
            job = self._jobs.get(service, {}).pop(name, None)
        if job is not None:
            self._drop(job)
        return job

    def remove_many(self, service: str, only_succeeded: bool) -> builtins.list[Job]:
        """``DELETE /system/logs/NAME``: succeeded jobs only, unless ``all=true`` (as OSCAR)."""
        with self._lock:
            jobs = self._jobs.get(service, {})
            chosen = [j for j in jobs.values() if not only_succeeded or j.status == SUCCEEDED]
            for job in chosen:
                del jobs[job.name]
        for job in chosen:
            self._drop(job)
        return chosen

    def read_log(self, job: Job) -> str:
        try:
            with open(job.log_path, encoding="utf-8", errors="replace") as handle:
                return handle.read()
        except FileNotFoundError:
            return ""

    @staticmethod
    def _drop(job: Job) -> None:
        if job.cancel is not None and job.status in (PENDING, RUNNING):
            job.cancel()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(job.log_path)
