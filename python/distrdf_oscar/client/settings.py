"""An executor's settings: one typed, checked value, from keyword arguments or the environment."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..platform.deployment import Deployment
from ..platform.oscar.cli_config import PATH_VARIABLE as CLI_CONFIG_VARIABLE
from ..platform.oscar.cli_config import ClusterConfigError, ClusterEntry, read_cluster
from ..platform.oscar.cluster import OSCARCluster
from ..protocol import plan
from ..protocol.signing import Signer
from ..protocol.storage import StorageConfig
from . import reductions
from .job import JobOptions
from .recovery import RetryPolicy
from .snapshots import check_mode as check_snapshot_mode

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class ConfigurationError(ValueError):
    """A missing or malformed setting; the message names it."""


@dataclass(frozen=True)
class Settings:
    """Everything an :class:`~distrdf_oscar.OSCARExecutor` is told; checked when made
    (:class:`ConfigurationError` names what is wrong).

    Args:
        endpoint: OSCAR's URL.
        signing_key: the deployment's key (an OSCAR secret of its services): every object
            the job writes is signed with it and every object it reads is verified.
        user, password: basic-auth credentials; or ``token``: an OIDC access token; or
            ``oidc_account``: an oidc-agent account; or ``refresh_token``: an OIDC refresh token,
            with which the access token is renewed before it expires.
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
        nothing_started_after: seconds without any output, claim or error after which a job says
            what may keep its functions from starting (image pull, capacity, quota, no pool;
            default 60).
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

    endpoint: str
    signing_key: str = field(repr=False)
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    oidc_account: str | None = None
    refresh_token: str | None = field(default=None, repr=False)
    ssl_verify: bool = True
    storage: StorageConfig | None = field(default=None, repr=False)
    storage_endpoint: str | None = None
    deployment: Deployment = field(default_factory=Deployment)
    reduction: reductions.ReductionChoice | str | None = None
    concurrency: int = 8
    auto_deploy: bool = False
    poll_interval: float = 0.2
    retries: int = 3
    retry_after: float = 60.0
    retry_factor: float = 3.0
    progress: bool = True
    shared_paths: Sequence[str] = ()
    snapshots: str = "download"
    dataset_credentials: bool = False
    ranges_per_call: int | None = None
    pool: bool | None = None
    pool_overflow_after: float = 30.0
    nothing_started_after: float = 60.0

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ConfigurationError(f"concurrency must be at least 1, got {self.concurrency}")
        try:
            Signer(self.signing_key)
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from None
        if self.ranges_per_call is not None:
            try:
                plan.check_ranges_per_call(self.ranges_per_call)
            except plan.PlanError as exc:
                raise ConfigurationError(str(exc)) from None
        if self.pool not in (None, True, False):
            raise ConfigurationError(f"pool must be None (use one when up), True or False, got {self.pool!r}")
        for name in ("pool_overflow_after", "nothing_started_after"):
            if not getattr(self, name) > 0:
                raise ConfigurationError(f"{name} must be positive, got {getattr(self, name)!r}")
        try:
            reductions.resolve(self.reduction)
            self.job_options()
        except ValueError as exc:  # PlanError, and the retry policy's and snapshot mode's own
            raise ConfigurationError(str(exc)) from None
        object.__setattr__(self, "shared_paths", tuple(self.shared_paths))

    def job_options(self) -> JobOptions:
        """What every job of these settings runs with."""
        policy = RetryPolicy(
            retries=self.retries, retry_after=self.retry_after, retry_factor=self.retry_factor
        )
        return JobOptions(
            poll_interval=self.poll_interval,
            progress=self.progress,
            retry=policy,
            snapshots=check_snapshot_mode(self.snapshots),
            pool_overflow_after=self.pool_overflow_after,
            nothing_started_after=self.nothing_started_after,
        )

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, cluster: str | None = None, **overrides: Any
    ) -> Settings:
        """Settings from the environment, over oscar-cli's cluster ``cluster`` (``platform/oscar/cli_config.py``;
        ``""``: its default cluster; None: that too, but only when ``OSCAR_ENDPOINT`` is not set).

        The variables: ``OSCAR_ENDPOINT``; ``OSCAR_USER``/``OSCAR_PASSWORD``, ``OSCAR_TOKEN``,
        ``OSCAR_OIDC_ACCOUNT`` (oidc-agent) or ``OSCAR_REFRESH_TOKEN``; ``OSCAR_SSL_VERIFY``;
        ``DISTRDF_OSCAR_KEY`` (the deployment's signing key; else the file ``DISTRDF_OSCAR_KEY_FILE``
        or ``~/.config/distrdf-oscar/<deployment>.key``, readable by its owner only); and optionally
        ``MINIO_ENDPOINT`` (alone: the keys still come from the cluster) with
        ``MINIO_ACCESS_KEY``/``MINIO_SECRET_KEY``. ``overrides`` win. Every problem is named in one
        ConfigurationError."""
        env = oscar_environment(environ, cluster)
        problems = _oscar_problems(env)
        endpoint = env.get("OSCAR_ENDPOINT", "")
        deployment_name = env.get("DISTRDF_OSCAR_DEPLOYMENT", "distrdf")
        signing_key, key_problem = _signing_key(env, deployment_name)
        if key_problem:
            problems.append(key_problem)
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
        verify = _verifies(env)
        deployment = overrides.pop("deployment", None) or Deployment(name=deployment_name)
        values: dict[str, Any] = {**_credentials(env), "ssl_verify": verify, "signing_key": signing_key}
        if minio["MINIO_ENDPOINT"] and not any(keys.values()):
            values["storage_endpoint"] = minio["MINIO_ENDPOINT"]
        elif all(minio.values()):
            values["storage"] = StorageConfig(
                endpoint=str(minio["MINIO_ENDPOINT"]),
                access_key=str(minio["MINIO_ACCESS_KEY"]),
                secret_key=str(minio["MINIO_SECRET_KEY"]),
                bucket=deployment.bucket_name,
                verify=verify,
            )
        values.update(overrides)
        return cls(endpoint, deployment=deployment, **values)

    def replace(self, **changes: Any) -> Settings:
        """These settings with some changed (checked again)."""
        return dataclasses.replace(self, **changes)


