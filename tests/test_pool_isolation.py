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

pytestmark = pytest.mark.usefixtures("secret_scan")  # conftest.py: these jobs' objects and logs are searched

ENTRIES = 20_000

# What every client runs: its own declarations (``prelude``), then one graph, distributed and in
# one process; it prints both as JSON, or the distributed error.
CLIENT = textwrap.dedent("""
    import json, os, sys, time
    import ROOT
    from distrdf_oscar import OSCARExecutor, RemoteError
    from distrdf_oscar.deployment import Deployment

    executor = OSCARExecutor(os.environ["OSCAR_ENDPOINT"], user=os.environ["OSCAR_USER"],
                             password=os.environ["OSCAR_PASSWORD"], signing_key=os.environ["DISTRDF_OSCAR_KEY"],
                             deployment=Deployment(name="distrdf", variables={{"DRO_PYTHON": sys.executable}}),
                             shared_paths=("/",), concurrency=2, progress=False)
    {prelude}
    def book(df):
        return df.Define("x", "double(rdfentry_)").{graph}
    began = time.monotonic()
    try:
        distributed = book(ROOT.RDataFrame({entries}, executor=executor, npartitions=4)).GetValue()
    except RemoteError as exc:
        print(json.dumps({{"error": str(exc), "seconds": time.monotonic() - began}}))
        sys.exit(0)
    seconds = time.monotonic() - began
    local = book(ROOT.RDataFrame({entries})).GetValue()
    print(json.dumps({{"distributed": distributed, "local": local, "seconds": seconds,
                      "pool": executor.last_job.pool}}))
""")


@pytest.fixture(scope="module")
def shared_pool():
    with dro.LocalCluster(workers=2, mode="warm", startup_delay=0.0) as cluster:
        yield cluster


def _environment(cluster) -> dict[str, str]:
    platform = cluster.platform
    return {**os.environ, "OSCAR_ENDPOINT": platform.oscar_endpoint, "OSCAR_USER": platform.oscar_user,
            "OSCAR_PASSWORD": platform.oscar_password, "DISTRDF_OSCAR_KEY": cluster._signing_key}


def _start(cluster, prelude: str, graph: str, workdir) -> subprocess.Popen[str]:
    workdir = workdir / f"client-{time.monotonic_ns()}"  # each client its own folder, as analysts have
    workdir.mkdir()
    script = CLIENT.format(prelude=textwrap.dedent(prelude), graph=graph,
                           entries=ENTRIES)
    return subprocess.Popen([sys.executable, "-c", script], env=_environment(cluster), cwd=str(workdir),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _result(process: subprocess.Popen[str]) -> dict:
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, f"client failed:\n{err[-3000:]}"
    return json.loads(out.strip().splitlines()[-1])


def _client(cluster, prelude: str, graph: str, workdir) -> dict:
    return _result(_start(cluster, prelude, graph, workdir))


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
    together = [_start(shared_pool, CORR_A, SUM_CORR, tmp_path), _start(shared_pool, CORR_B, SUM_CORR, tmp_path)]
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
TRACES = ('Define("traces", "(std::getenv(\\"DRO_LEAKED\\") != nullptr) + 10 * std::ifstream(\\"leaked.txt\\")'
          '.good() + 100 * (gErrorIgnoreLevel == 5000) + 1000 * (gRandom->GetSeed() == 99)").Sum("traces")')


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
