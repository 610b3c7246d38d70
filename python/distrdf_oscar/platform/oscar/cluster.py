"""An OSCAR cluster through ``oscar-python``: configuration and long-lived services.

The same code drives a real cluster and the embedded emulator. Services are
created once per deployment and updated in place; never per job, because on
OSCAR every service create/delete reconfigures and restarts MinIO.
"""

from __future__ import annotations

import json
import re
import warnings
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ...protocol import layout
from ...protocol.contract import KEY_ID_VARIABLE
from ...protocol.quantities import parse_quantity
from ...protocol.storage import Storage, StorageConfig, StorageError
from ..deployment import POOL, ROLES, Deployment
from . import pool_account
from .errors import OSCARError, connection_problem, tls_problem, without_userinfo
from .oidc_tokens import TokenRenewal, expired_advice

# Fields of a service definition that deploy manages (compared to detect changes), and those an
# update carries over from the live definition unless the deployment sets them.
_MANAGED = ("image", "cpu", "memory", "script", "input", "output", "visibility", "allowed_users")
_KEPT = ("owner", "visibility", "allowed_users")
# Pod phases, the statuses OSCAR reports for a service's jobs, and its "Suspended" (3.6.4 and
# later) for a job that has no pod yet: queued by Kueue, or just created.
JOB_STATUSES = ("Succeeded", "Failed", "Pending", "Running", "Suspended")
BUSY_STATUSES = ("Pending", "Running", "Suspended")
FINISHED_STATUSES = ("Succeeded", "Failed")
MAX_JOB_PAGES = 30  # of 70 jobs each (OSCAR's default JobListingLimit)
NEWEST_RELEASE = (4, 1, 2)  # the newest release the project was checked against
ADMIN_OWNER = "cluster_admin"  # the owner OSCAR gives services created with basic auth


