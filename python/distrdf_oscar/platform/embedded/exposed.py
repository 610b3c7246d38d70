"""OSCAR's exposed services: a Kubernetes Deployment of long-lived replicas per service.

A service whose ``expose.api_port`` (4.1: its first element) is not 0 gets, besides its
storage-triggered jobs, a Deployment ``NAME-dpl`` with ``min_scale`` replicas and an HPA
between ``min_scale`` and ``max_scale`` (``pkg/backends/resources/expose.go``; 3.5:
``pkg/types/expose.go``). Each pod runs ``/bin/sh -c /oscar/config/script.sh`` once for
its life (``default_command: true``: the image's own command), with the service's
variables, its secrets (``EnvFrom``) and the config map mounted; no FaaS supervisor, so
none of the per-invocation variables and no mounted MinIO keys.

This module is the Deployment and service level: what OSCAR refuses, the pod template's
hash, the ReplicaSet controller (scaling, rolling updates), stop/start/restart and the
status OSCAR shows. One replica's life (a process group on this host, its probes, its
crash-loop back-off) is in ``exposed_replica.py``.
"""

from __future__ import annotations

import copy
import datetime as _dt
import hashlib
import json
import os
import secrets as _secrets
import shutil
import threading
from collections.abc import Callable
from typing import Any

from .exposed_replica import BASE_PATH, GRACE, Replica, api_ports, probe_path
from .validation import ServiceError
from .versions import OscarVersion

NAMESPACE = "oscar-svc"


def is_exposed(service: dict[str, Any] | None) -> bool:
    """OSCAR's test: ``api_port`` (4.1: its first element) is not 0 (pkg/backends/k8s.go)."""
    ports = api_ports(service or {})
    return bool(ports) and ports[0] != 0


def deployment_problem(service: dict[str, Any], version: OscarVersion) -> tuple[str, bool]:
    """What Kubernetes (or OSCAR before it) refuses when OSCAR makes the Deployment and its HPA:
    (message, whether the Deployment was made before the failure); ("", True) when all is well."""
    name = service["name"]
    expose = service["expose"]
    nodes = expose.get("nodePort")
    if version.expose_port_lists and nodes and len(nodes) != len(expose["api_port"]):
        message = (
            f"The length of nodePort ({len(nodes)}) must be equal to that of api_port "
            f"({len(expose['api_port'])})"
        )
        return message, False
    if expose["min_scale"] < 0:
        message = (
            f'Deployment.apps "{name}-dpl" is invalid: spec.replicas: Invalid value: '
            f"{expose['min_scale']}: must be greater than or equal to 0"
        )
        return message, False
    prefix = f'HorizontalPodAutoscaler.autoscaling "{name}-hpa" is invalid: '
    if expose["min_scale"] < 1:  # the HPAScaleToZero feature gate is off by default
        return (
            prefix + f"spec.minReplicas: Invalid value: {expose['min_scale']}: must be greater than "
            "or equal to 1",
            True,
        )
    if expose["max_scale"] < 1:
        return (
            prefix + f"spec.maxReplicas: Invalid value: {expose['max_scale']}: must be greater than 0",
            True,
        )
    if expose["max_scale"] < expose["min_scale"]:
        return (
            prefix + f"spec.maxReplicas: Invalid value: {expose['max_scale']}: must be greater than "
            "or equal to `minReplicas`",
            True,
        )
    if expose["cpu_threshold"] < 1:
        return (
            prefix + "spec.metrics[0].resource.target.averageUtilization: Invalid value: "
            f"{expose['cpu_threshold']}: must be greater than 0",
            True,
        )
    if version.exposed_lifecycle:
        auth = str(expose.get("auth_type") or "").strip().lower() or "basic"
        if auth not in ("basic", "forward"):
            return f'unsupported expose auth_type "{expose.get("auth_type")}"', True
        if auth == "forward" and expose.get("set_auth"):
            return 'expose auth_type "forward" requires EXPOSED_SERVICES_ROUTE_KIND=httproute', True
    return "", True


def template_hash(service: dict[str, Any], version: OscarVersion) -> str:
    """What changes the Deployment's pod template (a rollout when it changes): image, resources,
    variables, OSCAR's metadata variables, ports, command and probe path. The script (config map)
    and the secret values (a Secret) are not in it: changing them alone restarts nothing."""
    parts = {
        "image": service.get("image"),
        "cpu": service.get("cpu"),
        "memory": service.get("memory"),
        "variables": service["environment"]["variables"],
        "secret": bool(service["environment"]["secrets"]),
        "ports": api_ports(service),
        "default_command": (service.get("expose") or {}).get("default_command"),
        "probe": probe_path(service, version),
        "token": service.get("token") if version.sets_service_name else None,
        "restarted_at": service.get("_restarted_at"),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:10]


