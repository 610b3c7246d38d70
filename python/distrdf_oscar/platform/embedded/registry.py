"""The service registry: definitions, tokens, storage provisioning and per-service function files."""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import secrets
import shutil
import threading
from collections.abc import Callable
from typing import Any

import yaml

from .exposed import ExposedServices, deployment_problem, is_exposed
from .provisioning import StorageCredentials, bucket_exists, provision_path, remove_bucket
from .validation import DEFAULT_OWNER, ServiceError, split_path, validate_service
from .versions import OscarVersion

log = logging.getLogger(__name__)

CONFIG_FILE = "function_config.yaml"  # OSCAR mounts it at /oscar/config/function_config.yaml
SCRIPT_FILE = "script.sh"  # and the script beside it at /oscar/config/script.sh


def _buckets(service: dict[str, Any]) -> set[str]:
    return {split_path(item["path"])[0] for item in service["input"] + service["output"]}


def _not_admitted(name: str) -> str:
    """Why an exposed service's Workload fails Kueue's admission check, in OSCAR's words.

    With ``KUEUE_ENABLE`` on, creating an exposed service makes a Workload in the LocalQueue
    ``oscar-lq-NAME``, then its Deployment and HPA, then looks at the Workload once, through a fresh
    informer, without waiting (v3.7.0 to v4.1.2 pkg/backends/resources/expose.go createDeployment,
    pkg/utils/kueue.go CheckWorkloadAdmited). The LocalQueue is made only for a service an OIDC user
    creates (create.go: ``!isAdminUser && cfg.KueueEnable`` -> EnsureKueueUserQueues), so an
    admin's Workload is never admitted; an OIDC user's could be, if Kueue admitted it in the few
    milliseconds before OSCAR looks. That race is taken as lost here: never kinder than OSCAR.
    """
    return f"workload for exposed service '{name}' is NOT admitted"


def _write_private(path: str, text: str) -> None:
    # Atomic replace: a running bash keeps reading the old inode, and a
    # function never sees a half-written config.
    tmp = f"{path}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


