"""A warm pool's storage keys reach only its deployment: ``pool start`` makes a MinIO account
through MinIO's admin API (minio-py's MinioAdmin), the storage front enforces its policy, and
undeploy removes it. On the embedded platform with the real minio client."""

from __future__ import annotations

import io

import pytest
import ROOT
from minio import Minio, MinioAdmin
from minio.commonconfig import CopySource
from minio.credentials import StaticProvider
from minio.error import MinioAdminException, S3Error

import distrdf_oscar as dro
from distrdf_oscar.platform.deployment import POOL
from distrdf_oscar.protocol.contract import POOL_KEYS
from distrdf_oscar.protocol.storage import StorageError

OTHERS = "someone-elses-bucket"


@pytest.fixture(scope="module")
def cluster():
    with dro.LocalCluster(workers=1, mode="warm", startup_delay=0.0) as local:
        root = local.platform.minio_client()
        root.make_bucket(OTHERS)
        root.put_object(OTHERS, "private/data", io.BytesIO(b"not yours"), 9)
        yield local


def pool_keys(cluster) -> tuple[str, str]:
    """The keys the pool's worker runs with: from its process's environment (its service's secrets)."""
    executor = cluster.executor(progress=False)
    (replica,) = cluster.platform.exposed_replicas(executor.deployment.service_name(POOL))
    with open(f"/proc/{replica['pid']}/environ", "rb") as f:
        env = dict(item.split(b"=", 1) for item in f.read().split(b"\0") if b"=" in item)
    return env[POOL_KEYS[0].encode()].decode(), env[POOL_KEYS[1].encode()].decode()


def client(cluster, keys: tuple[str, str]) -> Minio:
    return Minio(cluster.platform.s3_endpoint, access_key=keys[0], secret_key=keys[1], secure=False)


def admin(cluster, keys: tuple[str, str]) -> MinioAdmin:
    return MinioAdmin(endpoint=cluster.platform.s3_endpoint, credentials=StaticProvider(*keys), secure=False)


def refused(call) -> str:
    with pytest.raises(S3Error) as failure:
        call()
    return failure.value.code


def test_the_pool_does_not_hold_the_root_keys(cluster):
    access, secret = pool_keys(cluster)
    assert access != cluster.platform.s3_access_key
    assert secret != cluster.platform.s3_secret_key
    name = cluster.executor(progress=False).deployment.service_name(POOL)
    with open(f"/proc/{cluster.platform.exposed_replicas(name)[0]['pid']}/environ", "rb") as f:
        assert cluster.platform.s3_secret_key.encode() not in f.read()


def test_pool_keys_reach_the_deployments_buckets_and_nothing_else(cluster):
    executor = cluster.executor(progress=False)
    deployment = executor.deployment
    s3 = client(cluster, pool_keys(cluster))
    # Its own buckets: list, write, read, delete.
    for bucket in deployment.buckets:
        s3.put_object(bucket, "scoped/probe", io.BytesIO(b"ok"), 2)
        assert s3.get_object(bucket, "scoped/probe").read() == b"ok"
        assert [o.object_name for o in s3.list_objects(bucket, prefix="scoped/")] == ["scoped/probe"]
        s3.remove_object(bucket, "scoped/probe")
    # Anyone else's: not listed, not readable, not writable, not a copy's source, not removable.
    assert {b.name for b in s3.list_buckets()} == set(deployment.buckets)
    assert refused(lambda: list(s3.list_objects(OTHERS))) == "AccessDenied"
    assert refused(lambda: s3.get_object(OTHERS, "private/data")) == "AccessDenied"
    assert refused(lambda: s3.stat_object(OTHERS, "private/data")) == "AccessDenied"
    assert refused(lambda: s3.put_object(OTHERS, "x", io.BytesIO(b"x"), 1)) == "AccessDenied"
    assert (
        refused(lambda: s3.copy_object(deployment.bucket_name, "stolen", CopySource(OTHERS, "private/data")))
        == "AccessDenied"
    )
    assert refused(lambda: s3.remove_bucket(OTHERS)) == "AccessDenied"
    assert refused(lambda: s3.make_bucket("a-new-bucket")) == "AccessDenied"
    # Nor the deployment's bucket settings, which are OSCAR's (its webhook notifications).
    assert refused(lambda: s3.delete_bucket_notification(deployment.bucket_name)) == "AccessDenied"
    assert refused(lambda: s3.remove_bucket(deployment.bucket_name)) == "AccessDenied"
    assert refused(lambda: next(iter(s3.listen_bucket_notification(OTHERS)))) == "AccessDenied"


