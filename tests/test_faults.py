"""Exact results under lost, duplicated, killed and slow functions and a failing object store.

Every fault of the embedded platform x {tree fan-in 2, tree fan-in 4, coordinated}
x {warm, cold}, on a histogram + count + mean over the multi-file TTree. In warm
mode each fault gets its own job; cold functions cost seconds each, so in cold
mode one job per reduction carries every fault at once. Each job must give the
single-process result exactly, each fault must really have fired, and nothing
of the job may stay in the bucket.
"""

from __future__ import annotations

import time

import pytest
import ROOT

import distrdf_oscar as dro
from compare import assert_same_hist
from distrdf_oscar import layout
from distrdf_oscar.platform.embedded import Fault

NPARTITIONS = 4
REDUCTIONS = {
    "tree2": dro.TreeReduction(fan_in=2),
    "tree4": dro.TreeReduction(fan_in=4),
    "coordinated": dro.CoordinatedReduction(),
}
# Quick loss detection for tests; a cold function needs longer before its first output.
RETRY = {"warm": {"retry_after": 3.0, "retry_factor": 1.5}, "cold": {"retry_after": 8.0, "retry_factor": 1.5}}
STRAGGLER_SECONDS = {"warm": 10.0, "cold": 20.0}


def trigger(range_id: int) -> str:
    return f"triggers/*/{layout.interval_stem(range_id, range_id + 1)}.json"


def faults_for(name: str, reduction: str, mode: str) -> list[Fault]:
    """The rules of one named fault, aimed at a mapper and at the reduction's own functions."""
    coordinated = reduction == "coordinated"
    if coordinated:  # the coordinator's start, and the first batch
        lost_merges = [Fault.drop_trigger("coordinator"), Fault.drop_trigger("batch", key="batches/*/0000.json")]
    else:  # every event of the first level: no group sees itself complete
        lost_merges = [Fault.drop_trigger("reducer", key="tree-partials/*.root", times=NPARTITIONS)]
    merger = "batch" if coordinated else "reducer"
    return {
        "drop-trigger": [Fault.drop_trigger("mapper", key=trigger(1)), *lost_merges],
        "duplicate-trigger": [Fault.duplicate_trigger("mapper", key=trigger(2)), Fault.duplicate_trigger(merger)],
        "kill-before-write": [Fault.kill("mapper", "before-write", key=trigger(0)), Fault.kill(merger, "before-write")],
        "kill-after-write": [Fault.kill("mapper", "after-write", key=trigger(2)),
                             Fault.kill("coordinator" if coordinated else merger, "after-write")],
        "straggler": [Fault.delay("mapper", seconds=STRAGGLER_SECONDS[mode], key=trigger(3))],
        # From the submission on, so the client, the supervisor and the functions all meet it.
        "storage-503": [Fault.storage_outage(seconds=2.5, mode="503", after=0.0)],
        "storage-refused": [Fault.storage_outage(seconds=2.5, mode="refuse", after=0.2)],
    }[name]


FAULTS = ["drop-trigger", "duplicate-trigger", "kill-before-write", "kill-after-write", "straggler",
          "storage-503", "storage-refused"]


def book(df):
    df = df.Filter("nMuon >= 1").Define("pt0", "Muon_pt[0]")
    return df.Histo1D(("pt0", "leading muon pt", 64, 0.0, 160.0), "pt0"), df.Count(), df.Mean("pt0")


@pytest.fixture(scope="module")
def reference(dimuon_files):
    hist, count, mean = book(ROOT.RDataFrame("Events", dimuon_files))
    return hist.GetValue(), count.GetValue(), mean.GetValue()


def run_job(cluster, reduction: str, files, **options):
    executor = cluster.executor(reduction=REDUCTIONS[reduction], progress=False, **options)
    hist, count, mean = book(ROOT.RDataFrame("Events", files, executor=executor, npartitions=NPARTITIONS))
    return executor, (hist.GetValue(), count.GetValue(), mean.GetValue())


def assert_exact(result, reference) -> None:
    assert_same_hist(result[0], reference[0])
    assert result[1] == reference[1]
    assert result[2] == pytest.approx(reference[2], rel=1e-12)


