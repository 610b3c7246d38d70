"""Shared fixtures: a small multi-file dimuon dataset, one embedded cluster per mode per session."""

from __future__ import annotations

import contextlib

import pytest
import requests
import ROOT

ROOT.gROOT.SetBatch(True)

DATASET_EVENTS = 24_000
DATASET_FILES = 3


@pytest.fixture(scope="session")
def dimuon_files(tmp_path_factory) -> list[str]:
    from distrdf_oscar.demo import dataset

    return dataset.generate(str(tmp_path_factory.mktemp("dimuon")), DATASET_EVENTS, files=DATASET_FILES)


# -- secrets never leak: every job object and every function log of the session is searched ----------

_SECRETS: list[str] = []
_LEAKS: list[str] = []


def _search(where: str, content: bytes) -> None:
    _LEAKS.extend(f"{where} contains a secret" for s in _SECRETS if s.encode() in content)


@pytest.fixture(scope="session", autouse=True)
def no_secret_in_any_job_object():
    """Before any job's objects are deleted, read them all (keys, bodies, headers) and search them."""
    from distrdf_oscar import job, layout

    remove_job = job.remove_job

    def search_then_remove(storage, job_id):
        for prefix in layout.JobKeys(job_id).all_prefixes():
            for key in storage.list(prefix):
                response = storage.client.get_object(storage.bucket_of(key), key)
                try:
                    _search(f"object {key}", key.encode() + response.read() + repr(dict(response.headers)).encode())
                finally:
                    response.close()
                    response.release_conn()
        return remove_job(storage, job_id)

    from distrdf_oscar.platform.oscar import OSCARCluster

    remove_jobs = OSCARCluster.remove_jobs

    def read_logs_then_remove(cluster, service, names):
        # Clients delete the OSCAR jobs that served them: read their logs first.
        names = set(names)
        for name in names:
            with contextlib.suppress(Exception):
                _search(f"log of {service} job {name}", cluster.client.get_job_logs(service, name).content)
        return remove_jobs(cluster, service, names)

    patch = pytest.MonkeyPatch()
    patch.setattr(job, "remove_job", search_then_remove)
    patch.setattr(OSCARCluster, "remove_jobs", read_logs_then_remove)
    yield
    patch.undo()
    assert _LEAKS == []


def _session_cluster(mode: str):
    from oscar_python.client import Client

    from distrdf_oscar import LocalCluster

    # With fault injection: test_faults.py stages faults; other tests run through its (idle) gate.
    with LocalCluster(workers=2, mode=mode, fault_injection=True) as cluster:
        _SECRETS.extend([cluster._signing_key, cluster.platform.oscar_password, cluster.platform.s3_secret_key])
        yield cluster
        client = Client(cluster.platform.oscar_options())
        for service in client.list_services().json():
            for name in client.list_jobs(service["name"]).json().get("jobs", {}):
                with contextlib.suppress(requests.HTTPError):  # deleted meanwhile by its client (read then)
                    _search(f"log of {service['name']} job {name}",
                            client.get_job_logs(service["name"], name).content)


@pytest.fixture(scope="session")
def warm_cluster():
    yield from _session_cluster("warm")


@pytest.fixture(scope="session")
def cold_cluster():
    yield from _session_cluster("cold")


@pytest.fixture(scope="module")
def oscar(platform):
    """oscar-python's client for the ``platform`` fixture of the requesting test module."""
    from oscar_python.client import Client

    return Client(platform.oscar_options())


@pytest.fixture(scope="module")
def s3(platform):
    """A minio client for the ``platform`` fixture of the requesting test module."""
    return platform.minio_client()


@pytest.fixture(params=["warm", "cold"])
def cluster(request):
    return request.getfixturevalue(f"{request.param}_cluster")
