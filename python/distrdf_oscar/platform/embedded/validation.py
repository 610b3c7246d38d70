"""Validation and normalisation of service definitions, the way OSCAR's API does it.

The rules are those of ``tests/oscar_service_schema.json`` (written from OSCAR's
sources): Go's JSON types (a number where OSCAR has a string field is a 400),
the binding rules (name, image, script), and what Kubernetes refuses when OSCAR
creates the service's objects (name, CPU and memory quantities, environment
variable names). Fields OSCAR does not know are kept as given, as OSCAR ignores them.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from ...protocol.quantities import parse_quantity
from .versions import OscarVersion

MAX_NAME_LENGTH = 39  # OSCAR's binding rule for Service.Name
DEFAULT_CPU = "1"  # OSCAR defaults to "0.2"; here one invocation fills one worker slot
DEFAULT_MEMORY = "256Mi"
DEFAULT_OWNER = "cluster_admin"  # owner OSCAR records for services created with basic auth
LOG_LEVELS = ("NOTSET", "DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
MINIO_PROVIDERS = ("minio", "minio.default")
VISIBILITIES = ("private", "public", "restricted")

_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_ENV_NAME_RE = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
BOOLEAN_FIELDS = ("file_stage_in", "alpine", "enable_gpu", "enable_sgx", "image_prefetch")
STRING_FIELDS = (
    "log_level",
    "visibility",
    "vo",
    "cluster_id",
    "total_cpu",
    "total_memory",
    "isolation_level",
)


class ServiceError(Exception):
    """A request about a service that the API answers with ``status`` and this message;
    ``minio_restarts``: how often OSCAR restarted MinIO before it failed (see registry.py)."""

    def __init__(self, status: int, message: str, minio_restarts: int = 0) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.minio_restarts = minio_restarts


def _invalid(detail: str) -> ServiceError:
    return ServiceError(400, f"The service specification is not valid: {detail}")


def parse_cpu(value: str) -> float:
    """A Kubernetes CPU quantity ("1", "0.25", "250m") as a number of CPUs."""
    return parse_quantity(value)


def _check_quantity(service: dict[str, Any], field: str, default: str, examples: str) -> str:
    value = service.get(field)
    if value is None or value == "":
        return default
    if not isinstance(value, str):
        raise _invalid(f"'{field}' must be a string such as {examples} (got {value!r})")
    try:
        if parse_quantity(value) <= 0:
            raise ValueError(value)
    except ValueError:
        raise _invalid(
            f"'{field}' {value!r} is not a positive Kubernetes quantity such as {examples}"
        ) from None
    return value


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


def _check_string_list(value: Any, what: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _invalid(f"{what} must be a list of strings")
    return list(value)


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
            _check_string_list(item.get(filt), f"{where}.{filt}")
        normalised = dict(item)
        normalised["storage_provider"] = provider.strip()
        normalised["path"] = f"{bucket}/{folder}" if folder else bucket
        checked.append(normalised)
    return checked


_GO_TYPES = {
    "int": "int",
    "int32": "int32",
    "int_list": "[]int",
    "int32_list": "[]int32",
    "bool": "bool",
    "string": "string",
}
_INT_BOUNDS = {"int": 1 << 63, "int32": 1 << 31}
_OMITEMPTY = ("api_port", "probe_mode", "auth_type")  # and nodePort from 4.1 (a list)


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _go_int(value: Any, kind: str, field: str) -> int:
    bound = _INT_BOUNDS[kind]
    if isinstance(value, bool) or not isinstance(value, int) or not -bound <= value < bound:
        what = f"number {value}" if _json_kind(value) == "number" else _json_kind(value)
        raise _invalid(
            f"json: cannot unmarshal {what} into Go struct field Expose.expose.{field} of type {kind}"
        )
    return value


def _check_expose(value: Any, version: OscarVersion) -> dict[str, Any]:
    """``expose`` decoded into the release's ``Expose`` type (pkg/types/service.go): Go's JSON rules
    (keys matched case-insensitively, unknown keys dropped, ``null`` leaves the zero value, a wrong
    type is a 400) and its encoding back (zero values shown unless the field is ``omitempty``)."""
    fields = version.expose_fields
    if not isinstance(value, dict):
        raise _invalid(
            f"json: cannot unmarshal {_json_kind(value)} into Go struct field Service.expose "
            "of type types.Expose"
        )
    by_lower = {name.lower(): name for name in fields}
    given: dict[str, Any] = {}
    for key, item in value.items():
        name = by_lower.get(str(key).lower())
        if name is not None and item is not None:
            given[name] = item
    expose: dict[str, Any] = {}
    for name, kind in fields.items():
        item = given.get(name)
        if kind in ("int", "int32"):
            expose[name] = 0 if item is None else _go_int(item, kind, name)
        elif kind in ("int_list", "int32_list"):
            if item is not None and not isinstance(item, list):
                raise _invalid(
                    f"json: cannot unmarshal {_json_kind(item)} into Go struct field "
                    f"Expose.expose.{name} of type {_GO_TYPES[kind]}"
                )
            element = kind.removesuffix("_list")
            expose[name] = [_go_int(v, element, name) for v in item or []]
        elif kind == "bool":
            if item is not None and not isinstance(item, bool):
                raise _invalid(
                    f"json: cannot unmarshal {_json_kind(item)} into Go struct field "
                    f"Expose.expose.{name} of type bool"
                )
            expose[name] = bool(item)
        else:
            if item is not None and not isinstance(item, str):
                raise _invalid(
                    f"json: cannot unmarshal {_json_kind(item)} into Go struct field "
                    f"Expose.expose.{name} of type string"
                )
            expose[name] = item or ""
    for name in _OMITEMPTY + (("nodePort",) if version.expose_port_lists else ()):
        if name in expose and not expose[name]:
            del expose[name]
    return expose


def validate_service(payload: Any, version: OscarVersion) -> dict[str, Any]:
    """Check a definition sent to ``POST/PUT /system/services`` and fill in OSCAR's defaults.

    Raises :class:`ServiceError` (400) with a message that names the offending field. Fields
    the release's service type lacks are dropped, as Go's JSON decoding drops them silently.
    The caller sets the owner.
    """
    if not isinstance(payload, dict):
        raise _invalid("the body must be a JSON object")
    service = copy.deepcopy(payload)
    for removed in version.removed_fields:
        service.pop(removed, None)

    name = service.get("name")
    if name is not None and not isinstance(name, str):
        raise _invalid("'name' must be a string")
    if not name:
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
        if value is not None and not isinstance(value, str):
            raise _invalid(f"'{field}' must be a string")
        if not value or not value.strip():
            raise _invalid(f"'{field}' is required")
    service["script"] = service["script"].replace("\r\n", "\n")
    for field in STRING_FIELDS:
        if service.get(field) is not None and not isinstance(service[field], str):
            raise _invalid(f"'{field}' must be a string")
    for field in BOOLEAN_FIELDS:
        value = service.get(field)
        if value is not None and not isinstance(value, bool):
            raise _invalid(f"'{field}' must be true or false (got {value!r})")
        service[field] = bool(value)

    service["cpu"] = _check_quantity(service, "cpu", DEFAULT_CPU, '"1", "0.25" or "250m"')
    service["memory"] = _check_quantity(service, "memory", DEFAULT_MEMORY, '"256Mi" or "2Gi"')
    level = str(service.get("log_level") or "").upper()
    service["log_level"] = level if level in LOG_LEVELS else "INFO"

    service["input"] = _check_storage_io(service.get("input"), "input")
    service["output"] = _check_storage_io(service.get("output"), "output")

    environment = service.get("environment") or {}
    if not isinstance(environment, dict):
        raise _invalid("'environment' must be an object with 'variables' and 'secrets'")
    # Go's encoding/json matches field names case-insensitively: oscar-cli sends "Variables".
    environment = {
        key.lower() if key.lower() in ("variables", "secrets") else key: value
        for key, value in environment.items()
    }
    variables = _check_string_map(environment.get("variables"), "environment.variables")
    secrets = _check_string_map(environment.get("secrets"), "environment.secrets")
    for key in list(variables) + list(secrets):
        if not _ENV_NAME_RE.match(key):
            raise _invalid(f"'{key}' is not a valid environment variable name")
    service["environment"] = {"variables": variables, "secrets": secrets}

    if service.get("visibility") not in (None, "", *VISIBILITIES):
        raise _invalid(f"'visibility' must be one of {', '.join(VISIBILITIES)}")
    service["visibility"] = service.get("visibility") or "private"
    service["allowed_users"] = _check_string_list(service.get("allowed_users"), "'allowed_users'")
    _check_string_list(service.get("image_pull_secrets"), "'image_pull_secrets'")
    labels = _check_string_map(service.get("labels"), "labels")
    labels.update({"oscar_service": name, "oscar.grycap/user-service": "true"})
    service["labels"] = labels
    service["annotations"] = _check_string_map(service.get("annotations"), "annotations")
    if service.get("expose") is not None:
        service["expose"] = _check_expose(service["expose"], version)
    else:
        service.pop("expose", None)
    return service
