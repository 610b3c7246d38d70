"""Object-store operations the platform itself performs (as OSCAR and its supervisor do)."""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from typing import Any

import urllib3
from minio import Minio
from minio.error import S3Error

from ...protocol.storage import minio_client
from .validation import split_path


@dataclass(frozen=True)
class StorageCredentials:
    """The ``minio.default`` provider: what ``/system/config`` hands out and functions receive."""

    host_port: str  # "127.0.0.1:PORT"
    access_key: str
    secret_key: str
    region: str = "us-east-1"
    secure: bool = False

    @property
    def endpoint_url(self) -> str:
        return ("https://" if self.secure else "http://") + self.host_port

    def provider(self) -> dict[str, Any]:
        """OSCAR's ``MinIOProvider`` JSON (endpoint with scheme, as OSCAR reports it)."""
        return {
            "endpoint": self.endpoint_url,
            "verify": True,
            "access_key": self.access_key,
            "secret_key": self.secret_key,
            "region": self.region,
        }

    def client(self) -> Minio:
        # One client serves the poller and every running job at once: a larger
        # pool than minio's default of 10 avoids "pool is full" churn.
        return minio_client(
            self.endpoint_url,
            self.access_key,
            self.secret_key,
            region=self.region,
            pool=64,
            timeout=(30.0, 300.0),
            retries=urllib3.Retry(total=5, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]),
        )


def ensure_bucket(client: Minio, bucket: str) -> None:
    try:
        client.make_bucket(bucket)
    except S3Error as err:
        if err.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise


def bucket_exists(client: Minio, bucket: str) -> bool:
    return client.bucket_exists(bucket)


def remove_bucket(client: Minio, bucket: str) -> None:
    """Delete a bucket with every object in it, as OSCAR's service deletion does (3.6 and later)."""
    from minio.deleteobjects import DeleteObject

    for attempt in range(5):
        try:
            keys = [DeleteObject(o.object_name) for o in client.list_objects(bucket, recursive=True)]
            for error in client.remove_objects(bucket, keys):
                raise RuntimeError(f"cannot delete {error.name} from bucket {bucket}: {error.code}")
            client.remove_bucket(bucket)
            return
        except S3Error as err:
            if err.code == "NoSuchBucket":
                return
            if err.code != "BucketNotEmpty" or attempt == 4:
                raise
            time.sleep(0.2)  # a function of the service was still writing into it


def provision_path(client: Minio, path: str) -> None:
    """Create the bucket of a service path and its folder marker (``folder/``), as OSCAR does."""
    bucket, folder = split_path(path)
    ensure_bucket(client, bucket)
    if folder:
        client.put_object(bucket, folder + "/", io.BytesIO(b""), 0)


def output_key(output_path: str, relname: str) -> tuple[str, str]:
    """Where the supervisor puts output file ``relname``: ``<path>/<relname>``; a bare bucket gives ``relname``."""
    bucket, folder = split_path(output_path)
    return bucket, f"{folder}/{relname}" if folder else relname
