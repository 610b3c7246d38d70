"""``LocalCluster``: the embedded OSCAR-compatible platform, as a context manager.

Everything runs on loopback in a child process tree (S3 server, OSCAR REST
API, trigger poller, function runner) that ``close()`` removes entirely.
The executors it hands out reach it through the same ``oscar-python`` and
``minio`` calls as a real cluster.
"""

from __future__ import annotations

import secrets
import sys
from typing import Any, Self

from .client.executor import OSCARExecutor
from .platform.deployment import COORDINATOR_CPU, Deployment
from .platform.embedded import LocalPlatform
from .platform.embedded.launcher import POD_START_DELAY

MODES = ("warm", "cold", "prestarted")
POOL_START_TIMEOUT = 120.0  # seconds for the pool's workers to import ROOT and report


class LocalCluster:
    """An OSCAR-compatible platform on this machine.

    Args:
        workers: CPU slots; at most this many one-core functions run at once.
        mode: ``"warm"`` (the default: the file-triggered services run cold, as OSCAR's
            Kubernetes jobs, and a warm pool of ``workers`` long-lived workers, an OSCAR exposed
            service as ``distrdf-oscar pool start`` runs on a real cluster, takes the jobs'
            mapper calls, tree merges, coordinators and batches), ``"cold"`` (no pool: every
            call a fresh process) or ``"prestarted"`` (no pool; the platform runs invocations in
            pre-started processes with ROOT imported: a speed-up of the cold path for the
            test suite, without an OSCAR counterpart; see docs/local-platform.md).
        startup_delay: seconds added to every file-triggered call before it runs, as a pod's
            start-up (the slot is taken meanwhile). Default: ``POD_START_DELAY`` (2 s, what an
            OSCAR job's pod costs before its script starts, see the embedded platform's launcher)
            in the ``"cold"`` and ``"warm"`` modes, none in ``"prestarted"``.
        platform_options: passed to :class:`~distrdf_oscar.platform.embedded.LocalPlatform`, e.g.
            ``oscar_version="3.6"`` to behave as that OSCAR release (default: the newest supported).
    """

    def __init__(
        self,
        workers: int = 2,
        mode: str = "warm",
        startup_delay: float | None = None,
        **platform_options: Any,
    ):
        if mode not in MODES:
            raise ValueError(f"LocalCluster mode must be one of {', '.join(MODES)}, got {mode!r}")
        if workers < 1:
            raise ValueError(f"LocalCluster needs at least one worker, got {workers}")
        self.workers = workers
        self.mode = mode
        if startup_delay is None:
            startup_delay = 0.0 if mode == "prestarted" else POD_START_DELAY
        # Headroom for a coordinator's fractional request, so it never takes a mapper's slot.
        platform_options.setdefault("headroom", float(COORDINATOR_CPU))
        self.platform = LocalPlatform(
            workers=workers,
            mode="cold" if mode == "warm" else mode,
            startup_delay=startup_delay,
            **platform_options,
        )
        self._started = False
        # The deployment's signing key lives as long as the cluster, in memory only.
        self._signing_key = secrets.token_hex(32)

    def start(self) -> LocalCluster:
        if not self._started:
            self.platform.start()
            self._started = True
            if self.mode == "warm":
                try:
                    executor = self.executor(progress=False)
                    executor.start_pool(self.workers, wait=POOL_START_TIMEOUT)
                    if len(executor.pool_workers()) < self.workers:
                        raise RuntimeError(
                            f"the warm pool's {self.workers} workers did not report within "
                            f"{POOL_START_TIMEOUT:.0f} s (see the platform's log)"
                        )
                except BaseException:
                    self.close()
                    raise
        return self

    def close(self) -> None:
        if self._started:
            self.platform.stop()
            self._started = False

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def environment(self) -> dict[str, str]:
        """The variables that point a client, or ``distrdf-oscar``, at this cluster and its
        deployment (as ``minikube docker-env`` does): ``os.environ.update(cluster.environment())``."""
        self.start()
        assert self.platform.oscar_endpoint is not None
        assert self.platform.oscar_password is not None
        return {
            "OSCAR_ENDPOINT": self.platform.oscar_endpoint,
            "OSCAR_USER": self.platform.oscar_user,
            "OSCAR_PASSWORD": self.platform.oscar_password,
            "DISTRDF_OSCAR_KEY": self._signing_key,
            "DISTRDF_OSCAR_DEPLOYMENT": self.deployment().name,
        }

    def deployment(self, name: str = "distrdf") -> Deployment:
        # Functions run this interpreter, so they see the same installed packages.
        return Deployment(name=name, variables={"DRO_PYTHON": sys.executable})

    def executor(self, reduction: Any = None, **options: Any) -> OSCARExecutor:
        """An executor for this cluster; ``options`` as for :class:`OSCARExecutor`."""
        self.start()
        options.setdefault("concurrency", self.workers)
        options.setdefault("auto_deploy", True)
        options.setdefault("deployment", self.deployment())
        options.setdefault("shared_paths", ("/",))  # the functions run on this machine
        assert self.platform.oscar_endpoint is not None
        return OSCARExecutor(
            self.platform.oscar_endpoint,
            user=self.platform.oscar_user,
            password=self.platform.oscar_password,
            signing_key=self._signing_key,
            reduction=reduction,
            **options,
        )
