"""OSCAR service definitions of a deployment: the single source for deploy, FDL files and the emulator."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any

from .. import __version__
from ..protocol import contract, layout
from ..protocol.signing import key_id

DEFAULT_IMAGE = f"ghcr.io/distrdf-oscar/distrdf-oscar:{__version__}"
MAX_SERVICE_NAME = 39  # OSCAR's limit (Kubernetes label values with a suffix)
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")  # S3 bucket names, as OSCAR checks them

COORDINATOR_CPU = "0.25"
WORKER_MEMORY = "2Gi"
# The coordinator only polls storage (no ROOT): little memory, so that it fits beside a mapper in
# a per-user Kueue quota (2 CPUs, 2Gi by default) only if the mappers leave room for it.
COORDINATOR_MEMORY = "512Mi"
VISIBILITIES = ("private", "public", "restricted")

# role -> (input folder, cpu request) of the file-triggered services; their entry points are the
# contract's. The coordinator only polls storage, so it asks for a fraction of a core and leaves
# room for mappers.
ROLES: dict[str, tuple[str, str]] = {
    "mapper": (layout.TRIGGERS, "1"),
    "reducer": (layout.TREE_PARTIALS, "1"),
    "coordinator": (layout.PLANS, COORDINATOR_CPU),
    "batch": (layout.BATCHES, "1"),
}
POOL = "pool"  # the warm pool: an exposed service (functions/pool.py), started and stopped by operators
POOL_PORT = 8080  # its api_port: the probes' port


# OSCAR's supervisor runs the script with /bin/sh (faas-supervisor, binary/supervisor.py) and
# ignores its exit status: only the script sees its Python child die of a signal or exit before
# it could report, so it reports that itself (functions/crash.py), with the output's last lines.
_SCRIPT = """#!/bin/sh
# distrdf-oscar {role}: POSIX sh, as OSCAR's supervisor runs it.
python="${{DRO_PYTHON:-python3}}"
output=$(mktemp) status=$(mktemp)
{{ "$python" -m distrdf_oscar.functions {role} 2>&1; echo $? > "$status"; }} | tee "$output"
code=$(cat "$status")
case "$code" in
  0|{reported}) ;;
  *) "$python" -m {crash} {role} "$code" "$output" ;;
