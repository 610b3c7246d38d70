"""Dataset files in object storage, staged for a function: the deployment's own (``s3://``) and
another S3 endpoint's (``s3http(s)://``), each downloaded once per object version."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from .storage import MISSING_CODES, Storage, StorageError, is_transient, minio_client

if TYPE_CHECKING:
    from minio import Minio


def fetch_from_deployment(storage: Storage, bucket: str, key: str, cache: str) -> str:
    """A local copy of ``s3://bucket/key`` of the deployment's storage, downloaded once per object
    version into ``cache``."""
    return fetch_object(
        storage.client,
        bucket,
        key,
        cache,
        lambda action, exc: storage.failure(action, key, exc, bucket=bucket),
    )


# The keys of another endpoint's datasets, named as ROOT's TS3WebFile reads them: in the client's
# environment, and in the functions' as secrets of the services (deploy --dataset-credentials).
DATASET_KEYS = ("S3_ACCESS_KEY", "S3_SECRET_KEY")
CREDENTIAL_CODES = frozenset(
    {
        "AccessDenied",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "InvalidToken",
        "ExpiredToken",
        "AllAccessDisabled",
        "InvalidClientTokenId",
    }
)


def fetch_object(
    client: Minio, bucket: str, key: str, cache: str, fail: Callable[[str, Exception], Exception]
) -> str:
    """Download ``bucket/key`` once per object version (its ETag) into ``cache``; returns the path.
    A cached copy's modification time is its last use (datasets.DatasetCache evicts by it)."""
    import hashlib

    try:
        etag = client.stat_object(bucket, key).etag or "unknown"
    except Exception as exc:
        raise fail("dataset lookup", exc) from exc
    # One flat name per key (no folder of the key can climb out of the cache), its end readable.
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    path = os.path.join(cache, bucket, f"{digest}-{key.rsplit('/', 1)[-1][-80:]}.{etag.strip(chr(34))[:16]}")
    if os.path.exists(path):
        os.utime(path)
        return path
    os.makedirs(os.path.dirname(path), exist_ok=True)
    partial = f"{path}.{os.getpid()}.part"
    try:
        client.fget_object(bucket, key, partial)
    except Exception as exc:
        with contextlib.suppress(FileNotFoundError):
            os.remove(partial)
        raise fail("dataset download", exc) from exc
    os.replace(partial, path)  # whole or absent, for a concurrent reader of the cache
    return path


class DatasetEndpoint:
    """Another S3 endpoint's objects (``s3http://host:port/bucket/key``, ``s3https://...``), read
    with the keys in ``S3_ACCESS_KEY``/``S3_SECRET_KEY`` (anonymously without them). Errors name
    the URL and what to fix, never the keys. An endpoint that does not answer fails within
    seconds: two connection retries, not the deployment storage's twelve seconds of backoff."""

    def __init__(self, endpoint: str, environ: dict[str, str] | None = None) -> None:
        import urllib3

        env = os.environ if environ is None else environ
        access, secret = (env.get(name) or None for name in DATASET_KEYS)
        self.endpoint = endpoint
        self.anonymous = not (access and secret)
        self.client = minio_client(
            endpoint,
            None if self.anonymous else access,
            None if self.anonymous else secret,
            region=env.get("S3_REGION") or "us-east-1",
            pool=4,
            retries=urllib3.Retry(
                total=2,
                connect=2,
                read=2,
                status=2,
                backoff_factor=0.25,
                status_forcelist=[500, 502, 503, 504],
                allowed_methods=None,
                raise_on_status=False,
            ),
        )

    def error(self, action: str, url: str, exc: Exception) -> StorageError:
        import urllib3

        code = getattr(exc, "code", None)
        if code is None and isinstance(exc, (urllib3.exceptions.HTTPError, OSError)):
            reason = getattr(exc, "reason", None) or exc
            return StorageError(
                f"{action} of {url} failed: the S3 endpoint {self.endpoint} did not answer "
                f"({type(reason).__name__})",
                transient=True,
            )
        code = code or type(exc).__name__
        if code in MISSING_CODES or code == "NoSuchBucket":
            return StorageError(f"{action} of {url} failed: {code} (no such object on {self.endpoint})")
        keys = "/".join(DATASET_KEYS)
        if code in CREDENTIAL_CODES or self.anonymous:
            why = (
                f"no {keys} set: the request was anonymous" if self.anonymous else f"check the keys in {keys}"
            )
            return StorageError(
                f"{action} of {url} failed: {code} ({why}; the functions get them as "
                "secrets of the services: distrdf-oscar deploy --dataset-credentials)"
            )
        return StorageError(f"{action} of {url} failed: {code}", transient=is_transient(exc))

    def fetch(self, url: str, bucket: str, key: str, cache: str) -> str:
        return fetch_object(self.client, bucket, key, cache, lambda action, exc: self.error(action, url, exc))
