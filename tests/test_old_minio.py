"""On the MinIO that OSCAR 3.5 to 4.0 install (RELEASE.2022-05-08), which ignores ``If-None-Match``:
claims are written and read back, and every job is still exact and leaves nothing behind.

The pre-started session cluster runs this MinIO too (conftest.py), so test_faults.py's whole fault
matrix meets it; here the default path, the warm pool, with each reduction and resized mid-job,
and the pieces that only this MinIO exercises.
"""

from __future__ import annotations

import threading
import time

import pytest
import ROOT

import distrdf_oscar as dro
from distrdf_oscar import cli
from distrdf_oscar.functions import context
from distrdf_oscar.platform.embedded import minio_release
from distrdf_oscar.protocol import layout
from distrdf_oscar.protocol.messages import Manifest
from distrdf_oscar.protocol.storage import Storage
from jobfaults import assert_exact, book, run_acting_on_first

pytestmark = [pytest.mark.usefixtures("secret_scan"), pytest.mark.timeout(600)]

REDUCTIONS = {
    "auto": "auto",
    "tree2": dro.TreeReduction(fan_in=2),
    "coordinated": dro.CoordinatedReduction(),
}


@pytest.fixture(scope="module")
def old_cluster():
    with dro.LocalCluster(workers=2, startup_delay=0.0, minio_release=minio_release.OLD) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def reference(dimuon_files):
    return tuple(result.GetValue() for result in book(ROOT.RDataFrame("Events", dimuon_files)))


def fresh_storage(cluster) -> Storage:
    """A storage client that probes again (the probe's answer is kept per process and endpoint)."""
    from distrdf_oscar.protocol import storage as storage_module

    storage_module._CONDITIONAL_WRITES.clear()
    return Storage(cluster.executor().storage.config)


def test_the_probe_tells_the_minio_releases_apart(old_cluster, pool_cluster):
    assert fresh_storage(old_cluster).conditional_writes is False
    assert fresh_storage(pool_cluster).conditional_writes is True
    assert old_cluster.platform.minio_release == minio_release.OLD
    assert dro.LocalCluster(oscar_version="4.0").platform.minio_release == minio_release.OLD  # not started
    assert dro.LocalCluster(oscar_version="4.1").platform.minio_release == minio_release.NEW


def test_racing_claims_leave_the_object_of_a_winner(old_cluster):
    """Write-then-read-back: copies racing for one key may both win (the protocol allows it), but
    at least one does, whatever is stored is a winner's, and a later copy always loses."""
    storage = fresh_storage(old_cluster)
    for attempt in range(5):
        key = f"{layout.JOBS}/race-test/claim-{attempt}"
        won = _race(storage, key, [b"copy-%d" % i for i in range(8)])
        try:
            assert won, "no copy won the claim"
            assert storage.get_bytes(key) in won
            assert storage.put_if_absent(key, b"late copy") is False
        finally:
            storage.delete([key])


def _race(storage: Storage, key: str, copies: list[bytes]) -> list[bytes]:
    """Every copy claims ``key`` at once; the ones that won."""
    won: list[bytes] = []
    barrier = threading.Barrier(len(copies))

    def claim(data: bytes) -> None:
        barrier.wait()
        if storage.put_if_absent(key, data):
            won.append(data)

    threads = [threading.Thread(target=claim, args=(data,)) for data in copies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return won


def test_a_copy_that_finds_its_output_taken_is_counted_and_nothing_outlives_the_job(old_cluster, tmp_path):
    storage = old_cluster.executor().storage
    job_id = layout.new_job_id()
    keys = layout.JobKeys(job_id)
    storage.put_bytes(keys.manifest, Manifest(job=job_id, created=0.0, plan={}).to_json())
    ctx = context.FunctionContext("test", "", "", str(tmp_path), storage, worker="copy")
    output = keys.partial(0, 1)
    try:
        assert ctx.publish(job_id, output, data=b"first", claim=True) == context.WRITTEN
        assert ctx.publish(job_id, output, data=b"second", claim=True) == context.TAKEN
        assert storage.get_bytes(output) == b"first"
        assert len(storage.list(keys.duplicates)) == 1
        storage.delete([keys.manifest])  # the client is done: a late copy leaves nothing
        assert ctx.publish(job_id, keys.partial(1, 2), data=b"late", claim=True) == context.ENDED
        assert ctx.publish(job_id, output, data=b"late", claim=True) == context.ENDED
    finally:
        storage.delete_prefix(f"{layout.JOBS}/{job_id}/")
        storage.delete_prefix(keys.prefix(layout.PARTIALS))
    assert [k for k in storage.list("") if layout.job_of_key(k) == job_id] == []


@pytest.mark.parametrize("reduction", list(REDUCTIONS))
def test_jobs_on_the_warm_pool_are_exact(old_cluster, dimuon_files, reference, reduction):
    executor = old_cluster.executor(reduction=REDUCTIONS[reduction], progress=False)
    result = book(ROOT.RDataFrame("Events", dimuon_files, executor=executor, npartitions=6))
    assert_exact(tuple(r.GetValue() for r in result), reference)
    job = executor.last_job
    assert job.pool
    assert job.functions == {}, "calls left the pool"
    assert [k for k in executor.storage.list("") if layout.job_of_key(k) == job.job_id] == []


def test_check_passes_and_says_claims_are_read_back(old_cluster, monkeypatch, capsys):
    for name, value in old_cluster.environment().items():
        monkeypatch.setenv(name, value)
    code = cli.main(["check"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "ok   conditional writes: ignored by this MinIO (before RELEASE.2024-05-07)" in out
    assert out.splitlines()[-1] == "every check passed"


def test_a_pool_resized_down_mid_job_finishes_it_exactly(old_cluster, dimuon_files, reference):
    """``pool start --size 1`` while a job runs on two workers: the Deployment stops one replica
    (SIGTERM: it finishes its calls under way and leaves), the other serves the rest; no mapper
    call goes to the file-triggered services, and no quiet spell is waited for (it is an hour here:
    a tree group a stopped worker was merging is retried as soon as its heartbeat lapses). The
    module's last test: the pool stays at one worker."""
    executor = old_cluster.executor(
        reduction=dro.TreeReduction(fan_in=2), progress=False, ranges_per_call=1, retry_after=3600.0
    )
    resized: list[str] = []
    result, _ = run_acting_on_first(
        executor,
        12,
        dimuon_files,
        f"{layout.JOBS}/{{job}}/claims/",
        lambda _claim: resized.append(executor.start_pool(1)),
    )
    assert resized, "no claim was seen to resize the pool on"
    assert_exact(result, reference)
    job = executor.last_job
    assert job.pool
    assert "mapper" not in job.functions, "calls went to the file-triggered mappers"
    deadline = time.monotonic() + 30
    while len(executor.pool_workers()) > 1 and time.monotonic() < deadline:
        time.sleep(0.5)  # the stopped replica's heartbeat lapses
    assert len(executor.pool_workers()) == 1