def _now_rfc3339() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Deployment:
    """``NAME-dpl``: the desired replicas, the pod template's generation and the HPA's presence."""

    def __init__(self, manager: ExposedServices, service: dict[str, Any]) -> None:
        self.manager = manager
        self.name = service["name"]
        self.version = manager.version
        self.time_scale = manager.time_scale
        self.root = os.path.join(manager.root, self.name)
        self.service = service
        self.generation = template_hash(service, self.version)
        self.replicas_wanted = 0
        self.hpa = False
        self.previous_replicas: int | None = None  # lifecycle.go's previous-replicas annotation
        self.pods: list[Replica] = []
        self.conditions: dict[str, tuple[str, str, str]] = {}  # type -> (reason, message, time)
        self._lock = threading.RLock()
        self.deleted = False

    # -- what the manager calls ----------------------------------------------------------

    def apply(self, service: dict[str, Any], replicas: int) -> None:
        """Create or update: the template, ``spec.replicas`` (annotations reset, as OSCAR rebuilds the
        Deployment's object), then reconcile (a rollout when the template changed)."""
        with self._lock:
            self.service = service
            self.generation = template_hash(service, self.version)
            self.replicas_wanted = replicas
            self.previous_replicas = None
        self.reconcile()

    def scale(self, replicas: int) -> None:
        with self._lock:
            self.replicas_wanted = replicas
        self.reconcile()

    def delete(self) -> None:
        """Deleted with its pods at once (DeleteCollection with a grace period of 0)."""
        with self._lock:
            self.deleted = True
            pods = list(self.pods)
        for pod in pods:
            pod.terminate(0.0)
        for pod in pods:
            pod.join(15.0)
        shutil.rmtree(self.root, ignore_errors=True)

    # -- the ReplicaSet controller ---------------------------------------------------------

    def reconcile(self) -> None:
        with self._lock:
            if self.deleted:
                return
            live = [p for p in self.pods if p.state != "Terminating" and p.state != "Terminated"]
            new = [p for p in live if p.generation == self.generation]
            old = [p for p in live if p.generation != self.generation]
            wanted = self.replicas_wanted
            for _ in range(wanted - len(new)):
                os.makedirs(self.root, mode=0o700, exist_ok=True)
                self.pods.append(Replica(self, self.generation, copy.deepcopy(self.service)))
            if len(new) > wanted:  # scale down: not-ready and newest first
                extra = sorted(new, key=lambda p: (p.ready, -p.created))[: len(new) - wanted]
                for pod in extra:
                    pod.terminate(GRACE)
            # Rolling update (maxUnavailable 25% rounded down, so 0 for fewer than 4 replicas):
            # an old pod goes when enough new ones are ready; unready old ones go at once.
            ready_new = sum(1 for p in new if p.ready)
            allowed_down = wanted // 4
            available = ready_new + sum(1 for p in old if p.ready)
            for pod in sorted(old, key=lambda p: (p.ready, -p.created)):
                if wanted == 0 or not pod.ready or available - 1 >= wanted - allowed_down:
                    if pod.ready:
                        available -= 1
                    pod.terminate(GRACE)
            self._update_conditions()

    def replica_changed(self) -> None:
        self.reconcile()

    def replica_gone(self, pod: Replica) -> None:
        with self._lock:
            if pod in self.pods:
                self.pods.remove(pod)
        self.reconcile()

    def _update_conditions(self) -> None:
        available, _observed = self.counts()
        minimum = self.replicas_wanted - self.replicas_wanted // 4
        if available >= minimum:
            avail = ("MinimumReplicasAvailable", "Deployment has minimum availability.")
        else:
            avail = ("MinimumReplicasUnavailable", "Deployment does not have minimum availability.")
        rs = f'ReplicaSet "{self.name}-dpl-{self.generation}"'
        new_ready = sum(1 for p in self.pods if p.generation == self.generation and p.ready and p.alive)
        if new_ready >= self.replicas_wanted:
            progress = ("NewReplicaSetAvailable", f"{rs} has successfully progressed.")
        else:
            progress = ("ReplicaSetUpdated", f"{rs} is progressing.")
        for kind, (reason, message) in (("Available", avail), ("Progressing", progress)):
            if self.conditions.get(kind, ("", "", ""))[:2] != (reason, message):
                self.conditions[kind] = (reason, message, _now_rfc3339())

    def counts(self) -> tuple[int, int]:
        """(available, observed): ready pods, and pods not terminating (Deployment.status)."""
        with self._lock:
            live = [p for p in self.pods if p.state not in ("Terminating", "Terminated")]
            return sum(1 for p in live if p.ready and p.alive), len(live)

    # -- the pod's environment ---------------------------------------------------------------

    def environment(self, spec: dict[str, Any], work: str) -> dict[str, str]:
        return self.manager.environment(spec, work)

    def script_path(self, name: str) -> str:
        return self.manager.script_path(name)


