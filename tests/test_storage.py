"""The storage layer against a real S3 server: claims, transient and permanent errors."""

from __future__ import annotations

import time

import pytest

from distrdf_oscar.platform.embedded import Fault
from distrdf_oscar.protocol.arrivals import Arrivals
from distrdf_oscar.protocol.signing import Signer
from distrdf_oscar.protocol.storage import Storage, StorageConfig, StorageError

BUCKET = "storage-tests"


PLATFORM = {
    "workers": 1,
    "bucket_hint": BUCKET,
    "fault_injection": True,
}  # this module's platform (conftest.py)


def storage(platform, bucket: str = BUCKET, access: str | None = None) -> Storage:
    config = StorageConfig(
        "http://" + platform.s3_endpoint, access or platform.s3_access_key, platform.s3_secret_key, bucket
    )
    return Storage(config, signer=Signer("k" * 32))


def test_claim_is_won_once_and_keeps_the_first_copy(platform):
    s = storage(platform)
    assert s.put_if_absent("claims/one", b"first") is True
    assert s.put_if_absent("claims/one", b"second") is False
    assert s.get_bytes("claims/one") == b"first"


def test_transient_outages_are_ridden_out(platform):
    s = storage(platform)
    s.put_bytes("outage/before", b"x")
    for mode in ("503", "refuse"):
        platform.inject(Fault.storage_outage(seconds=1.5, mode=mode))
        time.sleep(0.2)
        s.put_bytes(f"outage/{mode}", mode.encode())  # retried with backoff until the outage ends
        assert s.get_bytes(f"outage/{mode}") == mode.encode()
        assert [f.fired for f in platform.faults()] == [1]
        time.sleep(1.5)
        platform.clear_faults()


@pytest.mark.parametrize(
    ("problem", "make", "code"),
    [
        ("no such bucket", lambda p: storage(p, bucket="no-such-bucket"), "NoSuchBucket"),
        ("unknown access key", lambda p: storage(p, access="not-our-access-key"), "InvalidAccessKeyId"),
    ],
)
def test_permanent_errors_fail_at_once_naming_bucket_and_key(platform, problem, make, code):
    s = make(platform)
    with pytest.raises(StorageError, match=rf"s3://{s.bucket}/jobs/some-key failed: {code}") as failure:
        s.put_bytes("jobs/some-key", b"data")
    assert failure.value.transient is False
    assert "not-our-access-key" not in str(failure.value)


def test_unreachable_endpoint_is_named_at_once():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    s = Storage(StorageConfig(f"http://127.0.0.1:{port}", "access", "secret", BUCKET))
    with pytest.raises(
        StorageError,
        match=rf"cannot reach the object storage at http://127.0.0.1:{port} "
        rf"\(bucket {BUCKET}\): Connection refused",
    ):
        s.check_buckets()


def test_arrivals_list_only_past_the_run_already_seen(platform):
    s = storage(platform)
    expected = [f"arrive/{i:03d}" for i in range(6)]
    listed: list[list[str]] = []
    real_list = s.listing

    def listing(prefix, start_after=None):
        answer = real_list(prefix, start_after)
        listed.append([entry.key for entry in answer])
        return answer

    s.listing = listing
    watch = Arrivals(s, "arrive/", expected)
    before = time.time()
    for key in ("arrive/001", "arrive/000", "arrive/004", "arrive/unexpected"):
        s.put_bytes(key, b"x")
    assert watch.poll() == ["arrive/000", "arrive/001", "arrive/004"]
    # When each upload ended, to the millisecond (as MinIO's listings give it; moto's alone would not).
    assert set(watch.objects) == {"arrive/000", "arrive/001", "arrive/004"}
    assert all(before - 0.001 <= o.modified <= time.time() and o.size == 1 for o in watch.objects.values())
    assert any(o.modified != int(o.modified) for o in watch.objects.values())
    s.put_bytes("arrive/002", b"x")
    assert watch.poll() == ["arrive/002"]
    # The second listing started after 001, the end of the run of keys seen in order.
    assert listed[-1] == ["arrive/002", "arrive/004", "arrive/unexpected"]
    for key in ("arrive/003", "arrive/005"):
        s.put_bytes(key, b"x")
    assert watch.poll() == ["arrive/003", "arrive/005"]
    assert watch.complete
    assert watch.found == set(expected)
    calls = len(listed)
    assert watch.poll() == []
    assert len(listed) == calls  # complete: no more listing