def test_knowing_the_root_access_key_is_not_being_root(cluster):
    """Every notification event names the uploader's access key (``principalId``): code holding the
    pool's keys learns the root's access key, never its secret. Signatures are checked."""
    import datetime as dt
    import http.client

    _, secret = pool_keys(cluster)
    root = cluster.platform.s3_access_key
    as_root = client(cluster, (root, secret))
    assert refused(lambda: as_root.get_object(OTHERS, "private/data")) == "SignatureDoesNotMatch"
    assert refused(lambda: as_root.put_object(OTHERS, "x", io.BytesIO(b"x"), 1)) == "SignatureDoesNotMatch"
    with pytest.raises(MinioAdminException) as failure:
        admin(cluster, (root, secret)).user_add("escalate", "a-long-enough-secret")
    assert failure.value._code == "403"
    conn = http.client.HTTPConnection(cluster.platform.s3_endpoint, timeout=30)
    try:
        conn.request(
            "GET",
            f"/{OTHERS}/private/data",
            headers={
                "Authorization": f"AWS4-HMAC-SHA256 Credential={root}/20250101/us-east-1/s3/aws4_request, "
                "SignedHeaders=host;x-amz-date, Signature=" + "0" * 64,
                "x-amz-date": dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ"),
            },
        )
        response = conn.getresponse()
        assert response.status == 403
        assert b"SignatureDoesNotMatch" in response.read()
    finally:
        conn.close()


def test_pool_keys_cannot_use_minios_admin_api(cluster):
    keys = pool_keys(cluster)
    mine = admin(cluster, keys)
    for call in (
        lambda: mine.user_add("escalate", "a-long-enough-secret"),
        lambda: mine.policy_add(
            "everything",
            policy={
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": ["s3:*"], "Resource": ["arn:aws:s3:::*"]}],
            },
        ),
        lambda: mine.policy_set("readwrite", user=keys[0]),
        lambda: mine.user_info(cluster.platform.s3_access_key),
    ):
        with pytest.raises(MinioAdminException) as failure:
            call()
        assert failure.value._code == "403"
    with pytest.raises(MinioAdminException):
        admin(cluster, (cluster.platform.s3_access_key, cluster.platform.s3_secret_key)).user_info("escalate")


def test_a_job_on_the_pool_is_exact(cluster):
    executor = cluster.executor(pool=True, progress=False)
    df = ROOT.RDataFrame(5000, executor=executor, npartitions=4).Define("x", "double(rdfentry_)")
    total, count = df.Sum("x"), df.Count()
    local = ROOT.RDataFrame(5000).Define("x", "double(rdfentry_)")
    assert (total.GetValue(), count.GetValue()) == (local.Sum("x").GetValue(), local.Count().GetValue())
    assert executor.last_job.pool
    assert executor.last_job.functions == {}  # all of it in the pool, with its scoped keys


def test_keys_that_cannot_administer_minio_fall_back_to_themselves(cluster):
    """pool start by someone whose storage keys are not MinIO's admin (an OIDC user's account): the
    pool gets those keys, and says so."""
    import dataclasses

    executor = cluster.executor(progress=False)
    access, secret = pool_keys(cluster)
    config = dataclasses.replace(executor.storage.config, access_key=access, secret_key=secret)
    keys, why = executor.cluster.pool_account(executor.deployment, config)
    assert keys == (access, secret)
    assert why is not None
    assert "cannot administer MinIO" in why
    assert "403" in why


def test_pool_start_again_keeps_the_secret_and_undeploy_removes_the_account(cluster):
    """The secret is derived (an HMAC of the administering secret): a second start sets the same
    one, so workers started before keep working (a changed Secret reaches no running pod)."""
    executor = cluster.executor(progress=False)
    first = pool_keys(cluster)
    keys, why = executor.cluster.pool_account(executor.deployment, executor.storage.config)
    assert why is None
    assert keys == first
    assert first[1] not in (cluster.platform.s3_secret_key, executor.storage.config.secret_key)
    client(cluster, keys).list_objects(executor.deployment.bucket_name)  # still valid
    root = admin(cluster, (cluster.platform.s3_access_key, cluster.platform.s3_secret_key))
    root.user_add(keys[0], "another-secret-of-forty-characters-0123")
    with pytest.raises(S3Error) as stale:  # a secret the admin API replaced no longer signs
        client(cluster, first).list_buckets()
    assert stale.value.code == "SignatureDoesNotMatch"
    assert '"status": "enabled"' in root.user_info(keys[0]).replace('":"', '": "')
    removed = executor.cluster.undeploy(executor.deployment, executor.unchecked_storage())
    assert f"storage account {executor.deployment.service_name(POOL)}" in removed
    with pytest.raises(MinioAdminException) as failure:
        root.user_info(keys[0])
    assert failure.value._code == "404"
    with pytest.raises(S3Error) as gone:
        client(cluster, keys).list_buckets()
    assert gone.value.code == "InvalidAccessKeyId"
    with pytest.raises(StorageError):
        executor.unchecked_storage().check_buckets()  # the deployment's buckets went with it
