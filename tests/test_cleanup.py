"""Finding and removing a job's objects (what the client does after every job, and `cleanup` for orphans)."""

from __future__ import annotations

import threading
import time

import pytest
import ROOT

import distrdf_oscar as dro
from distrdf_oscar import cli
from distrdf_oscar.client import job
from distrdf_oscar.client.job import find_jobs, remove_job
from distrdf_oscar.platform.oscar.cluster import OSCARCluster
from distrdf_oscar.protocol import layout

# No secret scan in this module (conftest.py): cleanup runs as users get it.


def test_find_and_remove_jobs_leaves_other_jobs_alone(prestarted_cluster):
    storage = prestarted_cluster.executor(progress=False).storage
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


def test_a_finished_job_cleans_up_after_itself_unwrapped(prestarted_cluster, dimuon_files):
    from oscar_python.client import Client

    # The real deletions, not the secret scan's wrappers (conftest.py applies those elsewhere only).
    assert job.remove_job is remove_job
    assert OSCARCluster.remove_jobs.__qualname__ == "OSCARCluster.remove_jobs"
    assert OSCARCluster.remove_jobs.__module__ == "distrdf_oscar.platform.oscar.cluster"
    # Reducer functions (not inline merges), so that two services' OSCAR jobs are cleaned up.
    executor = prestarted_cluster.executor(
        reduction=dro.TreeReduction(fan_in=2, inline=False), progress=False
    )
    df = ROOT.RDataFrame("Events", dimuon_files, executor=executor, npartitions=2)
    assert df.Count().GetValue() == ROOT.RDataFrame("Events", dimuon_files).Count().GetValue()
    finished = executor.last_job
    # Its objects: gone as soon as the result is in.
    assert finished.job_id not in find_jobs(executor.storage)
    assert [k for k in executor.storage.list("") if layout.job_of_key(k) == finished.job_id] == []
    # The OSCAR jobs that served it, with their logs: deleted in the background once finished.
    assert set(finished.functions) == {"mapper", "reducer"}
    assert executor.wait_for_bookkeeping()
    client = Client(prestarted_cluster.platform.oscar_options())
    for role, names in finished.functions.items():
        listed = client.list_jobs(executor.deployment.service_name(role)).json().get("jobs", {})
        assert set(names).isdisjoint(listed), (role, names, sorted(listed))


def _cli_environment(cluster, monkeypatch) -> None:
    """The operator's settings for ``distrdf-oscar`` against a session cluster."""
    for name in ("OSCAR_TOKEN", "OSCAR_SSL_VERIFY", "MINIO_ENDPOINT", "DISTRDF_OSCAR_DEPLOYMENT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OSCAR_ENDPOINT", cluster.platform.oscar_endpoint)
    monkeypatch.setenv("OSCAR_USER", cluster.platform.oscar_user)
    monkeypatch.setenv("OSCAR_PASSWORD", cluster.platform.oscar_password)
    monkeypatch.setenv("DISTRDF_OSCAR_KEY", cluster._signing_key)


def _start_slow_job(executor, files, sleep_ms: int):
    """A job whose mappers each sleep once; returns (thread, outcome dict) once its manifest exists."""
    df = ROOT.RDataFrame("Events", files, executor=executor, npartitions=2)
    # The sleep's length keeps the jitted code distinct from other tests' in warm workers.
    booked = df.Define("slow", f"if (rdfentry_ % 12000 == 0) gSystem->Sleep({sleep_ms}); return nMuon;").Sum(
        "slow"
    )
    outcome: dict = {}

    def wait() -> None:
        try:
            outcome["value"] = booked.GetValue()
        except Exception as exc:  # noqa: BLE001 - handed to the test thread, which checks its type
            outcome["error"] = exc
        outcome["ended"] = time.monotonic()

    thread = threading.Thread(target=wait)
    thread.start()
    deadline = time.monotonic() + 60
    while not find_jobs(executor.storage) and time.monotonic() < deadline:
        time.sleep(0.1)
    return thread, outcome


def _wait_until_gone(storage) -> None:
    """The mappers still running withdraw what they write: nothing of the job stays."""
    deadline = time.monotonic() + 30
    while find_jobs(storage) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert find_jobs(storage) == {}


def test_cleanup_during_another_clients_job_leaves_it_untouched_and_exact(
    prestarted_cluster, dimuon_files, monkeypatch, capsys
):
    _cli_environment(prestarted_cluster, monkeypatch)
    executor = prestarted_cluster.executor(progress=False)
    thread, outcome = _start_slow_job(executor, dimuon_files, 3001)
    (job_id,) = find_jobs(executor.storage)
    assert cli.main(["cleanup"]) == 0
    out = capsys.readouterr().out
    assert f"{job_id}: " in out
    assert "alive, ttl 120 s): kept" in out
    assert "0 job(s) removed; 1 left alone" in out
    thread.join(120)
    assert "error" not in outcome, outcome.get("error")
    expected = ROOT.RDataFrame("Events", dimuon_files).Sum("nMuon").GetValue()
    assert outcome["value"] == expected
    assert find_jobs(executor.storage) == {}


