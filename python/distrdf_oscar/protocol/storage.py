"""Object storage through the ``minio`` client, as on an OSCAR cluster's MinIO: every key routed
to its bucket (layout.py), transient errors retried, payloads signed and verified."""

from __future__ import annotations

import builtins
import contextlib
import io
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple
from urllib.parse import urlparse

from . import layout
from .signing import METADATA, Signer

if TYPE_CHECKING:
    from minio import Minio
    from minio.helpers import ProgressType
    from urllib3 import BaseHTTPResponse, Retry

Metadata = dict[str, str | list[str] | tuple[str]]  # minio-py's type of user metadata and headers


class Listed(NamedTuple):
    """An object as a listing shows it."""

    key: str
    modified: float  # epoch seconds, the server's clock: when its upload ended (MinIO: to the millisecond)
    size: int


class StorageError(RuntimeError):
    """A storage operation failed; the message names bucket and key, never credentials.

    ``transient`` tells whether trying again later may succeed (server errors, refused
    or dropped connections); permanent failures (no such bucket, access denied, bad
    credentials) are worth reporting at once.
    """

    def __init__(self, message: str, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


# S3 error codes that no retry can fix.
PERMANENT_CODES = frozenset(
    {
        "NoSuchBucket",
        "AccessDenied",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "AllAccessDisabled",
        "InvalidBucketName",
        "AccountProblem",
        "InvalidToken",
        "ExpiredToken",
    }
)
MISSING_CODES = frozenset({"NoSuchKey", "NoSuchObject", "ResourceNotFound"})
CONFLICT_CODES = frozenset({"PreconditionFailed", "ConditionalRequestConflict"})
WRITER = "x-amz-meta-dro-writer"  # names the copy that wrote a claim, read back where PUTs are unconditional
# Whether each (endpoint, bucket) honours conditional writes: probed once per process.
_CONDITIONAL_WRITES: dict[tuple[str, str], bool] = {}


def is_transient(exc: BaseException) -> bool:
    from minio.error import S3Error, ServerError

    if isinstance(exc, S3Error):
        return exc.code not in PERMANENT_CODES and exc.response is not None and exc.response.status >= 500
    if isinstance(exc, ServerError):
        return exc.status_code >= 500
    import urllib3

    return isinstance(exc, (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError))


@dataclass(frozen=True)
class StorageConfig:
    endpoint: str  # URL, e.g. http://127.0.0.1:9000
    access_key: str
    secret_key: str
    bucket: str
    region: str = "us-east-1"
    verify: bool = True

    def __repr__(self) -> str:  # keep keys out of logs and tracebacks
        return f"StorageConfig(endpoint={self.endpoint!r}, bucket={self.bucket!r}, verify={self.verify})"


def split_endpoint(endpoint: str) -> tuple[str, bool]:
    """``http(s)://host:port`` -> (``host:port``, secure)."""
    if "://" not in endpoint:
        endpoint = "https://" + endpoint
    url = urlparse(endpoint)
    if url.scheme not in ("http", "https") or not url.netloc:
        raise ValueError(f"malformed storage endpoint {endpoint!r}: expected http(s)://host[:port]")
    return url.netloc, url.scheme == "https"


def minio_client(
    endpoint: str,
    access_key: str | None,
    secret_key: str | None,
    *,
    region: str = "us-east-1",
    verify: bool = True,
    pool: int = 10,
    timeout: tuple[float, float] = (5.0, 60.0),
    retries: Retry | None = None,
) -> Minio:
    """The one way a ``minio.Minio`` is made here: ``endpoint`` as ``http(s)://host:port`` (or a bare
    host, HTTPS), a connection pool of ``pool``, (connect, read) ``timeout`` seconds and urllib3's
    ``retries``; each caller says what its traffic needs. No keys: anonymous."""
    import urllib3
    from minio import Minio

    host, secure = split_endpoint(endpoint)
    http = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=timeout[0], read=timeout[1]),
        maxsize=pool,
        cert_reqs="CERT_REQUIRED" if verify else "CERT_NONE",
        retries=retries,
    )
    return Minio(
        host, access_key=access_key, secret_key=secret_key, secure=secure, region=region, http_client=http
    )


def _retry_policy() -> Retry:
    """Transient failures (5xx, refused or reset connections) are retried with exponential
    backoff: 0.25, 0.5, 1, 2, 4, 4 s (about 12 s in all) before an operation fails. 4xx answers
    are final at once. PUTs are retried too: every write of the protocol is idempotent."""
    import urllib3

    return urllib3.Retry(
        total=6,
        connect=6,
        read=3,
        status=6,
        backoff_factor=0.25,
        backoff_max=4.0,
        status_forcelist=[500, 502, 503, 504],
        allowed_methods=None,
        raise_on_status=False,
    )


