"""Validation and normalisation of service definitions, the way OSCAR's API does it.

Only what a definition needs to run on the local platform is checked; every
other field is kept as given and returned as is, like OSCAR stores unknown
parts of a definition it does not act on.
"""

from __future__ import annotations

import copy
import re
from typing import Any

MAX_NAME_LENGTH = 39  # OSCAR's binding rule for Service.Name
DEFAULT_CPU = "1"  # OSCAR defaults to "0.2"; here one invocation fills one worker slot
DEFAULT_MEMORY = "256Mi"
DEFAULT_OWNER = "cluster_admin"  # owner OSCAR records for services created with basic auth
LOG_LEVELS = ("NOTSET", "DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
MINIO_PROVIDERS = ("minio", "minio.default")

_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_ENV_NAME_RE = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
_CPU_RE = re.compile(r"^(\d+(\.\d*)?|\.\d+)(m?)$")


class ServiceError(Exception):
    """A request about a service that the API answers with ``status`` and this message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _invalid(detail: str) -> ServiceError:
    return ServiceError(400, f"The service specification is not valid: {detail}")


def parse_cpu(value: str) -> float:
    """A Kubernetes CPU quantity ("1", "0.25", "250m") as a number of CPUs."""
    match = _CPU_RE.match(value.strip())
    if not match:
        raise ValueError(value)
    number = float(match.group(1))
    return number / 1000.0 if match.group(3) else number


def split_path(path: str) -> tuple[str, str]:
    """``bucket/some/folder`` -> ("bucket", "some/folder"); a bare bucket gives an empty folder."""
    bucket, _, folder = path.strip(" /").partition("/")
    return bucket, folder.strip("/")


def _check_string_map(value: Any, what: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _invalid(f"{what} must be a map of strings")
    for key, item in value.items():
        if not isinstance(item, str):
            raise _invalid(f"{what}.{key} must be a string")
    return dict(value)


def _check_storage_io(items: Any, kind: str) -> list[dict[str, Any]]:
    if items is None:
        return []
    if not isinstance(items, list):
        raise _invalid(f"'{kind}' must be a list of {{storage_provider, path}} objects")
    checked = []
    for index, item in enumerate(items):
        where = f"{kind}[{index}]"
        if not isinstance(item, dict):
            raise _invalid(f"{where} must be an object with 'storage_provider' and 'path'")
        provider = item.get("storage_provider")
        if not isinstance(provider, str) or not provider.strip():
            raise _invalid(f"{where}.storage_provider is required")
        if provider.strip().lower() not in MINIO_PROVIDERS:
            raise _invalid(
                f"{where}.storage_provider '{provider}' is not supported by the local platform "
                f"(use one of {', '.join(MINIO_PROVIDERS)})"
            )
        path = item.get("path")
        if not isinstance(path, str) or not path.strip(" /"):
            raise ServiceError(400, f"{kind} path cannot be empty")
        bucket, folder = split_path(path)
        if not _BUCKET_RE.match(bucket) or ".." in bucket:
            raise _invalid(f"{where}.path: '{bucket}' is not a valid bucket name")
        if kind == "input" and not folder:
            # OSCAR registers the MinIO webhook on a folder and fails without one.
            raise _invalid(f"{where}.path '{path}' must name a folder inside the bucket (<bucket>/<folder>)")
        for filt in ("prefix", "suffix"):
            value = item.get(filt)
            if value is not None and (
                not isinstance(value, list) or not all(isinstance(v, str) for v in value)
            ):
                raise _invalid(f"{where}.{filt} must be a list of strings")
        normalised = dict(item)
        normalised["storage_provider"] = provider.strip()
        normalised["path"] = f"{bucket}/{folder}" if folder else bucket
        checked.append(normalised)
    return checked


def validate_service(payload: Any) -> dict[str, Any]:
    """Check a definition sent to ``POST/PUT /system/services`` and fill in OSCAR's defaults.

    Raises :class:`ServiceError` (400) with a message that names the offending field.
    """
    if not isinstance(payload, dict):
        raise _invalid("the body must be a JSON object")
    service = copy.deepcopy(payload)

    name = service.get("name")
    if not isinstance(name, str) or not name:
        raise _invalid("'name' is required")
    if len(name) > MAX_NAME_LENGTH:
        raise _invalid(f"'name' must be at most {MAX_NAME_LENGTH} characters (got {len(name)})")
    if not _NAME_RE.match(name):
        raise _invalid(
            f"'name' {name!r} must consist of lower case alphanumeric characters or '-', "
            "and start and end with an alphanumeric character"
        )
    for field in ("image", "script"):
        value = service.get(field)
        if not isinstance(value, str) or not value.strip():
            raise _invalid(f"'{field}' is required")
    service["script"] = service["script"].replace("\r\n", "\n")

    cpu = service.get("cpu")
    if cpu in (None, ""):
        cpu = DEFAULT_CPU
    cpu = str(cpu)
    try:
        if parse_cpu(cpu) <= 0:
            raise ValueError(cpu)
    except ValueError:
        raise _invalid(
            f'\'cpu\' {cpu!r} is not a positive CPU quantity such as "1", "0.25" or "250m"'
        ) from None
    service["cpu"] = cpu
    service["memory"] = str(service.get("memory") or DEFAULT_MEMORY)
    level = str(service.get("log_level") or "").upper()
    service["log_level"] = level if level in LOG_LEVELS else "INFO"

    service["input"] = _check_storage_io(service.get("input"), "input")
    service["output"] = _check_storage_io(service.get("output"), "output")

    environment = service.get("environment") or {}
    if not isinstance(environment, dict):
        raise _invalid("'environment' must be an object with 'variables' and 'secrets'")
    variables = _check_string_map(environment.get("variables"), "environment.variables")
    secrets = _check_string_map(environment.get("secrets"), "environment.secrets")
    for key in list(variables) + list(secrets):
        if not _ENV_NAME_RE.match(key):
            raise _invalid(f"'{key}' is not a valid environment variable name")
    service["environment"] = {"variables": variables, "secrets": secrets}

    service["file_stage_in"] = bool(service.get("file_stage_in", False))
    service["alpine"] = bool(service.get("alpine", False))
    service.setdefault("visibility", "private")
    service.setdefault("allowed_users", [])
    service["owner"] = DEFAULT_OWNER
    labels = dict(service.get("labels") or {})
    labels.update({"oscar_service": name, "oscar.grycap/user-service": "true"})
    service["labels"] = labels
    service["annotations"] = dict(service.get("annotations") or {})
    return service