class ExposedServices:
    """Every exposed service's Deployment, and the orphans OSCAR leaves behind."""

    def __init__(
        self,
        root: str,
        base_env: dict[str, str],
        version: OscarVersion,
        config_path: Callable[[str], str],
        script_path: Callable[[str], str],
        secrets_of: Callable[[str], dict[str, str]],
        time_scale: float = 1.0,
    ) -> None:
        self.root = root
        self.version = version
        self.time_scale = float(time_scale)
        self._base_env = base_env
        self._config_path = config_path
        self.script_path = script_path
        self._secrets_of = secrets_of  # the Secret's current values: read at each container start
        self._deployments: dict[str, Deployment] = {}
        self._lock = threading.RLock()

    # -- environment -------------------------------------------------------------------------

    def environment(self, spec: dict[str, Any], work: str) -> dict[str, str]:
        """What an exposed pod's container gets: the service's variables (explicit variables win
        over the secret's, as in Kubernetes), its secrets (``EnvFrom``, 3.6 and later), OSCAR's
        metadata variables (4.0) and the mounted function config; none of the supervisor's."""
        name = spec["name"]
        env = dict(self._base_env)
        for key in (
            "INPUT_FILE_PATH",
            "TMP_INPUT_DIR",
            "TMP_OUTPUT_DIR",
            "STORAGE_OBJECT_KEY",
            "EVENT",
            "EVENT_TIME",
            "JOB_UUID",
            "DRO_PROVIDER_SECRETS",
            "OSCAR_SERVICE_NAME",
            "OSCAR_SERVICE_TOKEN",
            "OSCAR_SERVICE_BASE_PATH",
        ):
            env.pop(key, None)
        if self.version.delivers_secrets and spec["environment"]["secrets"]:
            env.update(self._secrets_of(name))
        env.update(spec["environment"]["variables"])
        if self.version.sets_service_name:
            env.update(
                OSCAR_SERVICE_NAME=name,
                OSCAR_SERVICE_TOKEN=spec["token"],
                OSCAR_SERVICE_BASE_PATH=BASE_PATH.format(name=name),
            )
        env["DRO_FUNCTION_CONFIG"] = self._config_path(name)
        env["TMPDIR"] = work
        env["HOME"] = work
        return env

    # -- lifecycle ---------------------------------------------------------------------------

    def has(self, name: str) -> bool:
        with self._lock:
            return name in self._deployments

    def hpa_exists(self, name: str) -> bool:
        with self._lock:
            dep = self._deployments.get(name)
            return dep is not None and dep.hpa

    def _replicas_for(self, service: dict[str, Any]) -> int:
        # getDeploymentSpec (v3.7.0 to v4.1.2 expose.go) gives 0 replicas, until Kueue admits the
        # Workload, to a service not owned by cluster_admin when Kueue is on; but with Kueue on no
        # exposed service is ever created here (registry.py _not_admitted), nor updated (UpdateExpose
        # checks the admission again), so every Deployment has min_scale.
        return int(service["expose"]["min_scale"])

    def create(self, service: dict[str, Any], with_hpa: bool = True) -> None:
        with self._lock:
            if service["name"] in self._deployments:
                raise ServiceError(409, "A service with the provided name already exists")
            dep = Deployment(self, service)
            dep.hpa = with_hpa
            self._deployments[service["name"]] = dep
        dep.apply(service, self._replicas_for(service))

    def update(self, service: dict[str, Any]) -> None:
        """UpdateExpose: the Deployment (template, replicas = min_scale), then the HPA; a missing
        Deployment or HPA is an error after what came before it was done."""
        name = service["name"]
        with self._lock:
            dep = self._deployments.get(name)
        if dep is None:
            raise ServiceError(500, f'Error updating the service: deployments.apps "{name}-dpl" not found')
        dep.apply(service, self._replicas_for(service))
        if not dep.hpa:
            raise ServiceError(
                500,
                f'Error updating the service: horizontalpodautoscalers.autoscaling "{name}-hpa" not found',
            )

    def delete(self, name: str) -> None:
        with self._lock:
            dep = self._deployments.pop(name, None)
        if dep is not None:
            dep.delete()

    def stop_service(self, name: str) -> None:
        """lifecycle.go stopExposedService: previous-replicas annotation, 0 replicas, HPA deleted."""
        dep = self._get(name)
        with dep._lock:
            if dep.replicas_wanted > 0:
                dep.previous_replicas = dep.replicas_wanted
            dep.hpa = False
        dep.scale(0)

    def start_service(self, name: str, service: dict[str, Any]) -> None:
        """startExposedService: the annotated replicas, else min_scale, else 1; the HPA made again."""
        dep = self._get(name)
        with dep._lock:
            replicas = dep.previous_replicas or int(service["expose"]["min_scale"]) or 1
            dep.hpa = True
        dep.scale(replicas)

    def restart_service(self, name: str) -> None:
        """restartExposedService: a restartedAt annotation on the template, so a rollout."""
        dep = self._get(name)
        with dep._lock:
            spec = copy.deepcopy(dep.service)
            spec["_restarted_at"] = _now_rfc3339() + _secrets.token_hex(2)
            dep.service = spec
            dep.generation = template_hash(spec, self.version)
        dep.reconcile()

    def _get(self, name: str) -> Deployment:
        with self._lock:
            dep = self._deployments.get(name)
        if dep is None:
            raise ServiceError(404, "")
        return dep

    def stop(self) -> None:
        """The platform stops: every replica killed."""
        with self._lock:
            deps = list(self._deployments.values())
            self._deployments.clear()
        for dep in deps:
            dep.delete()

    # -- what OSCAR shows -----------------------------------------------------------------------

    def status(self, service: dict[str, Any]) -> dict[str, Any]:
        """``GET /system/services/NAME/deployment`` (deploymentStatusFromDeployment, deployment.go)."""
        name = service["name"]
        with self._lock:
            dep = self._deployments.get(name)
        if not is_exposed(service):
            return {
                "service_name": name,
                "namespace": NAMESPACE,
                "state": "unavailable",
                "reason": "Current deployment visibility is unavailable for this service runtime.",
                "active_instances": 0,
                "affected_instances": 0,
                "resource_kind": "unavailable",
            }
        if dep is None:
            return {
                "service_name": name,
                "namespace": NAMESPACE,
                "state": "unavailable",
                "reason": "Current deployment resources are unavailable.",
                "active_instances": 0,
                "affected_instances": 0,
                "resource_kind": "unavailable",
            }
        with dep._lock:
            dep._update_conditions()
            available, observed = dep.counts()
            desired = dep.replicas_wanted
            latest = max(dep.conditions.values(), key=lambda c: c[2], default=None)
        affected = max(0, observed - available)
        if desired == 0:
            state = "stopped" if self.version.exposed_lifecycle else "pending"
        elif available >= desired:
            state = "ready"
        elif available > 0:
            state = "degraded"
        else:
            state = "pending"
        reason, when = (f"{latest[0]}: {latest[1]}", latest[2]) if latest else ("", None)
        if state == "stopped":
            reason = "Deployment is stopped."
        body: dict[str, Any] = {
            "service_name": name,
            "namespace": NAMESPACE,
            "state": state,
            "reason": reason,
            "active_instances": observed,
            "affected_instances": affected,
            "resource_kind": "exposed_service",
        }
        if when:
            body["last_transition_time"] = when
        return body

    def _pods(self, name: str) -> list[Replica]:
        """The pods of service ``name``'s Deployment, oldest first (none without one)."""
        with self._lock:
            dep = self._deployments.get(name)
        if dep is None:
            return []
        with dep._lock:
            return sorted(dep.pods, key=lambda p: p.created)

    def logs(self, name: str, tail: int) -> list[str]:
        lines: list[str] = []
        for pod in self._pods(name):
            lines.extend(pod.tail_lines(tail))
        return lines[-tail:] if tail > 0 else []

    def replicas(self, name: str) -> list[dict[str, Any]]:
        """The emulator's own view (not OSCAR's): every pod with its pid and readiness."""
        return [{**pod.info(), "tail": pod.tail_lines(20)} for pod in self._pods(name)]
