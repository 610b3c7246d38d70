"""The storage front checks every request's AWS Signature V4 as MinIO does: header and presigned
signatures, the date, the payload's SHA-256 (and Content-MD5). Knowing an access key (the root's
appears in every notification event as ``principalId``) is not being its account. With the real
minio client, boto3 and hand-made requests on an embedded platform; its request counts too."""

from __future__ import annotations

import datetime as dt
import hashlib
import http.client
import io
import threading
import time
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from minio import Minio, MinioAdmin
from minio.credentials import Credentials, StaticProvider
from minio.error import MinioAdminException, S3Error
from minio.signer import sign_v4_s3

BUCKET = "signature-tests"
PLATFORM = {"workers": 1, "bucket_hint": BUCKET, "oidc_users": ("alice",)}


def send(
    platform,
    method: str,
    path: str,
    *,
    access: str | None = None,
    secret: str | None = None,
    body: bytes = b"",
    sha256: str | None = None,
    when: dt.datetime | None = None,
    headers: dict[str, str] | None = None,
    sent_path: str | None = None,
    sent_body: bytes | None = None,
) -> tuple[int, str, bytes]:
    """One request signed by minio-py's signer with (access, secret); ``sent_path``/``sent_body``
    replace what was signed (a tampered request). (status, error code, body) of the answer."""
    access = access or platform.s3_access_key
    secret = secret or platform.s3_secret_key
    when = when or dt.datetime.now(dt.UTC).replace(tzinfo=None)
    sha256 = sha256 or hashlib.sha256(body).hexdigest()
    url = urlsplit(f"http://{platform.s3_endpoint}{path}")
    signed = {
        "Host": url.netloc,
        "x-amz-date": when.strftime("%Y%m%dT%H%M%SZ"),
        "x-amz-content-sha256": sha256,
        **(headers or {}),
    }
    if body:
        signed["Content-Length"] = str(len(body))
    signed = sign_v4_s3(
        method=method,
        url=url,
        region="us-east-1",
        headers=signed,
        credentials=Credentials(access, secret),
        content_sha256=sha256,
        date=when,
    )
    data = body if sent_body is None else sent_body
    if "Content-Length" in signed:
        signed["Content-Length"] = str(len(data))
    conn = http.client.HTTPConnection(url.netloc, timeout=30)
    try:
        conn.request(
            method,
            sent_path or path + (f"?{url.query}" if url.query else ""),
            body=data or None,
            headers=signed,
        )
        response = conn.getresponse()
        answer = response.read()
    finally:
        conn.close()
    code = answer.split(b"<Code>", 1)[1].split(b"</Code>", 1)[0].decode() if b"<Code>" in answer else ""
    return response.status, code, answer


def exists(s3: Minio, key: str) -> bool:
    try:
        s3.stat_object(BUCKET, key)
        return True
    except S3Error:
        return False


def test_requests_signed_by_the_clients_of_the_project_pass(platform, s3):
    s3.put_object(BUCKET, "ok/minio", io.BytesIO(b"x" * 1000), 1000, metadata={"note": "a  b"})
    assert s3.get_object(BUCKET, "ok/minio").read() == b"x" * 1000
    big = bytes(range(256)) * (6 * 4096 + 7)  # > 5 MiB: a multipart upload, each part's SHA-256 signed
    s3.put_object(BUCKET, "ok/big", io.BytesIO(big), -1, part_size=5 * 1024 * 1024)
    assert s3.get_object(BUCKET, "ok/big").read() == big
    assert [o.object_name for o in s3.list_objects(BUCKET, prefix="ok/ with space ")] == []
    s3.put_object(BUCKET, "ok/a key with spaces+plus=eq&amp", io.BytesIO(b"1"), 1)
    assert s3.get_object(BUCKET, "ok/a key with spaces+plus=eq&amp").read() == b"1"

    import boto3

    boto = boto3.client(
        "s3",
        endpoint_url=f"http://{platform.s3_endpoint}",
        region_name="us-east-1",
        aws_access_key_id=platform.s3_access_key,
        aws_secret_access_key=platform.s3_secret_key,
    )
    boto.put_object(Bucket=BUCKET, Key="ok/boto3", Body=b"from boto3", IfNoneMatch="*")
    assert boto.get_object(Bucket=BUCKET, Key="ok/boto3")["Body"].read() == b"from boto3"

    status, code, _ = send(
        platform, "PUT", f"/{BUCKET}/ok/unsigned-payload", body=b"abc", sha256="UNSIGNED-PAYLOAD"
    )
    assert (status, code) == (200, "")