esac
rm -f "$output" "$status"
"""


# An exposed service's container runs its script once (no supervisor): the worker is the pod.
_POOL_SCRIPT = """#!/bin/sh
# distrdf-oscar pool worker: runs for the pod's life (an OSCAR exposed service).
exec "${DRO_PYTHON:-python3}" -m distrdf_oscar.functions pool
"""


def script(role: str) -> str:
    """The service script: run the role's entry point with the image's Python; report a crash."""
    return _SCRIPT.format(role=role, reported=contract.REPORTED_EXIT, crash=contract.CRASH_REPORT_MODULE)


@dataclass(frozen=True)
class Deployment:
    """A set of long-lived services and their buckets; several may live on one cluster."""

    name: str = "distrdf"
    bucket: str | None = None
    image: str = DEFAULT_IMAGE
    memory: str = WORKER_MEMORY  # of every function but the coordinator's (COORDINATOR_MEMORY)
    cpu: str | None = None  # overrides every role's cpu request
    variables: dict[str, str] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict, repr=False)
    # Who may use the services (OSCAR's visibility): None keeps what the cluster has (new
    # services: OSCAR's default, private); "restricted" names OIDC users in allowed_users.
    visibility: str | None = None
    allowed_users: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.allowed_users and self.visibility is None:
            object.__setattr__(self, "visibility", "restricted")
        if self.visibility not in (None, *VISIBILITIES):
            raise ValueError(f"visibility must be one of {', '.join(VISIBILITIES)}, got {self.visibility!r}")
        if (self.visibility == "restricted") != bool(self.allowed_users):
            raise ValueError("visibility 'restricted' needs allowed users, and allowed users need it")
        object.__setattr__(self, "allowed_users", tuple(self.allowed_users))
        longest = max(len(role) for role in ROLES) + 1
        if not _NAME.match(self.name) or len(self.name) + longest > MAX_SERVICE_NAME:
            raise ValueError(
                f"deployment name {self.name!r} must be lowercase letters, digits and '-', at most "
                f"{MAX_SERVICE_NAME - longest} characters (service names stay within OSCAR's {MAX_SERVICE_NAME})"
            )
        for bucket in self.buckets:
            if not _BUCKET.match(bucket):
                raise ValueError(f"bucket name {bucket!r} must be 3-63 lowercase letters, digits, '.' or '-'")

    def with_secrets(self, secrets: dict[str, str]) -> Deployment:
        return replace(self, secrets={**self.secrets, **secrets})

    def with_signing_key(self, key: str) -> Deployment:
        """The key as an OSCAR secret, and its fingerprint as a variable: OSCAR never shows
        secrets back, so the fingerprint is how a client sees which key the services hold."""
        return replace(
            self.with_secrets({contract.SIGNING_KEY_VARIABLE: key}),
            variables={**self.variables, contract.KEY_ID_VARIABLE: key_id(key)},
        )

    def with_dataset_credentials(self, environ: dict[str, str] | None = None) -> Deployment:
        """``S3_ACCESS_KEY``/``S3_SECRET_KEY`` (of ``environ``, default this process's environment)
        as OSCAR secrets: the keys the functions read ``s3http(s)://`` datasets of another S3
        endpoint with (datasets.py). ValueError naming what is missing, never a value."""
        import os

        from ..protocol.dataset_objects import DATASET_KEYS

        env = os.environ if environ is None else environ
        missing = [name for name in DATASET_KEYS if not env.get(name)]
        if missing:
            raise ValueError(f"dataset credentials: {' and '.join(missing)} not set in the environment")
        return self.with_secrets({name: env[name] for name in DATASET_KEYS})

    @property
    def bucket_name(self) -> str:
        """The base bucket: the mapper's input and the folders no service watches."""
        return self.bucket or self.name

    @property
    def buckets(self) -> list[str]:
        """Every bucket of the deployment (see layout.py); each is one service's input bucket."""
        return layout.buckets(self.bucket_name)

    def service_name(self, role: str) -> str:
        return f"{self.name}-{role}"

    def service_for_input(self, folder: str) -> str:
        """The name of the service whose input is ``folder`` (a protocol folder of layout.py)."""
        return next(self.service_name(role) for role, spec in ROLES.items() if spec[0] == folder)

    def service(self, role: str, secrets_as_variables: bool = False) -> dict[str, Any]:
        """The OSCAR definition of a role's service. ``secrets_as_variables`` for OSCAR 3.5, which
        never hands secrets to functions (docs/deploy.md says what that exposes)."""
        folder, cpu = ROLES[role]
        secrets = dict(self.secrets)
        variables = {
            contract.ENTRYPOINT_VARIABLE: contract.ENTRYPOINTS[role],
            contract.VERSION_VARIABLE: __version__,
            **self.variables,
            **(secrets if secrets_as_variables else {}),
        }
        access = (
            {"visibility": self.visibility, "allowed_users": list(self.allowed_users)}
            if self.visibility
            else {}
        )
        return {
            "name": self.service_name(role),
            "image": self.image,
            "cpu": self.cpu or cpu,
            "memory": COORDINATOR_MEMORY if role == "coordinator" else self.memory,
            "script": script(role),
            "input": [
                {"storage_provider": "minio.default", "path": layout.input_path(self.bucket_name, folder)}
            ],
            # No "output": functions upload their results by key themselves (see functions/context.py).
            "output": [],
            "environment": {
                "variables": variables,
                "secrets": {} if secrets_as_variables else secrets,
            },
            **access,
        }

    def pool_service(
        self,
        size: int,
        storage_keys: tuple[str, str],
        release: tuple[int, int, int],
        secrets_as_variables: bool = False,
    ) -> dict[str, Any]:
        """The OSCAR definition of the deployment's warm pool: an exposed service of ``size``
        replicas (``functions/pool.py``). Its pods get no mounted MinIO keys, so ``storage_keys``
        (access, secret) travel as its secrets: those of an account limited to the deployment's
        buckets (``OSCARCluster.pool_account``), never the operator's, since the workers run any
        submitter's code. ``api_port`` is a number up to OSCAR 4.0 and a list from 4.1
        (``pkg/types/service.go``)."""
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"a pool needs at least one worker, got {size!r}")
        name = self.service_name(POOL)
        access_key, secret_key = contract.POOL_KEYS
        secrets = {**self.secrets, access_key: storage_keys[0], secret_key: storage_keys[1]}
        variables = {
            contract.POOL_BUCKET_VARIABLE: self.bucket_name,
            contract.POOL_PORT_VARIABLE: str(POOL_PORT),
            contract.POOL_SERVICE_VARIABLE: name,
            contract.VERSION_VARIABLE: __version__,
            **self.variables,
            **(secrets if secrets_as_variables else {}),
        }
        expose: dict[str, Any] = {
            "min_scale": size,
            "max_scale": size,
            "cpu_threshold": 80,
            "api_port": [POOL_PORT] if release >= (4, 1, 0) else POOL_PORT,
        }
        if release >= (3, 6, 0):
            expose["health_path"] = "/health"
        access = (
            {"visibility": self.visibility, "allowed_users": list(self.allowed_users)}
            if self.visibility
            else {}
        )
        return {
            "name": name,
            "image": self.image,
            "cpu": self.cpu or "1",
            "memory": self.memory,
            "script": _POOL_SCRIPT,
            "input": [],
            "output": [],
            "expose": expose,
            "environment": {"variables": variables, "secrets": {} if secrets_as_variables else secrets},
            **access,
        }

    def services(self, secrets_as_variables: bool = False) -> list[dict[str, Any]]:
        return [self.service(role, secrets_as_variables) for role in ROLES]


