"""A warm pool shared by separate client processes, as analysts share one: every job gets what a
fresh ROOT process gives it (declarations, ``initialize`` effects, files, global settings of other
jobs never reach it), and a crash in user C++ fails its own job only, quickly, naming the signal.

Each client is a Python process of its own (the analyst restarting a kernel after editing a
function), run one after another and at once on one embedded deployment with its default warm
pool and ``reduction="auto"``; each also computes its graph in its own single process, which is
the reference its distributed result must equal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

import distrdf_oscar as dro
from distrdf_oscar.functions.job_process import private_mb
from distrdf_oscar.functions.pool import SPARE_MEMORY

pytestmark = pytest.mark.usefixtures("secret_scan")  # conftest.py: these jobs' objects and logs are searched

ENTRIES = 20_000

# What every client runs: its own declarations (``prelude``), then one graph, distributed and in
# one process; it prints both as JSON, or the distributed error.
CLIENT = textwrap.dedent("""
    import json, os, sys, time
    import ROOT
    from distrdf_oscar import OSCARExecutor, RemoteError
    from distrdf_oscar.platform.deployment import Deployment

    executor = OSCARExecutor(os.environ["OSCAR_ENDPOINT"], user=os.environ["OSCAR_USER"],
                             password=os.environ["OSCAR_PASSWORD"], signing_key=os.environ["DISTRDF_OSCAR_KEY"],
                             deployment=Deployment(name="distrdf", variables={{"DRO_PYTHON": sys.executable}}),
                             shared_paths=("/",), concurrency=2, progress=False{options})
    {prelude}
    def book(df):
        result = df.Define("x", "double(rdfentry_)").{graph}
        return result.GetValue() if hasattr(result, "GetValue") else float(result)
    began = time.monotonic()
    try:
        distributed = book(ROOT.RDataFrame({entries}, executor=executor, npartitions={partitions}))
    except RemoteError as exc:
        print(json.dumps({{"error": str(exc), "seconds": time.monotonic() - began}}))
        sys.exit(0)
    seconds = time.monotonic() - began
    local = book(ROOT.RDataFrame({entries}))
    print(json.dumps({{"distributed": distributed, "local": local, "seconds": seconds,
                      "pool": executor.last_job.pool}}))
""")


@pytest.fixture(scope="module")
def shared_pool():
    with dro.LocalCluster(workers=2, mode="warm", startup_delay=0.0) as cluster:
        yield cluster


def _environment(cluster) -> dict[str, str]:
    platform = cluster.platform
    return {
        **os.environ,
        "OSCAR_ENDPOINT": platform.oscar_endpoint,
        "OSCAR_USER": platform.oscar_user,
        "OSCAR_PASSWORD": platform.oscar_password,
        "DISTRDF_OSCAR_KEY": cluster._signing_key,
    }


def _start(
    cluster, prelude: str, graph: str, workdir, entries: int = ENTRIES, partitions: int = 4, options: str = ""
) -> subprocess.Popen[str]:
    workdir = workdir / f"client-{time.monotonic_ns()}"  # each client its own folder, as analysts have
    workdir.mkdir()
    script = CLIENT.format(
        prelude=textwrap.dedent(prelude), graph=graph, entries=entries, partitions=partitions, options=options
    )
    return subprocess.Popen(
        [sys.executable, "-c", script],
        env=_environment(cluster),
        cwd=str(workdir),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _result(process: subprocess.Popen[str]) -> dict:
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, f"client failed:\n{err[-3000:]}"
    return json.loads(out.strip().splitlines()[-1])


def _client(cluster, prelude: str, graph: str, workdir, entries: int = ENTRIES) -> dict:
    return _result(_start(cluster, prelude, graph, workdir, entries))


CORR_A = 'ROOT.RDF.Distributed.DistributeCppCode("double corr(double x) { return 2 * x; }")'
CORR_B = 'ROOT.RDF.Distributed.DistributeCppCode("double corr(double x) { return x + 1; }")'
SUM_CORR = 'Define("y", "corr(x)").Sum("y")'


def test_an_edited_function_gives_the_new_results(shared_pool, tmp_path):
    """Client A declares ``corr``; client B, a new process, declares another ``corr``: each gets
    its own function's sum, one after another and at once."""
    first = _client(shared_pool, CORR_A, SUM_CORR, tmp_path)
    second = _client(shared_pool, CORR_B, SUM_CORR, tmp_path)
    assert first["pool"]
    assert second["pool"]
    assert first["distributed"] == first["local"] == 2 * sum(range(ENTRIES))
    assert second["distributed"] == second["local"] == sum(range(ENTRIES)) + ENTRIES
    together = [
        _start(shared_pool, CORR_A, SUM_CORR, tmp_path),
        _start(shared_pool, CORR_B, SUM_CORR, tmp_path),
    ]
    a, b = (_result(process) for process in together)
    assert a["distributed"] == a["local"]
    assert b["distributed"] == b["local"]
    assert a["distributed"] != b["distributed"]