def test_a_job_removed_under_its_client_fails_it_at_once_saying_so(
    prestarted_cluster, dimuon_files, monkeypatch, capsys
):
    _cli_environment(prestarted_cluster, monkeypatch)
    executor = prestarted_cluster.executor(progress=False)
    thread, outcome = _start_slow_job(executor, dimuon_files, 8002)
    (job_id,) = find_jobs(executor.storage)
    assert cli.main(["cleanup", "--job", job_id]) == 0
    removed = time.monotonic()
    captured = capsys.readouterr()
    assert f"warning: {job_id} is alive: its client will fail when it is removed" in captured.err
    assert f"{job_id}: " in captured.out
    thread.join(60)
    assert isinstance(outcome.get("error"), dro.JobRemoved), outcome
    assert str(outcome["error"]).startswith(f"job {job_id} was removed from storage while this client waited")
    print(f"the client failed {outcome['ended'] - removed:.1f} s after the removal")
    _wait_until_gone(executor.storage)


def test_jobs_lists_a_running_job_and_cancel_stops_it_telling_its_client(
    prestarted_cluster, dimuon_files, monkeypatch, capsys
):
    import getpass
    import json
    import socket

    _cli_environment(prestarted_cluster, monkeypatch)
    # One range per call (auto may put both ranges in one call): two mapper calls to count.
    executor = prestarted_cluster.executor(progress=False, ranges_per_call=1)
    thread, outcome = _start_slow_job(executor, dimuon_files, 8003)
    (job_id,) = find_jobs(executor.storage)
    deadline = time.monotonic() + 30
    while not executor.storage.exists(layout.JobKeys(job_id).lease) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert cli.main(["jobs", "--json"]) == 0
    [listed] = json.loads(capsys.readouterr().out)
    assert listed["job"] == job_id
    assert listed["owner"] == f"{getpass.getuser()}@{socket.gethostname()}"
    assert listed["state"] == "alive"
    assert listed["mode"] == "tree"
    assert listed["calls"] == 2
    assert 0 <= listed["mapped"] < 2
    assert listed["finished"] is False
    assert cli.main(["jobs"]) == 0
    assert f"{job_id}  {listed['owner']}  0 min  alive  tree  " in capsys.readouterr().out

    assert cli.main(["cancel", job_id]) == 0
    assert capsys.readouterr().out.startswith(f"job {job_id}: cancelled, ")
    thread.join(60)
    assert isinstance(outcome.get("error"), dro.JobRemoved), outcome
    assert "`distrdf-oscar cancel`" in str(outcome["error"])
    _wait_until_gone(executor.storage)
    assert cli.main(["jobs"]) == 0
    assert capsys.readouterr().out == "no jobs\n"
    assert cli.main(["cancel", job_id]) == 1
    assert "has no objects" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        cli.main(["cancel", "not-a-job"])
    assert usage.value.code == 2
    assert "malformed job id 'not-a-job'" in capsys.readouterr().err


def test_a_failed_functions_logs_are_kept_until_logs_prints_them(prestarted_cluster, monkeypatch, capsys):
    import re

    from oscar_python.client import Client

    _cli_environment(prestarted_cluster, monkeypatch)
    executor = prestarted_cluster.executor(progress=False, retries=0)
    df = ROOT.RDataFrame(40, executor=executor, npartitions=2)
    failing = df.Define("y", 'if (rdfentry_ == 25) throw std::runtime_error("boom for the logs"); return 1;')
    try:
        failing.Sum("y").GetValue()
        raise AssertionError("the job did not fail")
    except dro.RemoteError as error:
        message = str(error)
    job_id = executor.last_job.job_id
    command = re.search(r"its function's logs: (distrdf-oscar logs (\S+) --task (\S+))\n", message)
    assert command, message
    assert command.group(2) == job_id
    task = command.group(3)
    service = executor.deployment.service_name("mapper")
    oscar = Client(prestarted_cluster.platform.oscar_options())
    kept = set(oscar.list_jobs(service).json().get("jobs", {}))
    assert cli.main(["logs", job_id, "--task", task]) == 0
    out = capsys.readouterr().out
    heading = re.match(rf"=== {task} \({service}, OSCAR job (\S+)\): ", out)
    assert heading, out
    assert heading.group(1) in kept, "the failed function's OSCAR job was deleted with the job"
    assert "boom for the logs" in out  # the function's own output, as OSCAR serves it
    assert heading.group(1) not in oscar.list_jobs(service).json().get("jobs", {}), "read, then deleted"
    assert cli.main(["logs", job_id]) == 0  # again, from the copy kept with the failure record
    assert "boom for the logs" in capsys.readouterr().out
    assert cli.main(["logs", job_id, "--task", "mapper-999999_999999"]) == 1
    assert "has no task or role 'mapper-999999_999999'" in capsys.readouterr().err
    assert cli.main(["logs", layout.new_job_id()]) == 1
    assert "is recorded on this machine" in capsys.readouterr().err