class OSCARCluster:
    """An OSCAR cluster's management API; every failure is an :class:`OSCARError` naming the problem."""

    def __init__(
        self,
        endpoint: str,
        *,
        user: str | None = None,
        password: str | None = None,
        token: str | None = None,
        verify: bool = True,
        oidc_account: str | None = None,
        refresh_token: str | None = None,
    ) -> None:
        from oscar_python.client import Client

        if not endpoint.startswith(("http://", "https://")):
            raise OSCARError(
                f"OSCAR endpoint {without_userinfo(endpoint)!r} must start with http:// or https://"
            )
        if not verify:  # every client of a cluster, the executor and the read-only commands alike
            warnings.warn(
                f"TLS certificate verification is disabled for {without_userinfo(endpoint)}", stacklevel=3
            )
        options: dict[str, Any] = {
            "cluster_id": "distrdf-oscar",
            "endpoint": endpoint.rstrip("/"),
            "ssl": verify,
        }
        # an OIDC caller sees only its own services and jobs
        self.oidc = bool(token or oidc_account or refresh_token)
        self._renewal: TokenRenewal | None = None  # with a refresh token: renews the access token
        self._token = token  # a fixed access token, whose expiry a refusal names
        if token:
            options["oidc_token"] = token
            self._credentials = ("the access token", "OSCAR_TOKEN is invalid or has expired")
        elif oidc_account:
            options["shortname"] = oidc_account  # oscar-python asks oidc-agent for a token per request
            self._credentials = (
                f"the token of oidc-agent account {oidc_account!r}",
                f"check `oidc-token {oidc_account}` works",
            )
        elif refresh_token:
            self._renewal = TokenRenewal(refresh_token, without_userinfo(options["endpoint"]))
            # oscar-python's own renewal (once expired) would otherwise ask EGI Check-in's endpoint.
            options.update(
                oidc_token="",
                refresh_token=refresh_token,
                token_endpoint=self._renewal.url,
                client_id=self._renewal.client_id,
                scopes=self._renewal.scope.split(),
            )
            self._credentials = (
                "the refreshed access token",
                "the refresh token may have expired or been revoked",
            )
        elif user and password:
            options.update(user=user, password=password)
            self._credentials = (f"user {user!r} and its password", "check OSCAR_USER and OSCAR_PASSWORD")
        else:
            raise OSCARError("OSCAR credentials missing: give OSCAR_USER and OSCAR_PASSWORD, or OSCAR_TOKEN")
        self._secrets = [s for s in (password, token, refresh_token) if s]
        self.endpoint = without_userinfo(options["endpoint"])
        self.client = Client(options)

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _fresh_token(self) -> None:
        if self._renewal is None:
            return
        try:
            token = self._renewal.fresh(str(getattr(self.client, "oidc_token", "") or ""))
        except OSCARError as exc:
            raise OSCARError(self._scrub(str(exc))) from None
        if token is not None:
            self.client.oidc_token = token
            self._secrets.append(token)

    def _call(self, what: str, method: Callable[..., Any], *args: Any) -> Any:
        import requests

        self._fresh_token()
        try:
            return method(*args)
        except requests.exceptions.SSLError as exc:
            problem = tls_problem(exc)
            raise OSCARError(f"TLS with {self.endpoint} failed while trying to {what}: {problem}") from None
        except requests.exceptions.Timeout:
            raise OSCARError(f"OSCAR at {self.endpoint} timed out while trying to {what}") from None
        except requests.exceptions.ConnectionError as exc:
            raise OSCARError(
                f"cannot reach OSCAR at {self.endpoint} to {what}: {connection_problem(exc)} "
                "(check OSCAR_ENDPOINT and that the cluster is up)"
            ) from None
        except requests.exceptions.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else "?"
            if status == 401:
                who, advice = self._credentials
                advice = expired_advice(self._token) or advice
                raise OSCARError(
                    f"OSCAR at {self.endpoint} rejected {who} (401 Unauthorized) while trying to "
                    f"{what}: {advice}",
                    status=401,
                ) from None
            if status == 403:
                raise OSCARError(
                    f"OSCAR at {self.endpoint} denied access (403 Forbidden) while trying to {what}: "
                    "the credentials are valid but not allowed to do this",
                    status=403,
                ) from None
            body = (exc.response.text or "").strip()[:300] if exc.response is not None else ""
            raise OSCARError(
                self._scrub(f"OSCAR at {self.endpoint} answered {status} while trying to {what}: {body}"),
                status=status if isinstance(status, int) else None,
            ) from None
        except ValueError as exc:  # oscar-python's own checks (service present or absent)
            raise OSCARError(self._scrub(f"cannot {what} on OSCAR at {self.endpoint}: {exc}")) from None

    def _json(self, what: str, method: Callable[..., Any], *args: Any) -> Any:
        response = self._call(what, method, *args)
        try:
            return json.loads(response.text or "null")
        except ValueError:
            raise OSCARError(
                f"{self.endpoint} does not answer like OSCAR (no JSON) when asked to {what}: "
                "check OSCAR_ENDPOINT"
            ) from None

    def job_logs(self, service: str, name: str) -> str:
        """The logs of one OSCAR job of ``service`` (``GET /system/logs/SERVICE/JOB``)."""
        response = self._call(
            f"read the logs of job {name} of {service}", self.client.get_job_logs, service, name
        )
        return str(response.text or "")

    def config(self) -> dict[str, Any]:
        return self._json_object("read /system/config", self.client.get_cluster_config)

    def info(self) -> dict[str, Any]:
        return self._json_object("read /system/info", self.client.get_cluster_info)

    def _json_object(self, what: str, method: Callable[..., Any]) -> dict[str, Any]:
        answer = self._json(what, method)
        if not isinstance(answer, dict):
            raise OSCARError(
                f"{self.endpoint} does not answer like OSCAR when asked to {what}: check OSCAR_ENDPOINT"
            )
        return answer

    def storage_config(self, bucket: str, verify: bool) -> StorageConfig:
        """Storage as the cluster advertises it (its ``minio_provider``)."""
        provider = self.config().get("minio_provider") or {}
        missing = [k for k in ("endpoint", "access_key", "secret_key") if not provider.get(k)]
        if missing:
            raise OSCARError(
                f"OSCAR at {self.endpoint} does not advertise storage ({', '.join(missing)} missing in "
                "/system/config minio_provider): set MINIO_ENDPOINT, MINIO_ACCESS_KEY, MINIO_SECRET_KEY"
            )
        return StorageConfig(
            endpoint=provider["endpoint"],
            access_key=provider["access_key"],
            secret_key=provider["secret_key"],
            region=provider.get("region") or "us-east-1",
            verify=verify and bool(provider.get("verify", True)),
            bucket=bucket,
        )

    def own_quota(self) -> tuple[str, float, float] | None:
        """(user, CPUs, bytes of memory) of the caller's Kueue queue (``/system/quotas/user``, 3.7
        and later; integers in milli-CPUs and bytes from 4.0, quantities as text before); None if
        the cluster has no quotas for the caller."""
        try:
            body = self._json("read /system/quotas/user", self.client.get_own_quota) or {}
        except OSCARError:
            return None
        resources = body.get("resources") or {}
        try:
            cpu, memory = resources["cpu"]["max"], resources["memory"]["max"]
        except (KeyError, TypeError):
            return None
        user = str(body.get("user_id") or "")
        if isinstance(cpu, str):
            return user, parse_quantity(cpu), parse_quantity(memory)
        return user, cpu / 1000, float(memory)

    def services(self) -> dict[str, dict[str, Any]]:
        listed = self._json("list services", self.client.list_services)
        if not isinstance(listed, list):
            raise OSCARError(
                f"{self.endpoint} does not answer like OSCAR when asked to list services: "
                "check OSCAR_ENDPOINT"
            )
        return {s["name"]: s for s in listed}

    def release(self) -> tuple[int, int, int]:
        """OSCAR's release from ``/system/info`` (``"4.1.2"``); a development build counts as the newest."""
        version = str(self.info().get("version") or "")
        match = re.match(r"v?(\d+)\.(\d+)(?:\.(\d+))?", version)
        if not match:
            return NEWEST_RELEASE
        major, minor, patch = match.groups()
        return int(major), int(minor), int(patch or 0)

    def deploy(self, deployment: Deployment, storage: Storage, force: bool = False) -> dict[str, str]:
        """Create missing services and update changed ones (every one with ``force``); returns
        name -> created/updated/replaced/unchanged. ``storage`` (the cluster's, admin keys) is
        looked at, never written, to keep OSCAR from failing or destroying data (see below).

        - A service is created only if its input bucket does not exist yet: from 3.6 OSCAR
          refuses it (500), and 3.6.4's rollback even deletes the existing bucket.
        - From 4.0 an update is a PUT that keeps the live ``owner`` (OSCAR copies it only for
          non-admin callers: an admin's PUT without it leaves the service ownerless, and with
          Kueue on (3.7 and later, where the operator enables it), every job of an ownerless
          service stays suspended),
          and its ``visibility`` and ``allowed_users`` unless the deployment sets them.
        - Before 4.0 a PUT gives the service a new token that MinIO's webhook never learns (3.6,
          3.7), or changes nothing (3.5): the service is deleted and created again instead, which
          from 3.6 deletes its bucket too, so only while no job of the deployment is live.
        - OSCAR 3.5 never hands a service's secrets to its functions: they travel as variables.
        """
        release = self.release()
        # The definitions carry the secrets: never let an error message repeat one.
        self._secrets += [v for v in deployment.secrets.values() if v and v not in self._secrets]
        existing = self.services()
        outcome = {}
        for wanted in deployment.services(secrets_as_variables=release < (3, 6, 0)):
            name = wanted["name"]
            current = existing.get(name)
            if current is None:
                self._create(wanted, storage, release)
                outcome[name] = "created"
                continue
            kept = {field: current[field] for field in _KEPT if field in current and field not in wanted}
            if not self.oidc and not kept.get("owner"):
                # Left ownerless by an earlier admin update: Kueue would never start its jobs.
                kept["owner"] = ADMIN_OWNER
            wanted = {**wanted, **kept}
            if not (force or _differs(current, wanted)):
                outcome[name] = "unchanged"
            elif release >= (4, 0, 0):
                self._call(f"update service {name}", self.client.update_service, name, wanted)
                outcome[name] = "updated"
            else:
                live = live_jobs(storage)
                if live:
                    raise OSCARError(
                        f"cannot update service {name} on OSCAR {_dotted(release)} while jobs run "
                        f"({', '.join(live[:3])}{' ...' if len(live) > 3 else ''}): before 4.0 an "
                        "update must delete and re-create the service, and with it its bucket. "
                        "Retry when they have finished"
                    )
                self._call(f"remove service {name}", self.client.remove_service, name)
                self._create(wanted, storage, release)
                outcome[name] = "replaced"
        return outcome

    def _create(self, wanted: dict[str, Any], storage: Storage, release: tuple[int, int, int]) -> None:
        name = wanted["name"]
        # An OIDC user's MinIO account cannot look at buckets it has no access to (403); OSCAR's
        # rollback of an OIDC user's service leaves existing buckets alone.
        if release >= (3, 6, 0) and not self.oidc:
            for item in wanted["input"]:
                bucket = item["path"].split("/", 1)[0]
                if storage.bucket_exists(bucket):
                    raise OSCARError(
                        f"cannot create service {name}: its input bucket {bucket} already exists, "
                        f"and OSCAR {_dotted(release)} refuses such a service. It is another "
                        "deployment's, or left over: remove it (or choose another deployment name)"
                    )
        self._call(f"create service {name}", self.client.create_service, wanted)

    def check_deployed(self, deployment: Deployment) -> None:
        """Fail fast, naming the fix, if the deployment's services are missing or hold another key."""
        existing = self.services()
        missing = [d["name"] for d in deployment.services() if d["name"] not in existing]
        if missing and self.oidc:
            raise OSCARError(
                f"deployment {deployment.name!r} is not visible to you on {self.endpoint} (missing "
                f"services: {', '.join(missing)}): OSCAR shows an OIDC user only public services, "
                "their own, and restricted ones that list them. Ask the operator to run "
                "`distrdf-oscar deploy --allowed-user <your OIDC sub>` (or --visibility public)"
            )
        if missing:
            raise OSCARError(
                f"deployment {deployment.name!r} is not on {self.endpoint} (missing services: "
                f"{', '.join(missing)}): ask the operator to run `distrdf-oscar deploy`"
            )
        ownerless = [d["name"] for d in deployment.services() if not existing[d["name"]].get("owner")]
        if ownerless and self.release() >= (3, 7, 0):
            raise OSCARError(
                f"services {', '.join(ownerless)} have no owner (an earlier update erased it), and "
                "OSCAR's Kueue never starts their jobs: run `distrdf-oscar deploy --force`, which "
                "restores it"
            )
        wanted = deployment.variables.get(KEY_ID_VARIABLE)
        for definition in deployment.services():
            held = ((existing[definition["name"]].get("environment") or {}).get("variables") or {}).get(
                KEY_ID_VARIABLE
            )
            if wanted and held and held != wanted:  # services applied from an FDL file carry no key id
                raise OSCARError(
                    f"service {definition['name']} holds a different signing key than DISTRDF_OSCAR_KEY "
                    f"(key id {held or 'unknown'}, yours {wanted}): use the deployment's key, or redeploy"
                )

    # -- the warm pool: an exposed service ------------------------------------------------------

    def start_pool(self, deployment: Deployment, size: int, storage_keys: tuple[str, str]) -> str:
        """Create the deployment's pool service with ``size`` replicas, or resize or restart it;
        returns what was done. OSCAR runs it as a Deployment whose pods run the worker for their
        life (pkg/backends/resources/expose.go)."""
        if self.oidc:
            raise OSCARError(
                "starting a pool takes the operator's credentials (its workers hold the "
                "deployment's storage keys): ask the operator to run `distrdf-oscar pool start`"
            )
        release = self.release()
        self._refuse_pool_under_kueue(deployment.service_name(POOL), release)
        wanted = deployment.pool_service(
            size, storage_keys, release, secrets_as_variables=release < (3, 6, 0)
        )
        name = wanted["name"]
        self._secrets += [
            v for v in wanted["environment"]["secrets"].values() if v and v not in self._secrets
        ]
        self._secrets += [v for v in storage_keys if v and v not in self._secrets]
        current = self.services().get(name)
        if current is None:
            self._call(f"create service {name}", self.client.create_service, wanted)
            return "created"
        if release >= (4, 0, 0):
            if release >= (4, 1, 0):
                # A stopped pool is scaled back up first: 4.1 fails (500) to update a stopped service.
                self._call(f"start service {name}", self._post, f"/system/services/{name}/start")
            # Without its owner an admin's update leaves the service ownerless, and Kueue then gives
            # its Deployment no replica.
            wanted = {**wanted, "owner": current.get("owner") or ADMIN_OWNER}
            self._call(f"update service {name}", self.client.update_service, name, wanted)
            return "updated"
        # Before 4.0 an update gives the service a new token or changes nothing; the pool has no
        # input bucket, so replacing it loses nothing but the running workers.
        self._call(f"remove service {name}", self.client.remove_service, name)
        self._call(f"create service {name}", self.client.create_service, wanted)
        return "replaced"

    def _refuse_pool_under_kueue(self, name: str, release: tuple[int, int, int]) -> None:
        """With Kueue on, OSCAR refuses every create and update of an operator's exposed service
        (500, undone; v3.7.0 to v4.1.2 pkg/backends/resources/expose.go, pkg/utils/kueue.go
        CheckWorkloadAdmited): say so before touching a running pool."""
        if release < (3, 7, 0) or not (self.config().get("config") or {}).get("kueue_enable"):
            return
        raise OSCARError(
            f"cannot start or resize the warm pool on OSCAR at {self.endpoint}: it runs Kueue (kueue_enable "
            f"in /system/config), and OSCAR {_dotted(release)} then refuses an operator's exposed service. It "
            f"queues the pool's Workload in the LocalQueue oscar-lq-{name}, which it creates only for OIDC "
            "users' services, and checks its admission once without waiting, so the create or update answers "
            "500 and is undone. Ask the operator to set KUEUE_ENABLE=false in OSCAR's deployment (the Helm "
            "chart's default: --set kueue.enable=false); until then jobs run on the file-triggered services"
        )

    def pool_account(
        self, deployment: Deployment, storage: StorageConfig
    ) -> tuple[tuple[str, str], str | None]:
        """Storage keys for the deployment's pool that reach only its buckets, or ``storage``'s own
        and why (see :func:`~distrdf_oscar.platform.oscar.pool_account.make`)."""
        keys, why = pool_account.make(deployment, storage)
        self._secrets.append(keys[1])
        return keys, why

    def remove_pool_account(self, deployment: Deployment, storage: StorageConfig) -> bool:
        """Remove the pool's MinIO account and policy (undeploy); False if there was none."""
        return pool_account.remove(deployment, storage)

    def stop_pool(self, deployment: Deployment) -> str:
        """Stop the pool's workers: scaled to zero from OSCAR 4.1 (``POST .../stop``), the service
        removed before. Jobs in flight go on with the file-triggered services."""
        name = deployment.service_name(POOL)
        if name not in self.services():
            return "absent"
        if self.release() >= (4, 1, 0):
            self._call(f"stop service {name}", self._post, f"/system/services/{name}/stop")
            return "stopped"
        self._call(f"remove service {name}", self.client.remove_service, name)
        return "removed"

    def _post(self, path: str) -> Any:
        from oscar_python import _utils

        return _utils.make_request(self.client, path, "post")

    def undeploy(self, deployment: Deployment, storage: Storage) -> list[str]:
        """Remove the services, then whatever buckets of the deployment OSCAR left (before 3.6 it
        keeps a service's buckets and objects); returns what was removed."""
        existing = self.services()
        removed = []
        for role in (*ROLES, POOL):
            name = deployment.service_name(role)
            if name in existing:
                self._call(f"remove service {name}", self.client.remove_service, name)
                removed.append(name)
        if not self.oidc and self.remove_pool_account(deployment, storage.config):
            removed.append(f"storage account {deployment.service_name(POOL)}")
        for bucket in deployment.buckets:
            try:
                if storage.remove_bucket(bucket):
                    removed.append(f"bucket {bucket}")
            except StorageError:
                if not self.oidc:  # an OIDC user's account loses access with the service
                    raise
        return removed

    def job_listing(self, service: str, max_pages: int = MAX_JOB_PAGES) -> JobListing:
        """The service's jobs as ``/system/logs/NAME`` lists them, in either of OSCAR's shapes.

        Up to 3.6.3 the answer is a flat ``{job: info}`` map; from 3.6.4 it is
        ``{"jobs": {...}, "next_page": token}``, at most ``JobListingLimit`` (70) per page in
        name order, so every page is read (up to ``max_pages``; beyond that the listing is
        marked incomplete)."""
        jobs: dict[str, dict[str, Any]] = {}
        page = ""
        for _ in range(max_pages):
            body = self._json(f"list jobs of {service}", self.client.list_jobs, service, page) or {}
            if not isinstance(body, dict):
                raise OSCARError(
                    f"{self.endpoint} does not answer like OSCAR when asked to list jobs of {service}"
                )
            if isinstance(body.get("jobs"), dict):  # 3.6.4 and later (no job is named "jobs")
                jobs.update(body["jobs"])
                page = body.get("next_page") or ""
            else:
                jobs.update({name: info for name, info in body.items() if isinstance(info, dict)})
                page = ""
            if not page:
                return JobListing(jobs, complete=True)
        return JobListing(jobs, complete=False)

    def job_counts(self, service: str) -> dict[str, int]:
        """Jobs of the service by status (every status in :data:`JOB_STATUSES`, and any other seen)."""
        counts = Counter(info.get("status") or "Unknown" for info in self.job_listing(service).jobs.values())
        return {status: counts.get(status, 0) for status in JOB_STATUSES} | dict(counts)

    def remove_jobs(self, service: str, names: Iterable[str]) -> set[str]:
        """Delete those of the named jobs of a service that have finished (deleting a running one
        would kill it); returns the names dealt with: deleted, or no longer listed."""
        wanted = set(names)
        if not wanted:
            return set()
        listing = self.job_listing(service)
        finished = {
            name
            for name, info in listing.jobs.items()
            if name in wanted and info.get("status") in FINISHED_STATUSES
        }
        for name in sorted(finished):
            self._call(f"remove job {name} of {service}", self.client.remove_job, service, name)
        gone = wanted - set(listing.jobs) if listing.complete else set()
        return finished | gone