class Storage:
    """The buckets of one deployment; each key goes to the bucket its first folder lives in
    (:func:`distrdf_oscar.protocol.layout.bucket_of`), ``config.bucket`` being the base bucket.

    With a ``signer``, every upload carries its signature and every download is
    verified before it is returned (see :mod:`distrdf_oscar.protocol.signing`).
    """

    def __init__(self, config: StorageConfig, signer: Signer | None = None) -> None:
        self.config = config
        self._conditional_writes: bool | None = None
        self.signer = signer
        # Bytes of protocol objects this client moved (timeline records read the difference per call).
        self.bytes_read = 0
        self.bytes_written = 0
        self.bucket = config.bucket
        self.client = minio_client(
            config.endpoint,
            config.access_key,
            config.secret_key,
            region=config.region,
            verify=config.verify,
            pool=16,
            retries=_retry_policy(),
        )

    def bucket_of(self, key: str) -> str:
        return layout.bucket_of(self.bucket, key)

    def failure(self, action: str, key: str, exc: Exception, bucket: str | None = None) -> StorageError:
        """The StorageError that says ``action`` on ``key`` failed, and whether retrying may help."""
        code = getattr(exc, "code", None) or type(exc).__name__
        transient = is_transient(exc)
        hint = " (transient: retried with backoff, then given up)" if transient else ""
        where = bucket or self.bucket_of(key)
        return StorageError(f"storage {action} of s3://{where}/{key} failed: {code}{hint}", transient)

    @contextlib.contextmanager
    def _failing(self, action: str, key: str, bucket: str | None = None) -> Iterator[None]:
        """Any failure of the storage calls inside becomes one StorageError naming the action and
        the object (:meth:`failure`); a StorageError raised inside passes as it is."""
        try:
            yield
        except StorageError:
            raise
        except Exception as exc:
            raise self.failure(action, key, exc, bucket=bucket) from exc

    def check_reachable(self) -> None:
        """Check the endpoint accepts connections, at once (not after the retries)."""
        import socket

        host, secure = split_endpoint(self.config.endpoint)
        url = urlparse("//" + host)
        try:
            socket.create_connection((url.hostname, url.port or (443 if secure else 80)), timeout=10).close()
        except OSError as exc:
            raise StorageError(
                f"cannot reach the object storage at {self.config.endpoint} "
                f"(bucket {self.bucket}): {exc.strerror or exc}"
            ) from None

    def check_buckets(self) -> None:
        """Check the endpoint answers (at once, not after the retries) and every bucket of the
        deployment exists. OSCAR creates them with the services (an analyst's storage user
        may not create buckets at all), so a missing one means the deployment is incomplete."""
        self.check_reachable()
        for bucket in layout.buckets(self.bucket):
            with self._failing("bucket check", "", bucket=bucket):
                found = self.client.bucket_exists(bucket)
            if not found:
                raise StorageError(
                    f"bucket {bucket} of the deployment does not exist at {self.config.endpoint}: "
                    "its service was never created or was removed (run `distrdf-oscar deploy`)"
                )

    @property
    def conditional_writes(self) -> bool:
        """Whether the object storage honours ``If-None-Match: *`` on PUT (MinIO from
        RELEASE.2024-05-07; OSCAR up to 4.0 installs an older one). Probed on first use, once per
        process and endpoint: a probe object written twice, the second time conditionally."""
        if self._conditional_writes is None:
            where = (self.config.endpoint, self.bucket)
            known = _CONDITIONAL_WRITES.get(where)
            if known is None:
                known = _CONDITIONAL_WRITES[where] = self._probe_conditional_writes()
            self._conditional_writes = known
        return self._conditional_writes

    def _probe_conditional_writes(self) -> bool:
        import secrets

        key = layout.probe_key(secrets.token_hex(8))
        try:
            self.put_bytes(key, b"")
            return not self._put_conditionally(key, b"")
        finally:
            self.delete([key])

    def bucket_exists(self, bucket: str) -> bool:
        with self._failing("bucket check", "", bucket=bucket):
            return self.client.bucket_exists(bucket)

    def remove_bucket(self, bucket: str) -> bool:
        """Delete a bucket with everything in it; False if there was none."""
        from minio.deleteobjects import DeleteObject

        if not self.bucket_exists(bucket):
            return False
        with self._failing("bucket removal", "", bucket=bucket):
            keys = [DeleteObject(o.object_name) for o in self.client.list_objects(bucket, recursive=True)]
            for error in self.client.remove_objects(bucket, keys):
                raise StorageError(f"storage delete of s3://{bucket}/{error.name} failed: {error.code}")
            self.client.remove_bucket(bucket)
        return True

    def _metadata(self, signature: str | None) -> Metadata | None:
        return {METADATA: signature} if signature else None

    def put_bytes(self, key: str, data: bytes) -> None:
        signature = self.signer.sign(key, data) if self.signer else None
        with self._failing("upload", key):
            self.client.put_object(
                self.bucket_of(key), key, io.BytesIO(data), len(data), metadata=self._metadata(signature)
            )
        self.bytes_written += len(data)

    def put_file(self, key: str, path: str) -> None:
        signature = self.signer.sign_file(key, path) if self.signer else None
        with self._failing("upload", key):
            self.client.fput_object(self.bucket_of(key), key, path, metadata=self._metadata(signature))
        self.bytes_written += os.path.getsize(path)

    def put_if_absent(self, key: str, data: bytes) -> bool:
        """Create ``key`` unless an object has it; False when another writer got there first, so
        that duplicate functions never replace (nor re-announce) an object.

        Where storage ignores conditional writes (:attr:`conditional_writes`), a claim is a look,
        a write naming this copy, and a read-back: of two copies racing within the same few
        milliseconds both may go on, which the protocol makes harmless (every object a claim
        guards has one key and one content per task; docs/reliability.md)."""
        if self.conditional_writes:
            return self._put_conditionally(key, data)
        if self.exists(key):
            return False
        import secrets

        token = secrets.token_hex(8)
        headers = {
            WRITER: token,
            **(self._metadata(self.signer.sign(key, data) if self.signer else None) or {}),
        }
        with self._failing("upload", key):
            self.client.put_object(self.bucket_of(key), key, io.BytesIO(data), len(data), metadata=headers)
        self.bytes_written += len(data)
        with self._failing("lookup", key):
            written = self.client.stat_object(self.bucket_of(key), key).metadata
        return written is not None and written.get(WRITER) == token

    def _put_conditionally(self, key: str, data: bytes) -> bool:
        """PUT with ``If-None-Match: *``; False if the key exists. minio-py's public upload turns
        unknown headers into metadata, so this goes through its single-request PUT (a private
        method, hence the pin ``minio<8``). boto3 could send the header too, but costs every
        cold function ~0.25 s to import and build a client."""
        from minio.error import S3Error

        headers: Metadata = {"Content-Type": "application/octet-stream", "If-None-Match": "*"}
        if self.signer:
            headers[METADATA] = self.signer.sign(key, data)
        with self._failing("upload", key):
            try:
                self.client._put_object(self.bucket_of(key), key, data, headers)  # private: see the docstring
            except S3Error as exc:
                if exc.code in CONFLICT_CODES:
                    return False
                raise
        self.bytes_written += len(data)
        return True

    def _download(self, key: str, consume: Callable[[BaseHTTPResponse], None]) -> str | None:
        """GET an object, hand the response to ``consume``, return the object's signature.

        Content and signature come from the one response: a stat-then-download could pair the
        metadata of one version with the bytes of another written in between (duplicate writers
        are allowed)."""
        with self._failing("download", key):
            response = self.client.get_object(self.bucket_of(key), key)
            try:
                consume(response)
                return response.headers.get(METADATA)
            finally:
                response.close()
                response.release_conn()

    def get_bytes(self, key: str, verify: bool = True) -> bytes:
        """The object's content; with a signer and ``verify``, only if its signature holds."""
        body: list[bytes] = []
        signature = self._download(key, lambda response: body.append(response.read()))
        if self.signer and verify:
            self.signer.verify(key, body[0], signature)
        self.bytes_read += len(body[0])
        return body[0]

    def get_file(self, key: str, path: str) -> None:
        def write(response: BaseHTTPResponse) -> None:
            with open(path, "wb") as f:
                f.writelines(response.stream(1 << 20))

        signature = self._download(key, write)
        if self.signer:
            try:
                self.signer.verify_file(key, path, signature)
            except Exception:
                os.remove(path)
                raise
        self.bytes_read += os.path.getsize(path)

    def verify_local(self, key: str, path: str) -> None:
        """Check a file someone else downloaded (OSCAR's supervisor) against the object's signature."""
        if self.signer is None:
            return
        with self._failing("lookup", key):
            signature = (self.client.stat_object(self.bucket_of(key), key).metadata or {}).get(METADATA)
        self.signer.verify_file(key, path, signature)

    # -- datasets: the user's objects, in any bucket these keys can read; not signed ------------
    def keep_dataset(self, key: str, dataset_key: str) -> str:
        """Copy a job's object (server side) to ``dataset_key`` of the base bucket, which outlives
        the job; returns its ``s3://`` URL."""
        from minio.commonconfig import CopySource

        with self._failing("copy", key):
            self.client.copy_object(self.bucket, dataset_key, CopySource(self.bucket_of(key), key))
        return f"s3://{self.bucket}/{dataset_key}"

    def upload_dataset(self, path: str, bucket: str, key: str, progress: ProgressType | None = None) -> str:
        """Upload a local file as ``s3://bucket/key`` (in parts, from disk); returns that URL."""
        with self._failing("dataset upload", key, bucket=bucket):
            self.client.fput_object(bucket, key, path, progress=progress)
        return f"s3://{bucket}/{key}"

    def exists(self, key: str) -> bool:
        from minio.error import S3Error

        with self._failing("lookup", key):
            try:
                self.client.stat_object(self.bucket_of(key), key)
            except S3Error as exc:
                if exc.code in MISSING_CODES:
                    return False
                raise
        return True

    def list(self, prefix: str, start_after: str | None = None) -> list[str]:
        """Keys under ``prefix`` in key order; with ``start_after``, only the keys after it (S3
        lists from there, so a caller that knows what it has seen pays only for the rest)."""
        return [entry.key for entry in self.listing(prefix, start_after)]

    def listing(self, prefix: str, start_after: str | None = None) -> builtins.list[Listed]:
        """As :meth:`list`, each key with its object's last-modified time and size."""
        with self._failing("listing", prefix):
            return [
                Listed(o.object_name, o.last_modified.timestamp(), o.size)
                for o in self.client.list_objects(
                    self.bucket_of(prefix), prefix=prefix, recursive=True, start_after=start_after
                )
            ]

    def modified(self, prefix: str) -> dict[str, float]:
        """Keys under ``prefix`` with their last-modified time (epoch seconds, server clock)."""
        return {entry.key: entry.modified for entry in self.listing(prefix)}

    def listen_created(self, prefix: str, stop: threading.Event | None = None) -> Iterator[str]:
        """Keys of the objects created under ``prefix`` from now on, as MinIO announces them
        (its bucket-notification stream, ``GET /<bucket>?events=s3:ObjectCreated:*&prefix=``):
        one long request instead of listing, each creation seen within milliseconds. MinIO keeps
        an idle stream alive with a byte every 0.5 s, so ``stop`` is seen that often; nothing
        created while no stream is open is ever announced (list once after (re)connecting).

        StorageError when the server does not offer the stream (an S3 server other than MinIO:
        permanent), refuses it (``s3:ListenBucketNotification`` not granted: permanent), or the
        stream fails or ends (transient: a new stream may work). minio-py's own
        ``listen_bucket_notification`` iterator blocks until an event arrives and reopens a
        closed stream by itself, so the request goes through its request method (private)."""
        import json

        bucket = self.bucket_of(prefix)
        with self._failing("notification listening", prefix):
            response = self.client._execute(  # private: see the docstring
                "GET",
                bucket,
                query_params={"events": "s3:ObjectCreated:*", "prefix": prefix, "suffix": ""},
                preload_content=False,
            )
        try:
            if not response.headers.get("Content-Type", "").startswith("text/event-stream"):
                raise StorageError(
                    f"the object storage at {self.config.endpoint} does not offer MinIO's "
                    f"bucket notifications (listening under s3://{bucket}/{prefix})"
                )
            pending = b""
            pieces = response.read_chunked(1 << 16) if response.chunked else iter(response.read1, b"")
            for piece in pieces:
                if stop is not None and stop.is_set():
                    return
                lines = (pending + piece).split(b"\n")
                pending = lines.pop()
                for line in lines:
                    if not line.strip():
                        continue  # MinIO's keep-alive: spaces (and, with ping=, empty records)
                    for record in json.loads(line).get("Records") or ():
                        if str(record.get("eventName", "")).startswith("s3:ObjectCreated:"):
                            yield record["s3"]["object"]["key"]
        except StorageError:
            raise
        except Exception as exc:
            raise StorageError(
                f"notification stream of s3://{bucket}/{prefix} failed: {type(exc).__name__}", transient=True
            ) from exc
        finally:
            response.close()
            response.release_conn()
        if stop is None or not stop.is_set():
            raise StorageError(f"notification stream of s3://{bucket}/{prefix} ended", transient=True)

    def delete(self, keys: builtins.list[str]) -> None:
        from minio.deleteobjects import DeleteObject

        by_bucket: dict[str, builtins.list[str]] = {}
        for key in keys:
            by_bucket.setdefault(self.bucket_of(key), []).append(key)
        for bucket, group in by_bucket.items():
            with self._failing("delete", group[0]):
                errors = list(self.client.remove_objects(bucket, [DeleteObject(k) for k in group]))
            if errors:
                raise StorageError(
                    f"storage delete of s3://{bucket}/{errors[0].name} failed: {errors[0].code}"
                )

    def delete_prefix(self, prefix: str) -> int:
        keys = self.list(prefix)
        self.delete(keys)
        return len(keys)
