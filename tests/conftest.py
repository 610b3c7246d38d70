"""Shared fixtures: a small multi-file dimuon dataset, one embedded cluster per mode per session, each
module's own embedded platform, and the secret scan of the session clusters' jobs."""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading

# With pytest-xdist each worker gets a temporary folder of its own, set before anything makes a
# temporary file, and inherited by the platforms and functions it starts: tests that check that
# a job or a cluster left nothing in the temporary folder see only their own worker's.
if worker := os.environ.get("PYTEST_XDIST_WORKER"):
    _own = os.path.join(tempfile.gettempdir(), f"pytest-xdist-{worker}")
    os.makedirs(_own, exist_ok=True)
    os.environ["TMPDIR"] = tempfile.tempdir = _own

import pytest
import requests
import ROOT

ROOT.gROOT.SetBatch(True)

# `pytest -m "not slow"`, a quick round (README): the modules that test units, the merging core
# and the protocol's formats, without the tests among them that start an embedded platform (the
# fixtures below) or run jobs on one. Everything else is marked slow.
FAST_MODULES = {
    "test_config",
    "test_core",
    "test_docs",
    "test_messages",
    "test_partial",
    "test_plan",
    "test_recovery",
    "test_remote_errors",
    "test_rootmerge",
    "test_simulate",
    "test_timeline",
}
PLATFORM_FIXTURES = {
    "prestarted_cluster",
    "cold_cluster",
    "pool_cluster",
    "platform",
    "cluster",
    "shared_pool",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        module = getattr(item, "module", None)
        uses = set(getattr(item, "fixturenames", ()))
        if module is None or module.__name__ not in FAST_MODULES or uses & PLATFORM_FIXTURES:
            item.add_marker(pytest.mark.slow)


# Executors made directly (not by LocalCluster) against an embedded platform: its functions run
# on this machine and read the client's files.
SAME_MACHINE = ("/",)
DATASET_EVENTS = 24_000
DATASET_FILES = 3


@pytest.fixture(scope="session", autouse=True)
def job_records(tmp_path_factory):
    """Every job's record (timeline.py) goes to the session's temporary folder, not the user's."""
    import os

    from distrdf_oscar.protocol.timeline import RECORDS_VARIABLE

    folder = str(tmp_path_factory.mktemp("job-records"))
    saved = os.environ.get(RECORDS_VARIABLE)
    os.environ[RECORDS_VARIABLE] = folder
    yield folder
    if saved is None:
        os.environ.pop(RECORDS_VARIABLE, None)
    else:
        os.environ[RECORDS_VARIABLE] = saved


@pytest.fixture(scope="session", autouse=True)
def short_minio_restarts():
    """Every service create and delete restarts the embedded MinIO (an outage, as OSCAR's). The suite
    starts some forty platforms: 0.1 s instead of 2 s each keeps it within its time; test_restarts.py
    asks for the full length."""
    import os

    from distrdf_oscar.platform.embedded.faults import RESTART_SECONDS_VARIABLE

    saved = os.environ.get(RESTART_SECONDS_VARIABLE)
    os.environ[RESTART_SECONDS_VARIABLE] = "0.1"
    yield
    if saved is None:
        os.environ.pop(RESTART_SECONDS_VARIABLE, None)
    else:
        os.environ[RESTART_SECONDS_VARIABLE] = saved


@pytest.fixture(scope="session")
def dimuon_files(tmp_path_factory) -> list[str]:
    from distrdf_oscar.demo import dataset

    return dataset.generate(str(tmp_path_factory.mktemp("dimuon")), DATASET_EVENTS, files=DATASET_FILES)


# -- secrets never leak: the job objects and function logs of the session clusters are searched ------
#
# Clients delete a job's objects (job.remove_job) and the OSCAR jobs that served it, with their logs
# (OSCARCluster.remove_jobs, also from a background thread), as soon as it ends: a search afterwards
# would find nothing. Modules that run jobs on the session clusters therefore wrap both deletions
# with a search first, through ``pytestmark = pytest.mark.usefixtures("secret_scan")``; everywhere
# else the real cleanup runs as users get it (test_cleanup.py checks that).

_SECRETS: list[str] = []
_LEAKS: list[str] = []


def _search(where: str, content: bytes) -> None:
    _LEAKS.extend(f"{where} contains a secret" for s in _SECRETS if s.encode() in content)


def _take_leaks() -> list[str]:
    leaks = list(_LEAKS)
    _LEAKS.clear()
    return leaks


@pytest.fixture(scope="module")
def secret_scan():
    """For the requesting module: before any job's objects are deleted, read them all (keys, bodies,
    headers), and before a client deletes the OSCAR jobs that served it, their logs; search them."""
    from distrdf_oscar.client import job
    from distrdf_oscar.platform.oscar.cluster import OSCARCluster
    from distrdf_oscar.platform.oscar.finished_jobs import FORGET_PATIENCE, FORGETTER_THREAD
    from distrdf_oscar.protocol import layout

    remove_job = job.remove_job
    remove_jobs = OSCARCluster.remove_jobs

    def search_then_remove(storage, job_id):
        for prefix in layout.JobKeys(job_id).all_prefixes():
            for key in storage.list(prefix):
                response = storage.client.get_object(storage.bucket_of(key), key)
                try:
                    _search(
                        f"object {key}",
                        key.encode() + response.read() + repr(dict(response.headers)).encode(),
                    )
                finally:
                    response.close()
                    response.release_conn()
        return remove_job(storage, job_id)

    def read_logs_then_remove(cluster, service, names):
        # Clients delete the OSCAR jobs that served them: read their logs first.
        names = set(names)
        for name in names:
            with contextlib.suppress(Exception):
                _search(f"log of {service} job {name}", cluster.client.get_job_logs(service, name).content)
        return remove_jobs(cluster, service, names)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(job, "remove_job", search_then_remove)
        patch.setattr(OSCARCluster, "remove_jobs", read_logs_then_remove)
        yield
        # The module's last jobs may still be deleting their OSCAR jobs: let them finish wrapped.
        for thread in threading.enumerate():
            if thread.name == FORGETTER_THREAD:
                thread.join(FORGET_PATIENCE)
    assert _take_leaks() == []


def _session_cluster(mode: str):
    from oscar_python.client import Client

    from distrdf_oscar import LocalCluster
    from distrdf_oscar.platform.embedded import minio_release

    # With fault injection: test_faults.py stages faults; other tests run through its (idle) gate.
    # No emulated pod start (the cold mode's default): the protocol is under test, not the timing.
    # The pre-started cluster has the MinIO OSCAR <= 4.0 installs, which ignores conditional writes:
    # the fault matrix meets both kinds of claims.
    release = minio_release.OLD if mode == "prestarted" else minio_release.NEW
    with LocalCluster(
        workers=2, mode=mode, fault_injection=True, startup_delay=0.0, minio_release=release
    ) as cluster:
        _SECRETS.extend(
            [cluster._signing_key, cluster.platform.oscar_password, cluster.platform.s3_secret_key]
        )
        yield cluster
        client = Client(cluster.platform.oscar_options())
        for service in client.list_services().json():
            for name in client.list_jobs(service["name"]).json().get("jobs", {}):
                with contextlib.suppress(requests.HTTPError):  # deleted meanwhile by its client (read then)
                    _search(
                        f"log of {service['name']} job {name}",
                        client.get_job_logs(service["name"], name).content,
                    )
    assert _take_leaks() == []


@pytest.fixture(scope="session")
def prestarted_cluster():
    yield from _session_cluster("prestarted")


@pytest.fixture(scope="session")
def pool_cluster():
    """What users run by default: the file-triggered services cold, beside a warm pool."""
    yield from _session_cluster("warm")


@pytest.fixture(scope="session")
def cold_cluster():
    yield from _session_cluster("cold")


@pytest.fixture(scope="module")
def platform(request):
    """The embedded platform of the requesting test module, started with the module's ``PLATFORM``
    (the keyword arguments of ``LocalPlatform``), for the module's tests."""
    from distrdf_oscar.platform.embedded import LocalPlatform

    options = getattr(request.module, "PLATFORM", None)
    if options is None:
        pytest.fail(f"{request.module.__name__} uses the platform fixture without a PLATFORM dict of options")
    with LocalPlatform(**options) as local:
        yield local


@pytest.fixture(scope="module")
def oscar(platform):
    """oscar-python's client for the requesting module's ``platform``."""
    from oscar_python.client import Client

    return Client(platform.oscar_options())


@pytest.fixture(scope="module")
def s3(platform):
    """A minio client for the requesting module's ``platform``."""
    return platform.minio_client()
