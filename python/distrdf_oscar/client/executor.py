"""``OSCARExecutor``: what users pass as ``executor=`` to ``ROOT.RDataFrame``."""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..platform.deployment import ROLES, Deployment
from ..platform.oscar import OSCARCluster, OSCARError
from ..protocol import plan
from ..protocol.messages import Heartbeat
from ..protocol.quantities import parse_quantity
from ..protocol.signing import Signer
from ..protocol.storage import Storage, StorageConfig
from . import reductions, simulate
from .job import Job, JobFiles, JobOptions
from .pools import live_workers
from .recovery import RetryPolicy
from .snapshots import check_mode as check_snapshot_mode

log = logging.getLogger(__name__)

IDLE_LISTING_PERIOD = 3.0  # seconds between two job listings of one service
FORGET_PATIENCE, FORGET_INTERVAL = 60.0, 2.0  # how long, how often to retry deleting finished OSCAR jobs

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class ConfigurationError(ValueError):
    """A missing or malformed setting; the message names it."""


class OSCARExecutor:
    """Runs distributed RDataFrame graphs as serverless jobs on an OSCAR cluster.

    Args:
        endpoint: OSCAR's URL.
        signing_key: the deployment's key (an OSCAR secret of its services): every object
            the job writes is signed with it and every object it reads is verified.
        user, password: basic-auth credentials; or ``token``: an OIDC access token.
        ssl_verify: verify TLS certificates (default); turning it off prints a warning.
        storage: the MinIO to use; by default the one the cluster advertises.
        storage_endpoint: reach the storage at this URL instead of the one the cluster advertises
            (often cluster-internal, e.g. ``https://minio-service.minio:9000``), keeping its keys.
        deployment: the long-lived services to use (created on first use if missing).
        reduction: ``"auto"`` (``AutoReduction``, the default): per job, the tree fan-in or
            coordinated plan, and the ranges per call unless set, that the simulator predicts
            fastest on this platform; the choice is logged and kept in ``last_choice``
            (``last_job.reduction`` is the concrete one). Or a fixed ``TreeReduction(fan_in)`` or
            ``CoordinatedReduction(plan)``.
        concurrency: default number of partitions (the cluster's parallelism).
        auto_deploy: create or update the deployment's services on first use (off: an
            operator deploys with ``distrdf-oscar deploy``, and analysts' clients only check).
        retries: how often each task (a range, a reduction, the coordinator) may be triggered
            again when its output is overdue or it failed transiently (default 3; 0 disables).
        retry_after: seconds; the shortest quiet spell (no new output) after which what is
            missing counts as lost (default 60: a cold start on a busy cluster can take that long).
        retry_factor: a quiet spell also counts as a loss only once it is this many times longer
            than the longest one the job has seen (default 3). See ``docs/reliability.md``.
        ranges_per_call: entry ranges one mapper call processes (its partial covers them all);
            by default ``npartitions / concurrency`` (one call per slot: a file-triggered call's
            fixed cost, pod, imports and JIT, is paid once), or ``npartitions / (4 x concurrency)``
            for a warm pool's job; 1 with an explicit coordinated plan, whose batch sizes count one
            partial per range. See ``simulate.choose_ranges_per_call``.
        pool: offer the mapper calls to the deployment's warm pool (an OSCAR exposed service of
            long-lived workers, ``distrdf-oscar pool start``): None (default) when one is up, True
            to require one, False never. Pool jobs merge their tree inline, in the workers.
        pool_overflow_after: seconds without a pool worker claiming a call after which the
            unclaimed calls go to the file-triggered mappers (default 30).
        poll_interval, progress: see :class:`distrdf_oscar.client.job.JobOptions`.
        snapshots: where a Snapshot's files go: "download" (default: where the user asked),
            "merge" (one file there) or "storage" (kept in object storage, read by URL). See
            ``snapshots.py``.
        dataset_credentials: give the services this client's ``S3_ACCESS_KEY``/``S3_SECRET_KEY`` as
            OSCAR secrets, for ``s3http(s)://`` datasets on another S3 endpoint (with
            ``auto_deploy``, as on ``LocalCluster``; on a real cluster the operator runs
            ``distrdf-oscar deploy --dataset-credentials``).
        shared_paths: local folders the functions can read too (a file system the cluster mounts,
            such as ``/cvmfs``); a dataset file elsewhere on the client's disk is refused at
            submission. ``LocalCluster`` shares ``/``. See ``datasets.py``.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        signing_key: str,
        user: str | None = None,
        password: str | None = None,
        token: str | None = None,
        ssl_verify: bool = True,
        storage: StorageConfig | None = None,
        storage_endpoint: str | None = None,
        deployment: Deployment | None = None,
        reduction: reductions.ReductionChoice | str | None = None,
        concurrency: int = 8,
        auto_deploy: bool = False,
        poll_interval: float = 0.2,
        retries: int = 3,
        retry_after: float = 60.0,
        retry_factor: float = 3.0,
        progress: bool = True,
        shared_paths: Sequence[str] = (),
        snapshots: str = "download",
        dataset_credentials: bool = False,
        ranges_per_call: int | None = None,
        pool: bool | None = None,
        pool_overflow_after: float = 30.0,
    ) -> None:
        if not ssl_verify:
            warnings.warn(f"TLS certificate verification is disabled for {endpoint}", stacklevel=2)
        if concurrency < 1:
            raise ConfigurationError(f"concurrency must be at least 1, got {concurrency}")
        try:
            self._signer = Signer(signing_key)
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from None
        self.reduction = reductions.resolve(reduction)
        self.deployment = (deployment or Deployment()).with_signing_key(signing_key)
        if dataset_credentials:
            try:
                self.deployment = self.deployment.with_dataset_credentials()
            except ValueError as exc:
                raise ConfigurationError(str(exc)) from None
        self.cluster = OSCARCluster(endpoint, user=user, password=password, token=token, verify=ssl_verify)
        self._storage_config = storage
        self._storage_endpoint = storage_endpoint
        self._ssl_verify = ssl_verify
        self.concurrency = concurrency
        if ranges_per_call is not None:
            try:
                plan.check_ranges_per_call(ranges_per_call)
            except plan.PlanError as exc:
                raise ConfigurationError(str(exc)) from None
        self.ranges_per_call = ranges_per_call
        self.auto_deploy = auto_deploy
        self.shared_paths = tuple(shared_paths)
        try:
            policy = RetryPolicy(retries=retries, retry_after=retry_after, retry_factor=retry_factor)
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from None
        try:
            snapshot_mode = check_snapshot_mode(snapshots)
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from None
        if pool not in (None, True, False):
            raise ConfigurationError(f"pool must be None (use one when up), True or False, got {pool!r}")
        if pool_overflow_after <= 0:
            raise ConfigurationError(f"pool_overflow_after must be positive, got {pool_overflow_after!r}")
        self.pool = pool
        self.options = JobOptions(
            poll_interval=poll_interval,
            progress=progress,
            retry=policy,
            snapshots=snapshot_mode,
            pool_overflow_after=pool_overflow_after,
        )
        self._storage: Storage | None = None
        self.last_job: Job | None = None  # the most recent job, for its timeline
        self.last_choice: simulate.Choice | None = None  # what reduction="auto" chose for it, and why
        self._lock = threading.Lock()
        self._listings: dict[str, tuple[float, bool]] = {}  # service -> (monotonic time, idle)
        self._unfinished: dict[str, set[str]] = {}  # service -> OSCAR jobs to delete once finished
        self._forgetter: threading.Thread | None = None
        self._quota: tuple[Any, dict[str, Any]] | None = None  # (own quota, live services), read once

    def __repr__(self) -> str:
        return (
            f"OSCARExecutor(endpoint={self.cluster.endpoint!r}, deployment={self.deployment.name!r}, "
            f"reduction={self.reduction!r})"
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> OSCARExecutor:
        """Settings from ``OSCAR_ENDPOINT``, ``OSCAR_USER``/``OSCAR_PASSWORD`` or ``OSCAR_TOKEN``,
        ``DISTRDF_OSCAR_KEY`` (the deployment's signing key), ``OSCAR_SSL_VERIFY``, and optionally
        ``MINIO_ENDPOINT`` (alone: the keys still come from the cluster) with
        ``MINIO_ACCESS_KEY``/``MINIO_SECRET_KEY``."""
        env = os.environ if environ is None else environ
        problems = []
        endpoint = env.get("OSCAR_ENDPOINT", "")
        if not endpoint:
            problems.append("OSCAR_ENDPOINT is not set")
        elif not endpoint.startswith(("http://", "https://")):
            problems.append(f"OSCAR_ENDPOINT must start with http:// or https:// (got {endpoint!r})")
        token = env.get("OSCAR_TOKEN")
        user, password = env.get("OSCAR_USER"), env.get("OSCAR_PASSWORD")
        if not token and not (user and password):
            problems.append("set OSCAR_USER and OSCAR_PASSWORD, or OSCAR_TOKEN")
        signing_key = env.get("DISTRDF_OSCAR_KEY", "")
        if len(signing_key) < 16:
            problems.append(
                "DISTRDF_OSCAR_KEY (the deployment's signing key) must be set, at least 16 characters"
                if signing_key
                else "DISTRDF_OSCAR_KEY (the deployment's signing key) is not set"
            )
        verify_text = env.get("OSCAR_SSL_VERIFY", "true").strip().lower()
        if verify_text not in _TRUE | _FALSE:
            problems.append(f"OSCAR_SSL_VERIFY must be true or false (got {verify_text!r})")
        minio = {k: env.get(k) for k in ("MINIO_ENDPOINT", "MINIO_ACCESS_KEY", "MINIO_SECRET_KEY")}
        keys = {k: minio[k] for k in ("MINIO_ACCESS_KEY", "MINIO_SECRET_KEY")}
        if any(keys.values()) and not all(minio.values()):
            problems.append(
                "MINIO_ACCESS_KEY and MINIO_SECRET_KEY go together, with MINIO_ENDPOINT "
                f"(missing: {', '.join(k for k, v in minio.items() if not v)})"
            )
        elif minio["MINIO_ENDPOINT"] and not minio["MINIO_ENDPOINT"].startswith(("http://", "https://")):
            problems.append(
                f"MINIO_ENDPOINT must start with http:// or https:// (got {minio['MINIO_ENDPOINT']!r})"
            )
        if problems:
            raise ConfigurationError("OSCAR configuration: " + "; ".join(problems))
        verify = verify_text in _TRUE
        kwargs: dict[str, Any] = {
            "user": user,
            "password": password,
            "token": token,
            "ssl_verify": verify,
            "signing_key": signing_key,
        }
        deployment = overrides.pop("deployment", None) or Deployment(
            name=env.get("DISTRDF_OSCAR_DEPLOYMENT", "distrdf")
        )
        if minio["MINIO_ENDPOINT"] and not any(keys.values()):
            kwargs["storage_endpoint"] = minio["MINIO_ENDPOINT"]
        elif all(minio.values()):
            kwargs["storage"] = StorageConfig(
                endpoint=str(minio["MINIO_ENDPOINT"]),
                access_key=str(minio["MINIO_ACCESS_KEY"]),
                secret_key=str(minio["MINIO_SECRET_KEY"]),
                bucket=deployment.bucket_name,
                verify=verify,
            )
        kwargs.update(overrides)
        return cls(endpoint, deployment=deployment, **kwargs)

    def unchecked_storage(self) -> Storage:
        """The deployment's storage, without looking at the services or buckets (deploy, undeploy)."""
        config = self._storage_config or self.cluster.storage_config(
            self.deployment.bucket_name, self._ssl_verify
        )
        if self._storage_endpoint:
            config = dataclasses.replace(config, endpoint=self._storage_endpoint)
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
        """Start (or resize) the deployment's warm pool of ``size`` workers, an OSCAR exposed
        service; with ``wait``, wait up to that many seconds for them to report. Returns what
        OSCAR was asked to do (created, updated, replaced)."""
        # The workers run any submitter's code: they get keys that reach only this deployment's
        # buckets, not the operator's (for basic auth, MinIO's root keys).
        earlier = {beat.worker for beat in self.pool_workers()}
        keys, fallback = self.cluster.pool_account(self.deployment, self.storage.config)
        if fallback:
            log.warning("pool %s: %s", self.deployment.service_name("pool"), fallback)
        done = self.cluster.start_pool(self.deployment, size, keys)
        # Workers started before hold the account's previous secret, refused from now on: only
        # workers that report after the start count (the earlier ones' heartbeats lapse).
        deadline = time.monotonic() + wait
        while (
            len({beat.worker for beat in self.pool_workers()} - earlier) < size
            and time.monotonic() < deadline
        ):
            time.sleep(0.5)
        return done

    def stop_pool(self) -> str:
        """Stop the deployment's warm pool (jobs then use the file-triggered services)."""
        return self.cluster.stop_pool(self.deployment)

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
                storage.check_conditional_writes()
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
        mapper: Callable,
        files: JobFiles,
        on_partial: Callable[[Any], None] | None = None,
        reduction: reductions.ReductionChoice | str | None = None,
    ):
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
        self._check_quota(chosen.reduction)
        # A pool job's work runs in pool workers, not OSCAR jobs: OSCAR's listing cannot tell that
        # its services are idle, so losses are found by the quiet-spell rule alone.
        job = Job(self.storage, chosen, self.options, idle=None if use_pool else self._service_idle)
        self.last_job = job
        try:
            return job.run(ranges, mapper, files, on_partial=on_partial)
        finally:
            self._forget_functions(job.functions)

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

    def _check_quota(self, reduction: plan.Reduction) -> None:
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

    def _forget_functions(self, functions: dict[str, list[str]]) -> None:
        """Delete the finished OSCAR jobs that served a job, so that the services' listings stay short.
        The last functions finish just after the client has its result, so this runs in the
        background, off the user's path, for up to ``FORGET_PATIENCE`` seconds."""
        with self._lock:
            for role, names in functions.items():
                self._unfinished.setdefault(self.deployment.service_name(role), set()).update(names)
            if not self._unfinished or (self._forgetter is not None and self._forgetter.is_alive()):
                return
            self._forgetter = threading.Thread(
                target=self._forget_finished, name="forget-oscar-jobs", daemon=True
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

    def wait_for_bookkeeping(self, timeout: float = FORGET_PATIENCE) -> bool:
        """Wait until the finished OSCAR jobs of past jobs are deleted; whether they all are."""
        thread = self._forgetter
        if thread is not None:
            thread.join(timeout)
        with self._lock:
            return not self._unfinished


def _gib(size: float) -> str:
    return f"{size / (1 << 30):g}Gi"


__all__ = ["ConfigurationError", "OSCARError", "OSCARExecutor"]
