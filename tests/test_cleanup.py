"""Finding and removing a job's objects (what the client does after every job, and `cleanup` for orphans)."""

from __future__ import annotations

from distrdf_oscar import layout
from distrdf_oscar.job import find_jobs, remove_job


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
