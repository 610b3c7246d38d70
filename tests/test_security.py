"""Payload integrity and secrecy: functions refuse unsigned or tampered objects; no secret leaks."""

from __future__ import annotations

import contextlib
import io
import json
import threading
import time

import pytest
import requests
import ROOT

import distrdf_oscar as dro
from distrdf_oscar.protocol import layout
from distrdf_oscar.protocol.signing import METADATA, SignatureError, Signer

pytestmark = pytest.mark.usefixtures("secret_scan")  # conftest.py: the session clusters' jobs are searched


def wait_for_marker(storage, job_id: str, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        markers = storage.list(layout.JobKeys(job_id).prefix(layout.ERRORS))
        if markers:
            return json.loads(storage.get_bytes(markers[0]))
        time.sleep(0.2)
    raise AssertionError(f"no error marker for job {job_id}")


def raw_put(storage, key: str, data: bytes, signature: str | None = None) -> None:
    """Write as an attacker with bucket access would: with the storage keys, without the signing key."""
    metadata = {METADATA: signature} if signature else None
    storage.client.put_object(storage.bucket_of(key), key, io.BytesIO(data), len(data), metadata=metadata)


@pytest.fixture
def executor(prestarted_cluster):
    executor = prestarted_cluster.executor(progress=False)
    _ = executor.storage  # deploys the services and their buckets
    return executor


def start_fake_job(executor) -> layout.JobKeys:
    keys = layout.JobKeys(layout.new_job_id())
    executor.storage.put_bytes(keys.manifest, json.dumps({"job": keys.job_id}).encode())
    return keys


def test_signer_refuses_unsigned_tampered_and_replayed_objects():
    signer = Signer("k" * 32)
    signature = signer.sign("triggers/a.json", b"payload")
    signer.verify("triggers/a.json", b"payload", signature)
    with pytest.raises(SignatureError, match="unsigned"):
        signer.verify("triggers/a.json", b"payload", None)
    with pytest.raises(SignatureError, match="does not match"):
        signer.verify("triggers/a.json", b"payload!", signature)
    with pytest.raises(SignatureError, match="does not match"):
        signer.verify("triggers/b.json", b"payload", signature)  # same bytes under another key
    with pytest.raises(SignatureError, match="does not match"):
        Signer("x" * 32).verify("triggers/a.json", b"payload", signature)
    assert "k" * 16 not in repr(signer)


def test_unsigned_trigger_is_refused_by_the_mapper(executor):
    keys = start_fake_job(executor)
    try:
        trigger = {
            "job": keys.job_id,
            "range_id": 0,
            "range": "",
            "payload": keys.mapper_payload,
            "output": keys.tree_partial(0, 1),
        }
        raw_put(executor.storage, keys.trigger(0), json.dumps(trigger).encode())
        marker = wait_for_marker(executor.storage, keys.job_id)
        assert "refusing unsigned object" in marker["error"]
        assert keys.trigger(0) in marker["error"]
        assert executor.storage.list(keys.prefix(layout.TREE_PARTIALS)) == []
    finally:
        for prefix in keys.all_prefixes():
            executor.storage.delete_prefix(prefix)


def test_tampered_payload_is_refused_before_unpickling(executor, tmp_path):
    keys = start_fake_job(executor)
    canary = tmp_path / "pwned"
    try:
        # A payload that would create a file if it were ever unpickled, carrying the signature of other bytes.
        evil = b"cos\nsystem\n(S'touch " + str(canary).encode() + b"'\ntR."
        stale_signature = executor.storage.signer.sign(keys.mapper_payload, b"the genuine payload")
        raw_put(executor.storage, keys.mapper_payload, evil, stale_signature)
        trigger = {
            "job": keys.job_id,
            "range_id": 0,
            "range": "",
            "payload": keys.mapper_payload,
            "output": keys.tree_partial(0, 1),
        }
        executor.storage.put_bytes(keys.trigger(0), json.dumps(trigger).encode())
        marker = wait_for_marker(executor.storage, keys.job_id)
        assert "signature does not match" in marker["error"]
        assert keys.mapper_payload in marker["error"]
        assert not canary.exists()
    finally:
        for prefix in keys.all_prefixes():
            executor.storage.delete_prefix(prefix)


def test_forged_result_is_refused_by_the_client(prestarted_cluster, dimuon_files):
    """A result not signed with the deployment key never reaches the user (nor their unpickler)."""
    executor = prestarted_cluster.executor(progress=False)
    storage, forged, stop = executor.storage, [], threading.Event()

    def forge_the_result() -> None:
        """An attacker with write access puts an unsigned result first: the functions' own result,
        a conditional write, then finds the key taken, and the client reads the forged one."""
        while not stop.is_set() and not forged:
            for key in storage.list(layout.JOBS + "/"):
                job = layout.manifest_job(key)
                if job is not None:
                    raw_put(storage, layout.JobKeys(job).result, b"not a partial: never unpickled")
                    forged.append(job)
                    break
            time.sleep(0.01)

    thread = threading.Thread(target=forge_the_result)
    thread.start()
    try:
        with pytest.raises(SignatureError, match="refusing unsigned object 'results/"):
            ROOT.RDataFrame("Events", dimuon_files, executor=executor, npartitions=2).Count().GetValue()
    finally:
        stop.set()
        thread.join()
    assert forged, "the job's manifest never appeared"


def test_no_secret_in_objects_logs_or_messages(dimuon_files, capfd, monkeypatch):
    """Run a succeeding and a failing job, keep their objects, and search everything for the secrets."""
    from distrdf_oscar.client import job as job_module

    kept: list[dict[str, bytes]] = []

    def keep_then_clean(self):
        snapshot = {}
        for prefix in self.keys.all_prefixes():
            for key in self.storage.list(prefix):
                response = self.storage.client.get_object(self.storage.bucket_of(key), key)
                snapshot[key] = response.read() + json.dumps(dict(response.headers)).encode()
        kept.append(snapshot)
        return original_cleanup(self)

    original_cleanup = job_module.Job.cleanup
    monkeypatch.setattr(job_module.Job, "cleanup", keep_then_clean)
    logs: list[str] = []
    # Clients delete the OSCAR jobs that served them once finished: read each log before that.
    from distrdf_oscar.platform.oscar.cluster import OSCARCluster

    original_remove_jobs = OSCARCluster.remove_jobs

    def read_then_remove(cluster, service, names):
        names = set(names)
        for name in names:
            with contextlib.suppress(requests.HTTPError):
                logs.append(cluster.client.get_job_logs(service, name).text)
        return original_remove_jobs(cluster, service, names)

    monkeypatch.setattr(OSCARCluster, "remove_jobs", read_then_remove)
    with dro.LocalCluster(workers=2, mode="cold", startup_delay=0.0) as cluster:
        executor = cluster.executor(progress=True)
        secrets = [cluster._signing_key, cluster.platform.oscar_password, cluster.platform.s3_secret_key]
        df = ROOT.RDataFrame("Events", dimuon_files, executor=executor, npartitions=3)
        assert df.Count().GetValue() > 0
        with pytest.raises(dro.RemoteError) as failure:
            df.Define("y", 'throw std::runtime_error("planned failure"); return 1;').Sum("y").GetValue()
        from oscar_python.client import Client

        assert executor.wait_for_bookkeeping()
        client = Client(cluster.platform.oscar_options())
        for service in executor.deployment.services():  # and those not deleted (yet)
            jobs = json.loads(client.list_jobs(service["name"]).text).get("jobs", {})
            for name in jobs:
                with contextlib.suppress(requests.HTTPError):
                    logs.append(client.get_job_logs(service["name"], name).text)
        texts = [
            str(failure.value),
            repr(executor),
            repr(executor.deployment),
            repr(executor.storage.config),
            *logs,
        ]
    captured = capfd.readouterr()
    texts += [captured.out, captured.err]
    assert kept
    assert any(kept)
    assert logs
    for secret in secrets:
        assert len(secret) >= 16
        for snapshot in kept:
            for key, content in snapshot.items():
                assert secret not in key, f"secret found in key {key}"
                assert secret.encode() not in content, f"secret found in object {key}"
        for text in texts:
            assert secret not in text, "secret found in a log or message"