@dataclass(frozen=True)
class JobListing:
    jobs: dict[str, dict[str, Any]]
    complete: bool  # False when more pages exist than were read

    @property
    def busy(self) -> int:
        """Jobs that may still produce something: pending, running, or not yet given a pod
        (``Suspended``: queued by Kueue, or just created)."""
        return sum(1 for info in self.jobs.values() if info.get("status") in BUSY_STATUSES)


# What a pool worker does with storage: read, write and delete objects, list, listen to creations.
def live_jobs(storage: Storage) -> list[str]:
    """Jobs of the deployment whose client still waits (their manifest exists)."""
    return sorted(
        {job for key in storage.list(layout.JOBS + "/") if (job := layout.manifest_job(key)) is not None}
    )


def _dotted(release: tuple[int, int, int]) -> str:
    return ".".join(map(str, release))


def _differs(current: dict[str, Any], wanted: dict[str, Any]) -> bool:
    for field in _MANAGED:
        if _normalise(current.get(field)) != _normalise(wanted.get(field)):
            return True
    have = current.get("environment") or {}
    want = wanted["environment"]
    # OSCAR reads secret values back as "", so only their names can be compared.
    return (have.get("variables") or {}) != want["variables"] or set(have.get("secrets") or {}) != set(
        want["secrets"]
    )


def _normalise(value: Any) -> Any:
    if isinstance(value, list):
        return [
            {k: v for k, v in item.items() if v not in (None, "", [], {})} if isinstance(item, dict) else item
            for item in value
        ]
    return value
