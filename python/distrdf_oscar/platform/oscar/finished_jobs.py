"""Deleting the finished OSCAR jobs that served a client's jobs, so that the services' listings
stay short. The last functions finish just after the client has its result, so this runs in the
background, off the user's path, for up to ``FORGET_PATIENCE`` seconds after each job."""

from __future__ import annotations

import logging
import threading
import time

from ..deployment import Deployment
from .cluster import OSCARCluster
from .errors import OSCARError

log = logging.getLogger(__name__)

FORGET_PATIENCE, FORGET_INTERVAL = 60.0, 2.0  # how long, how often to retry deleting finished OSCAR jobs
FORGETTER_THREAD = "forget-oscar-jobs"


class FinishedJobs:
    """The OSCAR jobs of ``deployment``'s services still to delete once they finish."""

    def __init__(self, cluster: OSCARCluster, deployment: Deployment) -> None:
        self.cluster = cluster
        self.deployment = deployment
        self._lock = threading.Lock()
        self._unfinished: dict[str, set[str]] = {}  # service -> OSCAR jobs to delete once finished
        self._forgetter: threading.Thread | None = None

    def forget(self, functions: dict[str, list[str]]) -> None:
        """Delete, in the background, the OSCAR jobs named per role in ``functions``."""
        with self._lock:
            for role, names in functions.items():
                self._unfinished.setdefault(self.deployment.service_name(role), set()).update(names)
            if not self._unfinished or (self._forgetter is not None and self._forgetter.is_alive()):
                return
            self._forgetter = threading.Thread(
                target=self._forget_finished, name=FORGETTER_THREAD, daemon=True
            )
            self._forgetter.start()

    def _forget_finished(self) -> None:
        deadline = time.monotonic() + FORGET_PATIENCE
        while time.monotonic() < deadline:
            with self._lock:
                pending = {service: set(names) for service, names in self._unfinished.items()}
            for service, names in pending.items():
                try:
                    done = self.cluster.remove_jobs(service, names)
                except OSCARError as exc:
                    # Only bookkeeping: try again after the next job (the cluster may be gone for good).
                    log.debug("could not delete finished OSCAR jobs of %s: %s", service, exc)
                    return
                with self._lock:
                    left = self._unfinished.get(service, set()) - done
                    if left:
                        self._unfinished[service] = left
                    else:
                        self._unfinished.pop(service, None)
            with self._lock:
                if not self._unfinished:
                    return
            time.sleep(FORGET_INTERVAL)

    def wait(self, timeout: float = FORGET_PATIENCE) -> bool:
        """Wait until every job handed to :meth:`forget` is deleted; whether they all are."""
        thread = self._forgetter
        if thread is not None:
            thread.join(timeout)
        with self._lock:
            return not self._unfinished
