"""MinIO's bucket-notification listening on the storage front, and Storage.listen_created: a real
embedded platform, the real minio client."""

from __future__ import annotations

import io
import threading
import time

import pytest
from minio import Minio
from minio.commonconfig import CopySource
from minio.error import S3Error

from distrdf_oscar.platform.embedded import Fault
from distrdf_oscar.protocol.storage import Storage, StorageConfig, StorageError

BUCKET = "listen-tests"
OTHER = "listen-tests-other"
PLATFORM = {"workers": 1, "bucket_hint": BUCKET, "fault_injection": True, "oidc_users": ("alice",)}
PICK_UP = 0.3  # seconds: the warm pool's target from a queued item to its pick-up


def storage(platform, access: str | None = None, secret: str | None = None, bucket: str = BUCKET) -> Storage:
    return Storage(
        StorageConfig(
            "http://" + platform.s3_endpoint,
            access or platform.s3_access_key,
            secret or platform.s3_secret_key,
            bucket,
        )
    )


class Watch:
    """listen_created in a thread: what it yielded (with when), and the error that ended it."""

    def __init__(self, s: Storage, prefix: str) -> None:
        self.seen: list[tuple[str, float]] = []
        self.error: StorageError | None = None
        self.stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(s, prefix), daemon=True)
        self._thread.start()
        time.sleep(0.5)  # the stream is open: what is created from now on is announced

    def _run(self, s: Storage, prefix: str) -> None:
        try:
            for key in s.listen_created(prefix, self.stop):
                self.seen.append((key, time.monotonic()))
        except StorageError as exc:
            self.error = exc

    def keys(self) -> list[str]:
        return [key for key, _ in self.seen]

    def wait_for(self, count: int, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.seen) < count and self.error is None and time.monotonic() < deadline:
            time.sleep(0.01)

    def close(self) -> None:
        self.stop.set()
        self._thread.join(3)
        assert not self._thread.is_alive(), "listen_created did not see its stop flag"


@pytest.fixture(scope="module")
def buckets(s3):
    if not s3.bucket_exists(OTHER):
        s3.make_bucket(OTHER)


def test_a_creation_under_the_prefix_is_seen_within_the_pick_up_target(platform, buckets):
    s = storage(platform)
    watch = Watch(s, "queue/")
    try:
        for i in range(5):
            created = time.monotonic()
            s.put_bytes(f"queue/item-{i}", b"x")
            watch.wait_for(i + 1)
            assert watch.keys()[-1] == f"queue/item-{i}"
            assert watch.seen[-1][1] - created < PICK_UP
    finally:
        watch.close()


def test_objects_outside_the_prefix_or_bucket_are_not_announced(platform, s3, buckets):
    s = storage(platform)
    watch = Watch(s, "queue/")
    try:
        s.put_bytes("queued-not/x", b"x")  # shares the prefix's letters, not its folder
        s.put_bytes("other/queue/x", b"x")
        s3.put_object(OTHER, "queue/elsewhere", io.BytesIO(b"x"), 1)  # same key prefix, another bucket
        s.put_bytes("queue/mine", b"x")
        watch.wait_for(1)
        # The stream announces in creation order: once a later key is in, an earlier one would be.
        s.put_bytes("queue/last", b"x")
        watch.wait_for(2)
        assert watch.keys() == ["queue/mine", "queue/last"]
    finally:
        watch.close()


def test_copies_and_multipart_uploads_are_announced_with_their_size(platform, s3, buckets):
    events = s3.listen_bucket_notification(BUCKET, prefix="made/", events=("s3:ObjectCreated:*",))
    records: list[dict] = []

    def read() -> None:
        for event in events:
            records.extend(event["Records"])
            if len(records) == 2:
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    time.sleep(0.5)
    s3.put_object(BUCKET, "source/big", io.BytesIO(b"y" * (6 << 20)), 6 << 20, part_size=5 << 20)  # multipart
    s3.copy_object(BUCKET, "made/copy", CopySource(BUCKET, "source/big"))
    s3.put_object(BUCKET, "made/multipart", io.BytesIO(b"z" * (6 << 20)), 6 << 20, part_size=5 << 20)
    reader.join(10)
    events.__exit__(None, None, None)
    by_key = {r["s3"]["object"]["key"]: r for r in records}
    assert by_key["made/copy"]["eventName"] == "s3:ObjectCreated:Copy"
    assert by_key["made/multipart"]["eventName"] == "s3:ObjectCreated:CompleteMultipartUpload"
    assert {r["s3"]["object"]["size"] for r in records} == {6 << 20}
    assert {r["userIdentity"]["principalId"] for r in records} == {platform.s3_access_key}
    assert {r["s3"]["bucket"]["name"] for r in records} == {BUCKET}


def test_the_stream_survives_idle_periods(platform, buckets):
    s = storage(platform)
    watch = Watch(s, "idle/")
    try:
        time.sleep(3.0)  # MinIO keeps it open with a byte every 0.5 s
        created = time.monotonic()
        s.put_bytes("idle/after-a-while", b"x")
        watch.wait_for(1)
        assert watch.error is None
        assert watch.keys() == ["idle/after-a-while"]
        assert watch.seen[0][1] - created < PICK_UP
    finally:
        watch.close()


def test_a_refused_key_is_refused(platform, buckets):
    for access, secret, code in [
        ("not-our-access-key", "whatever-secret", "InvalidAccessKeyId"),
        # OSCAR's policies give a restricted service's users no listening
        ("alice", platform.oidc_storage_keys("alice")[1], "AccessDenied"),
    ]:
        with pytest.raises(StorageError, match=code) as failure:
            next(iter(storage(platform, access, secret).listen_created("queue/")))
        assert failure.value.transient is False
        assert access not in str(failure.value) or access == "alice"


def test_requests_minio_refuses_are_refused(platform, s3, buckets):
    with pytest.raises(S3Error) as failure:
        next(iter(s3.listen_bucket_notification(BUCKET, events=("s3:ObjectCreated:Everything",))))
    assert failure.value.code == "InvalidArgument"
    with pytest.raises(S3Error) as failure:
        next(iter(s3.listen_bucket_notification("no-such-bucket-here", events=("s3:ObjectCreated:*",))))
    assert failure.value.code == "NoSuchBucket"


def test_an_outage_ends_the_stream_with_a_transient_error(platform, buckets):
    watch = Watch(storage(platform), "queue/")
    try:
        platform.inject(Fault.storage_outage(seconds=1.0, mode="503"))
        watch.wait_for(1, timeout=3.0)
        assert watch.error is not None
        assert watch.error.transient
    finally:
        watch.close()
        time.sleep(1.2)
        platform.clear_faults()


def test_a_server_without_the_api_is_told_apart():
    """moto alone (as AWS S3) answers the request as a listing: permanent, so the caller lists."""
    from distrdf_oscar.platform.embedded.s3server import S3Server

    server = S3Server()
    server.launch()
    try:
        server.wait_ready()
        Minio(server.endpoint, "any", "any-secret", secure=False).make_bucket(BUCKET)
        s = Storage(StorageConfig("http://" + server.endpoint, "any", "any-secret", BUCKET))
        with pytest.raises(StorageError, match="does not offer MinIO's bucket notifications") as failure:
            next(iter(s.listen_created("queue/")))
        assert failure.value.transient is False
    finally:
        server.stop()