# Client A changes what a fresh process has: an environment variable and a file in the working
# directory (from an initialize function), ROOT's error level and random seed (in user C++).
LEAKY = """
    def leave_traces():
        import os
        import ROOT
        os.environ["DRO_LEAKED"] = "1"
        with open("leaked.txt", "w") as note:
            note.write("from another job")
        ROOT.gErrorIgnoreLevel = 5000
        ROOT.gRandom.SetSeed(99)
    ROOT.RDF.Distributed.initialize(leave_traces)
"""
# What client B looks at, per entry: each term is 0 in a fresh process.
TRACES = (
    'Define("traces", "(std::getenv(\\"DRO_LEAKED\\") != nullptr) + 10 * std::ifstream(\\"leaked.txt\\")'
    '.good() + 100 * (gErrorIgnoreLevel == 5000) + 1000 * (gRandom->GetSeed() == 99)").Sum("traces")'
)


def test_no_state_of_one_job_reaches_the_next(shared_pool, tmp_path):
    leaky = _client(shared_pool, LEAKY, TRACES, tmp_path)
    assert leaky["distributed"] == 1111 * ENTRIES, "the initialize function did not run in the functions"
    for _ in range(2):  # every worker of the pool served the leaky job's kind once before
        clean = _client(shared_pool, "", TRACES, tmp_path)
        assert clean["local"] == 0
        assert clean["distributed"] == 0, f"traces of another job: {clean['distributed'] / ENTRIES}"


CRASHING = 'ROOT.RDF.Distributed.DistributeCppCode("bool boom(double x) { if (x == 7) { volatile int *p = nullptr; *p = 1; } return true; }")'


def test_a_crash_in_user_code_fails_its_job_only(shared_pool, tmp_path):
    crashed = _client(shared_pool, CRASHING, 'Filter("boom(x)").Count()', tmp_path)
    assert "SIGSEGV" in crashed.get("error", ""), crashed
    assert "twice" in crashed["error"]
    print(f"crash reported {crashed['seconds']:.1f} s after the job began")
    after = _client(shared_pool, CORR_B, SUM_CORR, tmp_path)
    assert after["distributed"] == after["local"]
    executor = shared_pool.executor(progress=False)
    deadline = time.monotonic() + 30
    while len(executor.pool_workers()) < shared_pool.workers and time.monotonic() < deadline:
        time.sleep(0.5)
    assert len(executor.pool_workers()) == shared_pool.workers  # the workers lived on