# What the FDL file holds instead of the signing key. Shorter than any accepted key, so services
# applied without replacing it refuse every payload rather than trust a key anyone can read here.
SECRET_PLACEHOLDER = "<signing-key>"
DEFAULT_CLUSTER_ID = "oscar-cluster"


def fdl_files(deployment: Deployment, cluster_id: str = DEFAULT_CLUSTER_ID) -> dict[str, str]:
    """The service scripts and the FDL file of a deployment: relative path -> content.

    The FDL is written for oscar-cli, which decodes it into OSCAR 3.3's service type with exact
    key matching: environment variables under ``Variables`` (capital V), and no secrets at all
    (docs/deploy.md, "oscar-cli"). So the signing key can only be a variable there."""
    import yaml

    deployment = deployment.with_secrets({contract.SIGNING_KEY_VARIABLE: SECRET_PLACEHOLDER})
    files, functions = {}, []
    for role in ROLES:
        service = deployment.service(role, secrets_as_variables=True)
        script_path = f"scripts/{role}.sh"
        files[script_path] = service["script"]
        # oscar-cli and oscar-python read a script relative to the FDL file's directory.
        service = {
            **service,
            "script": f"../{script_path}",
            "environment": {"Variables": service["environment"]["variables"]},
        }
        functions.append({cluster_id: service})
    header = (
        "# Generated by `distrdf-oscar fdl` from distrdf_oscar.platform.deployment: do not edit by hand.\n"
        "# Prefer `distrdf-oscar deploy`: it creates the same services and keeps the signing key an OSCAR\n"
        "# secret. oscar-cli cannot set secrets, so here the key is a variable that anyone allowed to read\n"
        f"# the services can see: replace {SECRET_PLACEHOLDER} by the deployment's key first (services left\n"
        "# with the placeholder refuse every payload), then: oscar-cli apply FILE [--cluster ID]\n"
    )
    body = yaml.safe_dump({"functions": {"oscar": functions}}, sort_keys=False, width=1000)
    files[f"fdl/{deployment.name}.yaml"] = header + body
    return files
