"""OSCAR's function contract: how a function learns what triggered it and where its storage is.

OSCAR's supervisor hands the MinIO event in ``EVENT`` (``STORAGE_OBJECT_KEY`` when it is not one) and
mounts the function's config, with the ``minio.default`` provider, at
``/oscar/config/function_config.yaml``; the embedded platform points ``DRO_FUNCTION_CONFIG`` at its copy.
A pool service gets no mounted keys (OSCAR mounts MinIO keys only into jobs, job.go): its secrets.
"""

from __future__ import annotations

import json
import os
from urllib.parse import unquote

from ..protocol.contract import (
    FUNCTION_CONFIG,
    FUNCTION_CONFIG_VARIABLE,
    POOL_KEYS,
    PROVIDER_SECRETS,
    PROVIDER_SECRETS_VARIABLE,
)
from ..protocol.storage import StorageConfig


def storage_config(bucket: str, path: str | None = None) -> StorageConfig:
    """Storage settings of the running function (OSCAR's function config).

    Since OSCAR 3.5 the config shows the keys as ``hidden`` and mounts them as
    files under ``/var/run/secrets/providers/minio.default/``; read them there.
    """
    import yaml

    path = path or os.environ.get(FUNCTION_CONFIG_VARIABLE, FUNCTION_CONFIG)
    with open(path) as f:
        config = yaml.safe_load(f)
    provider = config["storage_providers"]["minio"]["default"]
    keys = {}
    for field, filename, secret in (
        ("access_key", "accessKey", POOL_KEYS[0]),
        ("secret_key", "secretKey", POOL_KEYS[1]),
    ):
        value = provider.get(field)
        if not value or value == "hidden":
            value = os.environ.get(secret, "")  # an exposed service's pod: no mounted keys, its secrets
        if not value:
            with open(
                os.path.join(os.environ.get(PROVIDER_SECRETS_VARIABLE, PROVIDER_SECRETS), filename)
            ) as f:
                value = f.read().strip()
        keys[field] = value
    return StorageConfig(
        endpoint=provider["endpoint"],
        region=provider.get("region") or "us-east-1",
        verify=bool(provider.get("verify", True)),
        bucket=bucket,
        **keys,
    )


def triggering_object() -> tuple[str, str]:
    """(bucket, key) of the object that invoked us: from the MinIO event, else STORAGE_OBJECT_KEY."""
    try:
        record = json.loads(os.environ.get("EVENT", ""))["Records"][0]["s3"]
        return record["bucket"]["name"], unquote(record["object"]["key"])
    except (ValueError, KeyError, IndexError, TypeError):
        bucket, _, key = os.environ.get("STORAGE_OBJECT_KEY", "").partition("/")  # "<bucket>/<key>"
        return bucket, key


def event_time() -> float | None:
    """When storage emitted the event that invoked us (MinIO's ``eventTime``), epoch seconds."""
    import datetime as dt

    try:
        stamp = json.loads(os.environ.get("EVENT", ""))["Records"][0]["eventTime"]
        return dt.datetime.fromisoformat(stamp).timestamp()  # Python 3.11 reads the "Z"
    except (ValueError, KeyError, IndexError, TypeError):
        return None