class ServiceRegistry:
    """Thread-safe store of the deployed services (the API server's and the runner's view)."""

    def __init__(
        self, root_dir: str, storage: StorageCredentials, version: OscarVersion, cluster_id: str = "local"
    ) -> None:
        self._root = root_dir
        self.version = version
        self._storage = storage
        self._cluster_id = cluster_id
        self._client = storage.client()
        self._lock = threading.RLock()
        self._services: dict[str, dict[str, Any]] = {}
        self.exposed: ExposedServices | None = None  # the Deployments of exposed services, once attached

    # -- queries ------------------------------------------------------------

    def get(self, name: str) -> dict[str, Any] | None:
        """The full definition, secrets included (for the runner); a copy."""
        with self._lock:
            service = self._services.get(name)
            return copy.deepcopy(service) if service else None

    def public(self, name: str) -> dict[str, Any] | None:
        """The definition as ``GET /system/services/NAME`` shows it (secret values and keys hidden)."""
        service = self.get(name)
        if service is None:
            return None
        service.pop("webhook_token", None)
        service["environment"]["secrets"] = dict.fromkeys(service["environment"]["secrets"], "")
        default = service["storage_providers"]["minio"]["default"]
        default.update(access_key="hidden", secret_key="hidden")
        return service

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._services)

    def token_matches(self, name: str, token: str) -> bool:
        with self._lock:
            service = self._services.get(name)
            return service is not None and secrets.compare_digest(service["token"], token)

    def webhook_token(self, name: str) -> str | None:
        """The token MinIO's webhook for the service sends: the one it was registered with."""
        with self._lock:
            service = self._services.get(name)
            return service["webhook_token"] if service else None

    def buckets_of(self, sub: str, can_see: Callable[[str, dict[str, Any]], bool]) -> set[str]:
        """The buckets an OIDC user's MinIO account may use: those of the services they can see."""
        with self._lock:
            services = [copy.deepcopy(s) for s in self._services.values()]
        return {
            split_path(item["path"])[0]
            for s in services
            if can_see(sub, s)
            for item in s["input"] + s["output"]
        }

    def input_watches(self, name: str) -> list[tuple[str, str]]:
        """(bucket, key prefix) pairs whose new objects invoke service ``name``."""
        with self._lock:
            service = self._services.get(name)
            inputs = service["input"] if service else []
        watches = []
        for item in inputs:
            bucket, folder = split_path(item["path"])
            watches.append((bucket, folder + "/"))
        return watches

    def config_path(self, name: str) -> str:
        return os.path.join(self._root, name, CONFIG_FILE)

    def script_path(self, name: str) -> str:
        return os.path.join(self._root, name, SCRIPT_FILE)

    # -- changes ------------------------------------------------------------

    def create(self, payload: Any, owner: str | None = None) -> dict[str, Any]:
        """``POST /system/services`` by an admin (``owner`` None) or by the OIDC user ``owner``."""
        service = validate_service(payload, self.version)
        name = service["name"]
        # The owner of an admin's service; up to 3.6 a JSON "owner" overrode it (create.go).
        given = payload.get("owner") if isinstance(payload, dict) else None
        service["owner"] = owner or (given if given and self.version.release < (3, 7, 0) else DEFAULT_OWNER)
        with self._lock:
            if name in self._services:
                raise ServiceError(409, "A service with the provided name already exists")
            if self.exposed is not None and is_exposed(service):
                self._check_exposed_create(service)
            for item in service["input"]:
                bucket = split_path(item["path"])[0]
                if bucket_exists(self._client, bucket):
                    if self.version.refuses_existing_input_bucket:
                        # Answered 500 and rolled back, after the webhook's registration restarted
                        # MinIO (create.go: registerMinIOWebhook comes before createBuckets).
                        raise ServiceError(500, f'the bucket "{bucket}" already exists\n', minio_restarts=1)
                    log.warning("service %s: the bucket %s already exists", name, bucket)
            service["token"] = secrets.token_hex(32)  # 64 hex characters, as OSCAR's tokens
            service["webhook_token"] = service["token"]
            self._complete(service)
            self._provision(service)
            self._write_files(service)
            self._services[name] = service
            if self.exposed is not None and is_exposed(service):
                self.exposed.create(service)
        return self.public(name)  # type: ignore[return-value]

    def _check_exposed_create(self, service: dict[str, Any]) -> None:
        """CreateExpose's failures (pkg/backends/k8s.go CreateService): a Deployment left by an
        earlier service of that name (409), or what Kubernetes refuses in the Deployment or its
        HPA (500): undone from 3.7; before, the half-made service stays, its Deployment running
        without an HPA, and no buckets or webhook."""
        assert self.exposed is not None
        name = service["name"]
        if self.exposed.has(name):
            raise ServiceError(409, "A service with the provided name already exists")
        problem, made = deployment_problem(service, self.version)
        if not problem and self.version.kueue:
            raise ServiceError(
                500,
                "Error creating the service: error creating deployment for exposed "
                f"service '{name}': " + _not_admitted(name),
            )
        if not problem:
            return
        if not self.version.rolls_back_failed_create:
            service["token"] = secrets.token_hex(32)
            service["webhook_token"] = ""  # no webhook: storage events are refused
            self._complete(service)
            self._write_files(service)
            self._services[name] = service
            if made:
                self.exposed.create(service, with_hpa=False)
        if problem.startswith("The length of nodePort"):
            raise ServiceError(500, f"Error creating the service: {problem}")
        raise ServiceError(
            500,
            f"Error creating the service: error creating deployment for exposed service '{name}': {problem}",
        )

    def update(self, payload: Any, owner: str | None = None) -> tuple[dict[str, Any] | None, int]:
        """``PUT /system/services`` by an admin (``owner`` None) or by the service's OIDC owner: the
        definition (None when the release changes nothing, 3.5) and how often OSCAR restarted MinIO."""
        service = validate_service(payload, self.version)
        name = service["name"]
        with self._lock:
            old = self._services.get(name)
            if old is None:
                raise ServiceError(404, f"Service '{name}' not found")
            if self.version.release < (3, 6, 0):
                # 3.5's update builds its S3 client from the stored provider, whose keys read
                # "hidden", and gives up after answering 200 (update.go): nothing changes.
                return None, 0
            # An admin's PUT takes the owner from the body: without one, the service is ownerless.
            given = payload.get("owner")
            service["owner"] = old["owner"] if owner else (given if isinstance(given, str) else "")
            # Up to 3.7 checkValues gives the service a new token, while MinIO's webhook keeps the
            # one it was registered with: its events are refused, unless a bucket is new. Each bucket
            # the old definition lacked has the webhook registered again, with the new token, and
            # MinIO restarted, before the service itself is updated (update.go, 3.6.0 to 4.1.2).
            service["token"] = old["token"] if self.version.keeps_token_on_update else secrets.token_hex(32)
            added = _buckets(service) - _buckets(old)
            service["webhook_token"] = service["token"] if added else old["webhook_token"]
            self._complete(service)
            if self.exposed is not None and is_exposed(service):
                try:
                    self._update_exposed(old, service)
                except ServiceError as err:  # failed in UpdateService: after the restarts
                    err.minio_restarts = len(added)
                    raise
                return self.public(name), len(added)
            self._provision(service)
            self._write_files(service)
            self._services[name] = service
            # An update that drops ``expose`` leaves the Deployment running (UpdateExpose is not
            # called), and a later delete does not remove it (DeleteExpose neither).
        return self.public(name), len(added)

    def _update_exposed(self, old: dict[str, Any], service: dict[str, Any]) -> None:
        """UpdateService then UpdateExpose: the Deployment is updated (rolled when its template
        changed, ``replicas`` back to ``min_scale``), then the HPA; on a failure OSCAR answers 500
        and, from 3.7, updates everything back to the old definition."""
        assert self.exposed is not None
        name = service["name"]
        problem, made = deployment_problem(service, self.version)
        if problem.startswith("The length of nodePort"):
            problem, made = "", True  # only CreateExpose checks it
        restore = self.version.restores_failed_update
        if not self.exposed.has(name) or not made:
            if not restore:
                self._provision(service)
                self._write_files(service)
                self._services[name] = service
            if not self.exposed.has(name):
                raise ServiceError(
                    500, f'Error updating the service: deployments.apps "{name}-dpl" not found'
                )
            raise ServiceError(500, f"Error updating the service: {problem}")
        self._provision(service)
        self._write_files(service)
        self._services[name] = service
        try:
            self.exposed.update(service)
            if problem:
                raise ServiceError(500, f"Error updating the service: {problem}")
        except ServiceError:
            if restore:
                self._write_files(old)
                self._services[name] = old
                with contextlib.suppress(ServiceError):
                    self.exposed.update(old)
            raise

    def delete(self, name: str, before_buckets: Callable[[str], None]) -> None:
        """Forget the service, call ``before_buckets(name)`` (its jobs and triggers stop); from 3.6
        its input buckets go too, with every object in them."""
        with self._lock:
            service = self._services.pop(name, None)
            if service is None:
                raise ServiceError(404, f"Service '{name}' not found")
            shutil.rmtree(os.path.join(self._root, name), ignore_errors=True)
        if self.exposed is not None and is_exposed(service):
            self.exposed.delete(name)  # its pods at once (grace period 0)
        before_buckets(name)
        if self.version.deletes_input_buckets:
            for item in service["input"]:
                remove_bucket(self._client, split_path(item["path"])[0])

    # -- helpers ------------------------------------------------------------

    def _complete(self, service: dict[str, Any]) -> None:
        service["cluster_id"] = service.get("cluster_id") or self._cluster_id
        providers = copy.deepcopy(service.get("storage_providers") or {})
        minio: dict[str, Any] = providers["minio"] if isinstance(providers.get("minio"), dict) else {}
        minio["default"] = self._storage.provider()
        providers["minio"] = minio
        service["storage_providers"] = providers

    def _provision(self, service: dict[str, Any]) -> None:
        try:
            for item in service["input"] + service["output"]:
                provision_path(self._client, item["path"])
        except Exception as err:  # any storage failure is the API's 500
            raise ServiceError(500, f"Error creating the service's buckets: {err}") from err

    def _write_files(self, service: dict[str, Any]) -> None:
        directory = os.path.join(self._root, service["name"])
        os.makedirs(directory, mode=0o700, exist_ok=True)
        fdl = copy.deepcopy(service)
        fdl.pop("script", None)  # OSCAR keeps the script in script.sh, not in the YAML
        fdl.pop("webhook_token", None)
        fdl["environment"]["secrets"] = dict.fromkeys(fdl["environment"]["secrets"], "")
        # OSCAR writes "hidden" for the default provider's keys; functions read them from the
        # mounted secret files (supervisor.py stages them per invocation).
        fdl["storage_providers"]["minio"]["default"].update(access_key="hidden", secret_key="hidden")
        _write_private(os.path.join(directory, CONFIG_FILE), yaml.safe_dump(fdl, sort_keys=True))
        _write_private(os.path.join(directory, SCRIPT_FILE), service["script"])
        # The config map is mounted with mode 0777 for exposed pods, which exec the script.
        os.chmod(os.path.join(directory, SCRIPT_FILE), 0o700)
