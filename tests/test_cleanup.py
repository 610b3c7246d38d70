"""Finding and removing a job's objects (what the client does after every job, and `cleanup` for orphans)."""

from __future__ import annotations

import ROOT

from distrdf_oscar import job, layout
from distrdf_oscar.job import find_jobs, remove_job
from distrdf_oscar.platform.oscar import OSCARCluster

# No secret scan in this module (conftest.py): cleanup runs as users get it.


def test_find_and_remove_jobs_leaves_other_jobs_alone(warm_cluster):
    storage = warm_cluster.executor(progress=False).storage
    doomed, kept = layout.JobKeys(layout.new_job_id()), layout.JobKeys(layout.new_job_id())
    for keys in (doomed, kept):
        # Only folders no service watches: a trigger would start a real function.
        storage.put_bytes(keys.manifest, b"{}")
        storage.put_bytes(keys.plan, b"{}")
        storage.put_bytes(keys.partial(0, 1), b"x")
        storage.put_bytes(keys.error("mapper-000000_000001"), b"{}")
    try:
        jobs = find_jobs(storage)
        assert jobs[doomed.job_id] == 4
        assert jobs[kept.job_id] == 4
        assert remove_job(storage, doomed.job_id) == 3  # plus the manifest, deleted first
        jobs = find_jobs(storage)
        assert doomed.job_id not in jobs
        assert jobs[kept.job_id] == 4
    finally:
        remove_job(storage, kept.job_id)
    assert kept.job_id not in find_jobs(storage)


def test_job_ids_sort_by_creation_and_carry_their_time():
    import time

    job_id = layout.new_job_id()
    assert abs(layout.job_created(job_id) - time.time()) < 5
    assert layout.job_of_key(f"tree-partials/{job_id}/000000_000001.root") == job_id
    assert layout.job_of_key("tree-partials/not-a-job/x.root") is None


def test_a_finished_job_cleans_up_after_itself_unwrapped(warm_cluster, dimuon_files):
    from oscar_python.client import Client

    # The real deletions, not the secret scan's wrappers (conftest.py applies those elsewhere only).
    assert job.remove_job is remove_job
    assert OSCARCluster.remove_jobs.__qualname__ == "OSCARCluster.remove_jobs"
    assert OSCARCluster.remove_jobs.__module__ == "distrdf_oscar.platform.oscar"
    executor = warm_cluster.executor(progress=False)
    df = ROOT.RDataFrame("Events", dimuon_files, executor=executor, npartitions=2)
    assert df.Count().GetValue() == ROOT.RDataFrame("Events", dimuon_files).Count().GetValue()
    finished = executor.last_job
    # Its objects: gone as soon as the result is in.
    assert finished.job_id not in find_jobs(executor.storage)
    assert [k for k in executor.storage.list("") if layout.job_of_key(k) == finished.job_id] == []
    # The OSCAR jobs that served it, with their logs: deleted in the background once finished.
    assert set(finished.functions) == {"mapper", "reducer"}
    assert executor.wait_for_bookkeeping()
    client = Client(warm_cluster.platform.oscar_options())
    for role, names in finished.functions.items():
        listed = client.list_jobs(executor.deployment.service_name(role)).json().get("jobs", {})
        assert set(names).isdisjoint(listed), (role, names, sorted(listed))