KEY_FILE_VARIABLE = "DISTRDF_OSCAR_KEY_FILE"
KEY_FOLDER = os.path.join("~", ".config", "distrdf-oscar")


def oscar_environment(environ: Mapping[str, str] | None = None, cluster: str | None = None) -> dict[str, str]:
    """The OSCAR variables, those the environment sets over those oscar-cli's cluster gives: the
    cluster ``cluster``, or its default one when no ``OSCAR_ENDPOINT`` is set (and a file exists)."""
    env = dict(os.environ if environ is None else environ)
    if cluster is None and env.get("OSCAR_ENDPOINT"):
        return env
    try:
        entry = read_cluster(cluster, path=env.get(CLI_CONFIG_VARIABLE))
    except ClusterConfigError as exc:
        if cluster is not None:
            raise ConfigurationError(str(exc)) from None
        return env  # no oscar-cli file either: the missing variables are named as such
    if env.get("OSCAR_ENDPOINT") or env.get("OSCAR_TOKEN") or env.get("OSCAR_USER"):
        # The environment's credentials go with the environment's endpoint, never with another's.
        entry = ClusterEntry(entry.name, env.get("OSCAR_ENDPOINT") or entry.endpoint)
    given = {
        "OSCAR_ENDPOINT": entry.endpoint,
        "OSCAR_USER": entry.user,
        "OSCAR_PASSWORD": entry.password,
        "OSCAR_OIDC_ACCOUNT": entry.oidc_account,
        "OSCAR_REFRESH_TOKEN": entry.refresh_token,
        "OSCAR_SSL_VERIFY": "true" if entry.ssl_verify else "false",
    }
    return {**{k: v for k, v in given.items() if v}, **env}


def _credentials(env: Mapping[str, str]) -> dict[str, str | None]:
    """One way to authenticate, in this order: a token, oidc-agent, a refresh token, basic auth."""
    for name, variable in (
        ("token", "OSCAR_TOKEN"),
        ("oidc_account", "OSCAR_OIDC_ACCOUNT"),
        ("refresh_token", "OSCAR_REFRESH_TOKEN"),
    ):
        if env.get(variable):
            return {name: env[variable]}
    return {"user": env.get("OSCAR_USER"), "password": env.get("OSCAR_PASSWORD")}


def _signing_key(env: Mapping[str, str], deployment: str) -> tuple[str, str | None]:
    """The deployment's signing key, and what is wrong with it if anything."""
    key = env.get("DISTRDF_OSCAR_KEY", "")
    if not key:
        path = os.path.expanduser(env.get(KEY_FILE_VARIABLE) or os.path.join(KEY_FOLDER, f"{deployment}.key"))
        try:
            mode = os.stat(path).st_mode
        except OSError:
            return "", (
                "DISTRDF_OSCAR_KEY (the deployment's signing key) is not set"
                + (f", nor readable from {path}" if env.get(KEY_FILE_VARIABLE) else "")
            )
        if mode & 0o077:
            return "", f"the signing key file {path} is readable by others: chmod 600 it"
        with open(path) as handle:
            key = handle.read().strip()
    if len(key) < 16:
        return "", "DISTRDF_OSCAR_KEY (the deployment's signing key) must be set, at least 16 characters"
    return key, None


def _oscar_problems(env: Mapping[str, str]) -> list[str]:
    """What is wrong with the variables that reach OSCAR itself."""
    problems = []
    endpoint = env.get("OSCAR_ENDPOINT", "")
    if not endpoint:
        problems.append("OSCAR_ENDPOINT is not set (nor a cluster in oscar-cli's configuration)")
    elif not endpoint.startswith(("http://", "https://")):
        problems.append(f"OSCAR_ENDPOINT must start with http:// or https:// (got {endpoint!r})")
    if not any(env.get(v) for v in ("OSCAR_TOKEN", "OSCAR_OIDC_ACCOUNT", "OSCAR_REFRESH_TOKEN")) and not (
        env.get("OSCAR_USER") and env.get("OSCAR_PASSWORD")
    ):
        problems.append("set OSCAR_USER and OSCAR_PASSWORD, or OSCAR_TOKEN")
    verify_text = _verify_text(env)
    if verify_text not in _TRUE | _FALSE:
        problems.append(f"OSCAR_SSL_VERIFY must be true or false (got {verify_text!r})")
    return problems


def _verify_text(env: Mapping[str, str]) -> str:
    return env.get("OSCAR_SSL_VERIFY", "true").strip().lower()


def _verifies(env: Mapping[str, str]) -> bool:
    """Whether TLS certificates are verified (the setting checked by :func:`_oscar_problems`)."""
    return _verify_text(env) in _TRUE


def oscar_cluster(environ: Mapping[str, str] | None = None, cluster: str | None = None) -> OSCARCluster:
    """The OSCAR cluster the environment (over oscar-cli's ``cluster``) names, for what only reads
    it: no signing key needed."""
    env = oscar_environment(environ, cluster)
    problems = _oscar_problems(env)
    if problems:
        raise ConfigurationError("OSCAR configuration: " + "; ".join(problems))
    return OSCARCluster(env["OSCAR_ENDPOINT"], verify=_verifies(env), **_credentials(env))