def test_knowing_an_access_key_is_not_enough(platform, s3):
    root = platform.s3_access_key
    credential = f"{root}/20250101/us-east-1/s3/aws4_request"
    conn = http.client.HTTPConnection(platform.s3_endpoint, timeout=30)
    conn.request(
        "PUT",
        f"/{BUCKET}/forged",
        body=b"forged",
        headers={
            "Authorization": f"AWS4-HMAC-SHA256 Credential={credential}, SignedHeaders=host, Signature=0",
            "x-amz-date": dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ"),
        },
    )
    response = conn.getresponse()
    assert response.status == 403
    assert b"<Code>SignatureDoesNotMatch</Code>" in response.read()
    conn.close()
    assert not exists(s3, "forged")

    wrong = Minio(platform.s3_endpoint, access_key=root, secret_key="not-the-secret", secure=False)
    with pytest.raises(S3Error) as failure:
        wrong.put_object(BUCKET, "forged", io.BytesIO(b"x"), 1)
    assert failure.value.code == "SignatureDoesNotMatch"
    with pytest.raises(S3Error) as failure:
        Minio(
            platform.s3_endpoint, access_key="nobody-here", secret_key="whatever", secure=False
        ).list_buckets()
    assert failure.value.code == "InvalidAccessKeyId"
    alice = platform.oidc_storage_keys("alice")[0]
    with pytest.raises(S3Error) as failure:  # an OIDC user's account: its secret is checked too
        Minio(platform.s3_endpoint, access_key=alice, secret_key="wrong-secret", secure=False).list_buckets()
    assert failure.value.code == "SignatureDoesNotMatch"
    with pytest.raises(MinioAdminException) as admin_failure:
        MinioAdmin(
            endpoint=platform.s3_endpoint, credentials=StaticProvider(root, "not-the-secret"), secure=False
        ).user_add("intruder", "intruder-secret")
    assert admin_failure.value._code == "403"
    assert "SignatureDoesNotMatch" in admin_failure.value._body
    assert not exists(s3, "forged")


def test_a_tampered_request_is_refused(platform, s3):
    status, code, _ = send(
        platform, "PUT", f"/{BUCKET}/tamper/meant", body=b"data", sent_path=f"/{BUCKET}/tamper/other"
    )
    assert (status, code) == (403, "SignatureDoesNotMatch")
    status, code, _ = send(
        platform,
        "DELETE",
        f"/{BUCKET}/tamper/x",
        headers={"x-amz-meta-a": "1"},
        sent_path=f"/{BUCKET}/tamper/x?uploadId=1",
    )
    assert (status, code) == (403, "SignatureDoesNotMatch")
    assert not exists(s3, "tamper/other")


@pytest.mark.parametrize("size", [0, 10, 3 * 1024 * 1024])
def test_a_body_that_is_not_the_signed_one_is_refused_and_never_stored(platform, s3, size):
    signed = b"s" * size
    sent = b"t" * max(size, 1) if size else b""
    key = f"payload/{size}"
    sha256 = hashlib.sha256(b"something else").hexdigest() if size == 0 else None
    status, code, _ = send(platform, "PUT", f"/{BUCKET}/{key}", body=signed, sent_body=sent, sha256=sha256)
    assert (status, code) == (400, "XAmzContentSHA256Mismatch")
    assert not exists(s3, key)
    # not a hex digest at all
    status, code, _ = send(platform, "PUT", f"/{BUCKET}/{key}", body=b"abc", sha256="nothex")
    assert (status, code) == (400, "XAmzContentSHA256Mismatch")
    assert not exists(s3, key)
    # The connection and the server are fine afterwards.
    s3.put_object(BUCKET, key, io.BytesIO(signed), size)
    assert exists(s3, key)