def wait_idle(cluster, timeout: float = 120.0) -> None:
    """Until no function of the cluster is pending or running (stragglers included)."""
    from oscar_python.client import Client

    client = Client(cluster.platform.oscar_options())
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        busy = [job for service in client.list_services().json()
                for job in client.list_jobs(service["name"]).json().get("jobs", {}).values()
                if job["status"] in ("Pending", "Running")]
        if not busy:
            return
        time.sleep(0.25)
    raise AssertionError(f"functions still running after {timeout} s")


def leftovers(executor, job_id: str) -> list[str]:
    return [k for k in executor.storage.list("") if layout.job_of_key(k) == job_id]


def finish_faults(cluster, injected: list[Fault], since: float) -> list[Fault]:
    """The rules with how often they fired, once any storage outage is over; then clear them."""
    end = since + max((rule.after + rule.seconds for rule in injected if rule.kind == "storage_outage"), default=0)
    time.sleep(max(0.0, end - time.monotonic()))
    fired = cluster.platform.faults()
    cluster.platform.clear_faults()
    assert len(fired) == len(injected)
    return fired


def check_fired(cluster, injected: list[Fault], since: float, every_rule: bool = True) -> None:
    """Every rule fired (or, with several faults in one job, every kind of fault, since one
    fault can pre-empt another on the same function)."""
    fired = finish_faults(cluster, injected, since)
    if every_rule:
        for rule in fired:
            assert rule.fired >= 1, f"the fault {rule} never fired"
    else:
        kinds = {(rule.kind, rule.when, rule.mode) for rule in fired}
        missing = kinds - {(rule.kind, rule.when, rule.mode) for rule in fired if rule.fired}
        assert not missing, f"these faults never fired: {missing}"


@pytest.mark.parametrize("reduction", list(REDUCTIONS))
@pytest.mark.parametrize("fault", FAULTS)
def test_fault_warm(warm_cluster, dimuon_files, reference, fault, reduction):
    injected = faults_for(fault, reduction, "warm")
    warm_cluster.platform.inject(*injected)
    since = time.monotonic()
    try:
        executor, result = run_job(warm_cluster, reduction, dimuon_files, **RETRY["warm"])
    finally:
        check_fired(warm_cluster, injected, since)
    assert_exact(result, reference)
    job = executor.last_job
    if fault in ("drop-trigger", "kill-before-write", "straggler"):
        assert any(e.trigger.attempts for e in job.tracker.expected), "the lost work was never re-triggered"
    if fault == "straggler":
        wait_idle(warm_cluster)  # the slow copy finishes late, after the job ended: it must leave nothing
    assert leftovers(executor, job.job_id) == []


@pytest.mark.parametrize("reduction", list(REDUCTIONS))
def test_every_fault_at_once_cold(cold_cluster, dimuon_files, reference, reduction):
    injected = [rule for name in FAULTS for rule in faults_for(name, reduction, "cold")]
    cold_cluster.platform.inject(*injected)
    since = time.monotonic()
    try:
        executor, result = run_job(cold_cluster, reduction, dimuon_files, **RETRY["cold"])
    finally:
        check_fired(cold_cluster, injected, since, every_rule=False)
    assert_exact(result, reference)
    wait_idle(cold_cluster)
    assert leftovers(executor, executor.last_job.job_id) == []


@pytest.mark.parametrize("fault", ["drop-trigger", "kill-before-write"])
def test_lost_work_without_retries_is_named(warm_cluster, dimuon_files, fault):
    injected = faults_for(fault, "tree2", "warm")[:1]
    warm_cluster.platform.inject(*injected)
    since = time.monotonic()
    executor = warm_cluster.executor(reduction=REDUCTIONS["tree2"], progress=False, retries=0, retry_after=5.0)
    try:
        with pytest.raises(dro.JobTimeout, match=r"mapper of range (1|0) produced nothing .* retries are disabled"):
            ROOT.RDataFrame("Events", dimuon_files, executor=executor, npartitions=NPARTITIONS).Count().GetValue()
    finally:
        check_fired(warm_cluster, injected, since)
    assert leftovers(executor, executor.last_job.job_id) == []