def _worker_pids(cluster) -> list[int]:
    """The pool's worker processes (a worker's id is host-pid-nonce)."""
    return [int(beat.worker.rsplit("-", 2)[1]) for beat in cluster.executor(progress=False).pool_workers()]


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def _wait_for_no_job_processes(cluster, timeout: float = 20.0) -> None:
    """Until no worker has a process for a job (their heartbeats list them): a job's process ends
    with its job, or waits, as a spare, for a later job that declares the same."""
    executor = cluster.executor(progress=False)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(beat.jobs for beat in executor.pool_workers()):
        time.sleep(0.5)
    assert [beat.jobs for beat in executor.pool_workers() if beat.jobs] == []


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    if int(stat.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except (OSError, ValueError, IndexError):
                continue
    return found


def test_workers_return_to_their_warm_memory_after_large_jobs(shared_pool, tmp_path):
    """Large AsNumpy jobs grow the job's process, which ends with the job: the worker stays at its
    warm size (checked after every job, and after all)."""
    pids = _worker_pids(shared_pool)
    baseline = {pid: _rss_mb(pid) for pid in pids}
    for _ in range(4):
        big = _client(
            shared_pool,
            "",
            'Define("y", "x * 0.5").AsNumpy(["x", "y"])["y"].sum()',
            tmp_path,
            entries=5_000_000,
        )
        assert big["distributed"] == big["local"]
    _wait_for_no_job_processes(shared_pool)
    # A process the worker ended exits on its own: give it the time to (a loaded machine is slow).
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(
        private_mb(child) > SPARE_MEMORY for pid in pids for child in _children(pid)
    ):
        time.sleep(0.5)
    for pid in pids:
        assert _rss_mb(pid) - baseline[pid] < 100, f"worker {pid} grew from {baseline[pid]:.0f} MB"
        # What stays beside the worker: its queue watcher, and at most one spare job process, small.
        assert len(_children(pid)) <= 2
        assert all(private_mb(child) <= SPARE_MEMORY for child in _children(pid))


SLOW = 'ROOT.RDF.Distributed.DistributeCppCode("bool slow(double) { gSystem->Sleep(1000); return true; }")'


def test_a_killed_client_stops_costing_the_pool_and_a_newer_job_is_not_starved(shared_pool, tmp_path):
    """Client A queues 64 one-second calls; client B's small job, started after, is served in turn
    rather than after A's backlog; then A is killed outright: its queued calls are removed and its
    processes end once its lease lapses, long before its backlog would have been computed."""
    from distrdf_oscar.protocol import layout

    storage = shared_pool.executor(progress=False).storage
    slow = _start(
        shared_pool,
        SLOW,
        'Filter("slow(x)").Count()',
        tmp_path,
        entries=64,
        partitions=64,
        options=", ranges_per_call=1",
    )
    try:
        deadline = time.monotonic() + 120
        job_id = None
        while job_id is None and time.monotonic() < deadline:
            claimed = [key for key in storage.list(layout.JOBS + "/") if "/claims/" in key]
            job_id = layout.job_of_key(claimed[0]) if claimed else None
            time.sleep(0.2)
        assert job_id is not None, "the slow client's calls were never claimed"
        newer = _client(shared_pool, CORR_B, SUM_CORR, tmp_path)
        assert newer["distributed"] == newer["local"]
        keys = layout.JobKeys(job_id)
        assert storage.list(keys.prefix(layout.QUEUE)), (
            "the older job's backlog was served before the newer job"
        )
    finally:
        slow.kill()
        slow.communicate()  # reaps it and closes its pipes
    deadline = time.monotonic() + 60
    while storage.list(keys.prefix(layout.QUEUE)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert storage.list(keys.prefix(layout.QUEUE)) == [], "the killed client's calls stayed queued"
    computed = [key for key in storage.list(keys.claims) if not key.rsplit("/", 1)[-1].startswith("group_")]
    assert len(computed) < 60, f"the pool took {len(computed)} of the killed client's 64 calls"
    _wait_for_no_job_processes(shared_pool)
    after = _client(shared_pool, CORR_A, SUM_CORR, tmp_path)
    assert after["distributed"] == after["local"]
    from distrdf_oscar.client.job import remove_job

    remove_job(storage, job_id)  # what `distrdf-oscar cleanup` does for such a job