def test_a_wrong_content_md5_is_refused(platform, s3):
    status, code, _ = send(
        platform, "PUT", f"/{BUCKET}/md5", body=b"abc", headers={"Content-MD5": "AAAAAAAAAAAAAAAAAAAAAA=="}
    )
    assert (status, code) == (400, "BadDigest")
    assert not exists(s3, "md5")


def test_a_stale_or_future_date_is_refused(platform):
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    for when in (now - timedelta(minutes=16), now + timedelta(minutes=16)):
        status, code, _ = send(platform, "GET", f"/{BUCKET}", when=when)
        assert (status, code) == (403, "RequestTimeTooSkewed")
    status, code, _ = send(platform, "GET", f"/{BUCKET}", when=now - timedelta(minutes=14))
    assert (status, code) == (200, "")


def test_streaming_signed_payloads_are_not_served(platform):
    status, code, _ = send(
        platform,
        "PUT",
        f"/{BUCKET}/streaming",
        body=b"0\r\n\r\n",
        sha256="STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
    )
    assert (status, code) == (501, "NotImplemented")


def test_presigned_urls(platform, s3):
    import requests

    s3.put_object(BUCKET, "presigned/object", io.BytesIO(b"shared"), 6)
    url = s3.presigned_get_object(BUCKET, "presigned/object", expires=timedelta(minutes=5))
    assert requests.get(url, timeout=30).content == b"shared"
    forged = url.replace("X-Amz-Signature=", "X-Amz-Signature=0")
    answer = requests.get(forged, timeout=30)
    assert answer.status_code == 403
    assert b"SignatureDoesNotMatch" in answer.content
    other = url.replace("presigned/object", "presigned/other")
    assert requests.get(other, timeout=30).status_code == 403
    old = s3.presigned_get_object(
        BUCKET,
        "presigned/object",
        expires=timedelta(seconds=60),
        request_date=dt.datetime.now(dt.UTC) - timedelta(minutes=5),
    )
    answer = requests.get(old, timeout=30)
    assert answer.status_code == 403
    assert b"Request has expired" in answer.content
    put = s3.presigned_put_object(BUCKET, "presigned/upload", expires=timedelta(minutes=5))
    assert requests.put(put, data=b"uploaded", timeout=30).status_code == 200
    assert s3.get_object(BUCKET, "presigned/upload").read() == b"uploaded"


def test_requests_are_counted_per_access_key(platform, s3):
    alice, secret = platform.oidc_storage_keys("alice")
    before = platform.storage_requests()
    user = Minio(platform.s3_endpoint, access_key=alice, secret_key=secret, secure=False)
    user.list_buckets()
    user.list_buckets()
    with pytest.raises(S3Error):
        Minio(platform.s3_endpoint, access_key=alice, secret_key="wrong-secret", secure=False).list_buckets()
    stream = s3.listen_bucket_notification(BUCKET, prefix="counted/", events=("s3:ObjectCreated:*",))
    seen: list[object] = []
    reader = threading.Thread(target=lambda: seen.append(next(iter(stream))), daemon=True)
    reader.start()  # the stream opens with its first read
    time.sleep(0.5)
    s3.put_object(BUCKET, "counted/one", io.BytesIO(b"1"), 1)
    reader.join(10)
    assert seen
    stream.__exit__(None, None, None)
    after = platform.storage_requests()
    assert after.get(alice, 0) - before.get(alice, 0) == 2
    assert after.get("", 0) - before.get("", 0) == 1
    root = platform.s3_access_key
    assert after[root] - before.get(root, 0) >= 2  # the stream (once) and the upload
