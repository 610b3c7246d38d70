"""``OSCARExecutor``: what users pass as ``executor=`` to ``ROOT.RDataFrame``."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..platform.deployment import POOL, ROLES
from ..platform.oscar.cluster import OSCARCluster
from ..platform.oscar.errors import OSCARError
from ..platform.oscar.finished_jobs import FORGET_PATIENCE, FinishedJobs
from ..platform.oscar.warm_pool import WarmPool
from ..protocol import plan, timeline
from ..protocol.heartbeats import live_workers
from ..protocol.messages import Heartbeat
from ..protocol.quantities import parse_quantity
from ..protocol.signing import Signer
from ..protocol.storage import Storage
from . import failures, reductions, simulate
from .job import Job, JobFiles
from .recovery import JobTimeout, RemoteError
from .settings import ConfigurationError, Settings

log = logging.getLogger(__name__)

IDLE_LISTING_PERIOD = 3.0  # seconds between two job listings of one service


class OSCARExecutor:
    """Runs distributed RDataFrame graphs as serverless jobs on an OSCAR cluster.

    ``OSCARExecutor(endpoint, signing_key=..., **options)`` takes the fields of
    :class:`~distrdf_oscar.client.settings.Settings` as keyword arguments (they are documented
    there), or ``OSCARExecutor(settings)`` a ready :class:`Settings`; :meth:`from_env` reads them
    from the environment. Bad settings raise :class:`ConfigurationError` naming each problem.
    """

    def __init__(self, endpoint: str | Settings, **options: Any) -> None:
        if isinstance(endpoint, Settings):
            if options:
                raise TypeError("OSCARExecutor takes Settings or keyword options, not both")
            settings = endpoint
        else:
            if options.get("deployment") is None:
                options.pop("deployment", None)
            settings = Settings(endpoint, **options)
        self.settings = settings
        self._signer = Signer(settings.signing_key)
        self.reduction = reductions.resolve(settings.reduction)
        deployment = settings.deployment.with_signing_key(settings.signing_key)
        if settings.dataset_credentials:
            try:
                deployment = deployment.with_dataset_credentials()
            except ValueError as exc:
                raise ConfigurationError(str(exc)) from None
        self.deployment = deployment
        self.cluster = OSCARCluster(
            settings.endpoint,
            user=settings.user,
            password=settings.password,
            token=settings.token,
            verify=settings.ssl_verify,
            oidc_account=settings.oidc_account,
            refresh_token=settings.refresh_token,
        )
        self.options = settings.job_options()
        self._storage: Storage | None = None
        self.last_job: Job | None = None  # the most recent job, for its timeline
        self.last_choice: simulate.Choice | None = None  # what reduction="auto" chose for it, and why
        self._lock = threading.Lock()
        self._listings: dict[str, tuple[float, bool]] = {}  # service -> (monotonic time, idle)
        self._finished = FinishedJobs(self.cluster, self.deployment)
        self._quota: tuple[Any, dict[str, Any]] | None = None  # (own quota, live services), read once

    # The settings a job reads, by name (the executor's public attributes before Settings existed).
    @property
    def concurrency(self) -> int:
        return self.settings.concurrency

    @property
    def ranges_per_call(self) -> int | None:
        return self.settings.ranges_per_call

    @property
    def pool(self) -> bool | None:
        return self.settings.pool

    @property
    def auto_deploy(self) -> bool:
        return self.settings.auto_deploy

    @property
    def shared_paths(self) -> tuple[str, ...]:
        return tuple(self.settings.shared_paths)

    @shared_paths.setter
    def shared_paths(self, paths: Sequence[str]) -> None:
        self.settings = self.settings.replace(shared_paths=tuple(paths))

    def __repr__(self) -> str:
        return (
            f"OSCARExecutor(endpoint={self.cluster.endpoint!r}, deployment={self.deployment.name!r}, "
            f"reduction={self.reduction!r})"
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> OSCARExecutor:
        """An executor of :meth:`Settings.from_env <distrdf_oscar.client.settings.Settings.from_env>`."""
        return cls(Settings.from_env(environ, **overrides))

    @classmethod
    def from_cluster(cls, name: str | None = None, **overrides: Any) -> OSCARExecutor:
        """An executor for oscar-cli's cluster ``name`` (its default cluster if None), the
        environment's variables still winning; see ``platform/oscar/cli_config.py``."""
        return cls(Settings.from_env(cluster=name or "", **overrides))  # "": oscar-cli's default

    def unchecked_storage(self) -> Storage:
        """The deployment's storage, without looking at the services or buckets (deploy, undeploy)."""
        config = self.settings.storage or self.cluster.storage_config(
            self.deployment.bucket_name, self.settings.ssl_verify
        )
        if self.settings.storage_endpoint:
            config = dataclasses.replace(config, endpoint=self.settings.storage_endpoint)
        return Storage(config, signer=self._signer)

    def upload(self, paths: Sequence[str], folder: str = "", progress: bool | None = None) -> list[str]:
        """Upload a local dataset to the deployment's object storage; returns the ``s3://`` URLs
        to analyse (the mappers stage what their ranges read)."""
        from ..protocol import datasets

        return datasets.upload(
            self.storage, paths, folder, self.options.progress if progress is None else progress
        )

    # -- warm pools (operators) ------------------------------------------------------------------

    def start_pool(self, size: int, wait: float = 0.0) -> str:
        """Start (or resize) the deployment's warm pool (:meth:`WarmPool.start
        <distrdf_oscar.platform.oscar.warm_pool.WarmPool.start>`)."""
        return WarmPool(self.cluster, self.deployment, self.storage).start(size, wait)

    def stop_pool(self) -> str:
        """Stop the deployment's warm pool (jobs then use the file-triggered services)."""
        return WarmPool(self.cluster, self.deployment, self.storage).stop()

    def pool_workers(self) -> list[Heartbeat]:
        """The live workers of the deployment's warm pool."""
        return live_workers(self.storage)

    @property
    def storage(self) -> Storage:
        """Connects on first use: storage settings, buckets, and the deployment's services."""
        with self._lock:
            if self._storage is None:
                storage = self.unchecked_storage()
                if self.auto_deploy:
                    self.cluster.deploy(self.deployment, storage)
                else:
                    self.cluster.check_deployed(self.deployment)
                storage.check_buckets()
                storage.conditional_writes  # noqa: B018  probed now: a storage fault shows before any job
                self._storage = storage
            return self._storage

    def _service_idle(self, folder: str, since: float) -> bool:
        """Whether a listing of the service fed by ``folder`` taken at ``since`` (monotonic) or
        later shows no function pending, suspended or running. False whenever OSCAR's answer
        cannot be trusted: an OIDC caller sees only the jobs it started itself (OSCAR filters
        the listing by ``job-owner``), not those the functions' own writes triggered; a listing
        with more pages than are read is incomplete. At most one listing per service every
        ``IDLE_LISTING_PERIOD`` seconds: the client polls often, and OSCAR's listing is costly."""
        if self.cluster.oidc:
            return False
        service = self.deployment.service_for_input(folder)
        with self._lock:
            taken, idle = self._listings.get(service, (-float("inf"), False))
            now = time.monotonic()
            if taken < since and now - taken >= IDLE_LISTING_PERIOD:
                try:
                    listing = self.cluster.job_listing(service)
                    taken, idle = now, listing.complete and listing.busy == 0
                except OSCARError:
                    taken, idle = now, False  # cannot tell: wait for the quiet-spell rule instead
                self._listings[service] = (taken, idle)
        return taken >= since and idle

    def run_job(
        self,
        ranges: Sequence[Any],
        mapper: Callable[[Any], Any],
        files: JobFiles,
        on_partial: Callable[[Any], None] | None = None,
        reduction: reductions.ReductionChoice | str | None = None,
    ) -> Any:
        """One DistRDF ``ProcessAndMerge``: returns the merged ``TaskResult``."""
        use_pool = self._use_pool()
        chosen = reductions.strategy(
            reductions.resolve(reduction or self.reduction),
            len(ranges),
            self.concurrency,
            self.ranges_per_call,
            use_pool,
        )
        if chosen.choice is not None:
            log.info(
                "reduction=auto for %d partitions%s: %s",
                len(ranges),
                " on the warm pool" if use_pool else "",
                chosen.choice.describe(),
            )
        self.last_choice = chosen.choice
        self.check_quota(chosen.reduction)
        # A pool job's work runs in pool workers, not OSCAR jobs: OSCAR's listing cannot tell that
        # its services are idle, so losses are found by the quiet-spell rule alone.
        job = Job(
            self.storage,
            chosen,
            self.options,
            idle=None if use_pool else self._service_idle,
            requests=self._requests(),
        )
        self.last_job = job
        kept: dict[str, set[str]] = {}
        try:
            return job.run(ranges, mapper, files, on_partial=on_partial)
        except (RemoteError, JobTimeout) as exc:
            # The failed functions' OSCAR jobs stay, with their logs, for `distrdf-oscar logs`: those
            # that reported; all of the job's when none did (a timeout: any of them may tell why).
            markers = [exc.marker] if isinstance(exc, RemoteError) and exc.marker is not None else []
            services = {self.deployment.service_name(role): names for role, names in job.functions.items()}
            kept = failures.keep(job.job_id, markers, {} if markers else services).kept_jobs()
            raise
        finally:
            self._finished.forget(
                {
                    role: [n for n in names if n not in kept.get(self.deployment.service_name(role), set())]
                    for role, names in job.functions.items()
                }
            )

    def _requests(self) -> dict[str, timeline.Request]:
        """What each service's pods request, for the job record (the pool's definition is built
        for its requests alone: its size and keys change none)."""
        requests = {role: timeline.Request.of(self.deployment.service(role)) for role in ROLES}
        requests[POOL] = timeline.Request.of(self.deployment.pool_service(1, ("", ""), (0, 0, 0)))
        return requests

    def _use_pool(self) -> bool:
        if self.pool is False:
            return False
        workers = live_workers(self.storage)
        if self.pool and not workers:
            raise ConfigurationError(
                f"no warm pool is up for deployment {self.deployment.name!r} (pool=True): "
                "ask the operator to run `distrdf-oscar pool start`, or leave pool unset"
            )
        return bool(workers)

    def check_quota(self, reduction: plan.Reduction) -> None:
        """Refuse a reduction that the caller's Kueue quota can never run.

        The jobs of services an OIDC user owns are admitted from that user's queue (3.7 and
        later; 2 CPUs and 2Gi by default). A coordinator runs for the whole job, so the mappers
        and batch reducers must fit beside it, or they wait for ever and so does the job."""
        if not self.cluster.oidc:
            return
        with self._lock:
            if self._quota is None:
                self._quota = (self.cluster.own_quota(), self.cluster.services())
            quota, services = self._quota
        names = {role: self.deployment.service_name(role) for role in ROLES}
        if quota is None or any(name not in services for name in names.values()):
            return
        user, cpu_max, memory_max = quota
        if services[names["mapper"]].get("owner") != user:
            return  # queued (if at all) under its owner's quota, which only the owner can read

        def needs(role: str) -> tuple[float, float]:
            service = services[names[role]]
            return parse_quantity(service.get("cpu") or "0.2"), parse_quantity(
                service.get("memory") or "256Mi"
            )

        if isinstance(reduction, plan.CoordinatedReduction):
            alongside = [needs("coordinator")]
            workers = ("mapper", "batch")
        else:
            alongside, workers = [], ("mapper", "reducer")
        for worker in workers:
            together = [needs(worker), *alongside]
            cpu, memory = sum(n[0] for n in together), sum(n[1] for n in together)
            if cpu > cpu_max + 1e-9 or memory > memory_max:
                who = f"the {worker} beside the coordinator" if alongside else f"the {worker}"
                raise ConfigurationError(
                    f"{reduction!r} cannot run under your Kueue quota on {self.cluster.endpoint} ({cpu_max:g} CPUs, "
                    f"{_gib(memory_max)}): {who} needs {cpu:g} CPUs and {_gib(memory)}, so it would never be "
                    "admitted. Redeploy with less memory per function (distrdf-oscar deploy --memory ...), ask for "
                    "a larger quota, or use another reduction"
                )

    def wait_for_bookkeeping(self, timeout: float = FORGET_PATIENCE) -> bool:
        """Wait until the finished OSCAR jobs of past jobs are deleted; whether they all are."""
        return self._finished.wait(timeout)


def _gib(size: float) -> str:
    return f"{size / (1 << 30):g}Gi"


__all__ = ["ConfigurationError", "OSCARError", "OSCARExecutor", "Settings"]
