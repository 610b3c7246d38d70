"""OSCAR restarts MinIO on every service create and delete (pkg/handlers/create.go, delete.go,
pkg/utils/minio.go RestartServer): storage refuses connections for a while and open ones are cut.
The embedded platform does the same through its storage front; a job running meanwhile, on the warm
pool or on the file-triggered services, must come out exact."""

from __future__ import annotations

import threading
import time

import pytest
import requests
import ROOT
from oscar_python.client import Client

import distrdf_oscar as dro
from distrdf_oscar.platform.embedded.faults import RESTART_SECONDS
from distrdf_oscar.protocol import layout
from jobfaults import assert_exact, book

pytestmark = pytest.mark.usefixtures("secret_scan")  # conftest.py: these jobs' objects and logs are searched

NPARTITIONS = 12
# Two restarts back to back leave storage unreachable for about 4 s: a shorter quiet spell before the
# client re-triggers calls would only flood two cores with cold retries (and can time the job out).
RETRY_AFTER = 10.0


@pytest.fixture(scope="module")
def reference(dimuon_files):
    return tuple(result.GetValue() for result in book(ROOT.RDataFrame("Events", dimuon_files)))


@pytest.fixture(scope="module")
def warm_cluster():
    # No fault injection: every platform restarts MinIO as OSCAR does, here for the model's full length.
    with dro.LocalCluster(
        workers=2, mode="warm", startup_delay=0.0, minio_restart_seconds=RESTART_SECONDS
    ) as cluster:
        yield cluster


def minio(cluster, restart_seconds: float | None = None) -> dict:
    """The platform's MinIO restarts so far; with ``restart_seconds``, their length from now on."""
    platform = cluster.platform
    url, auth = (
        f"{platform.oscar_endpoint}/system/local/minio",
        (platform.oscar_user, platform.oscar_password),
    )
    if restart_seconds is not None:
        requests.put(url, json={"restart_seconds": restart_seconds}, auth=auth, timeout=30).raise_for_status()
    return requests.get(url, auth=auth, timeout=30).json()


def run_while_a_service_comes_and_goes(cluster, executor, files) -> tuple:
    """The job's results, with an unrelated service created and deleted (two MinIO restarts) once the
    job has queued or triggered its first call."""
    storage, oscar = executor.storage, Client(cluster.platform.oscar_options())
    done: list[str] = []

    def jobs() -> set[str]:
        return {
            job
            for folder in (layout.QUEUE, layout.JOBS)
            for key in storage.list(folder + "/")
            if (job := layout.job_of_key(key)) is not None
        }

    earlier = jobs()

    def churn() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if jobs() - earlier:
                oscar.create_service({"name": "bystander", "image": "none", "script": "true"})
                oscar.remove_service("bystander")
                done.append("churned")
                return
            time.sleep(0.05)

    thread = threading.Thread(target=churn)
    thread.start()
    try:
        results = book(ROOT.RDataFrame("Events", files, executor=executor, npartitions=NPARTITIONS))
        return tuple(result.GetValue() for result in results)
    finally:
        thread.join()
        assert done, "the service was never created and deleted mid-job"


def test_a_pool_job_survives_minio_restarts(warm_cluster, dimuon_files, reference):
    executor = warm_cluster.executor(
        reduction=dro.CoordinatedReduction(), progress=False, ranges_per_call=1, retry_after=RETRY_AFTER
    )
    assert executor.storage
    before = minio(warm_cluster)
    assert before["modelled"]
    assert before["restart_seconds"] == RESTART_SECONDS
    result = run_while_a_service_comes_and_goes(warm_cluster, executor, dimuon_files)
    assert_exact(result, reference)
    assert minio(warm_cluster)["restarts"] == before["restarts"] + 2
    assert executor.last_job.pool
    assert len(executor.pool_workers()) == warm_cluster.workers  # the pool lived through it


def test_a_file_triggered_job_survives_minio_restarts(cold_cluster, dimuon_files, reference):
    executor = cold_cluster.executor(
        reduction=dro.TreeReduction(fan_in=2), progress=False, retry_after=RETRY_AFTER
    )
    assert executor.storage  # deployed (its creates restart MinIO too) before counting
    shortened = minio(cold_cluster)["restart_seconds"]  # the shared cluster's, as the suite set it
    before = minio(cold_cluster, restart_seconds=RESTART_SECONDS)
    try:
        result = run_while_a_service_comes_and_goes(cold_cluster, executor, dimuon_files)
    finally:
        minio(cold_cluster, restart_seconds=shortened)
    assert_exact(result, reference)
    assert minio(cold_cluster)["restarts"] == before["restarts"] + 2
