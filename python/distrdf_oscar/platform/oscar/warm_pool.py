"""A deployment's warm pool as an operator runs it: start (or resize) it, stop it, see its workers."""

from __future__ import annotations

import logging
import time

from ...protocol.heartbeats import live_workers
from ...protocol.messages import Heartbeat
from ...protocol.storage import Storage
from ..deployment import Deployment
from .cluster import OSCARCluster

log = logging.getLogger(__name__)


class WarmPool:
    """The warm pool of ``deployment`` on ``cluster`` (an OSCAR exposed service of long-lived
    workers, functions/pool.py), whose workers report to ``storage``."""

    def __init__(self, cluster: OSCARCluster, deployment: Deployment, storage: Storage) -> None:
        self.cluster = cluster
        self.deployment = deployment
        self.storage = storage

    def start(self, size: int, wait: float = 0.0) -> str:
        """Start (or resize) the pool to ``size`` workers; with ``wait``, wait up to that many
        seconds for them to report. Returns what OSCAR was asked to do (created, updated, replaced)."""
        # The workers run any submitter's code: they get keys that reach only this deployment's
        # buckets, not the operator's (for basic auth, MinIO's root keys).
        earlier = {beat.worker for beat in self.workers()}
        keys, fallback = self.cluster.pool_account(self.deployment, self.storage.config)
        if fallback:
            log.warning("pool %s: %s", self.deployment.service_name("pool"), fallback)
        done = self.cluster.start_pool(self.deployment, size, keys)
        # Workers started before hold the account's previous secret, refused from now on: only
        # workers that report after the start count (the earlier ones' heartbeats lapse).
        deadline = time.monotonic() + wait
        while len({beat.worker for beat in self.workers()} - earlier) < size and time.monotonic() < deadline:
            time.sleep(0.5)
        return done

    def stop(self) -> str:
        """Stop the pool (jobs then use the file-triggered services)."""
        return self.cluster.stop_pool(self.deployment)

    def workers(self) -> list[Heartbeat]:
        """The pool's live workers."""
        return live_workers(self.storage)
