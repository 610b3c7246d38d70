"""Exact results under lost, duplicated, killed and slow functions and a failing object store.

Every fault of the embedded platform x {tree fan-in 2, tree fan-in 4, coordinated}
x {prestarted, cold}, on a histogram + count + mean over the multi-file TTree. With
pre-started workers each fault gets its own job; cold functions cost seconds each, so in cold
mode one job per reduction carries every fault at once. Each job must give the
single-process result exactly, each fault must really have fired, and nothing
of the job may stay in the bucket.
"""

from __future__ import annotations

import logging
import re
import time

import pytest
import ROOT

import distrdf_oscar as dro
from distrdf_oscar.platform.embedded import Fault
from distrdf_oscar.protocol import layout
from jobfaults import assert_exact, book, finish_faults, trigger, wait_idle

pytestmark = pytest.mark.usefixtures("secret_scan")  # conftest.py: these jobs' objects and logs are searched

NPARTITIONS = 4
REDUCTIONS = {
    "tree2": dro.TreeReduction(fan_in=2),  # inline: the mappers merge
    "tree4": dro.TreeReduction(fan_in=4, inline=False),  # every partial triggers a reducer
    "coordinated": dro.CoordinatedReduction(),
}
# Quick loss detection for tests; a cold function needs longer before its first output.
RETRY = {
    "prestarted": {"retry_after": 3.0, "retry_factor": 1.5},
    "cold": {"retry_after": 8.0, "retry_factor": 1.5},
}
# A straggler must outlast the quiet limit, which grows with the longest spell without progress (the
# first one includes the graph's JIT): on a loaded CI machine a 10 s straggler once finished first.
STRAGGLER_SECONDS = {"prestarted": 15.0, "cold": 20.0}
STRAGGLER_RETRY = {"retry_factor": 1.0}


def faults_for(name: str, reduction: str, mode: str) -> list[Fault]:
    """The rules of one named fault, aimed at a mapper and at the reduction's own functions."""
    chosen = REDUCTIONS[reduction]
    if isinstance(chosen, dro.TreeReduction) and chosen.inline:  # the mappers merge: faults aim at them
        return {
            "drop-trigger": [Fault.drop_trigger("mapper", key=trigger(1))],
            "duplicate-trigger": [Fault.duplicate_trigger("mapper", key=trigger(2))],
            "kill-before-write": [Fault.kill("mapper", "before-write", key=trigger(0))],
            # Every mapper dies once its partial is written, before merging: no group is merged inline.
            "kill-after-write": [Fault.kill("mapper", "after-write", key="triggers/*", times=NPARTITIONS)],
        }.get(name) or _common_faults(name, mode)
    coordinated = reduction == "coordinated"
    merger = "batch" if coordinated else "reducer"
    if coordinated:  # the coordinator's start, and the first batch
        lost_merges = [
            Fault.drop_trigger("coordinator"),
            Fault.drop_trigger("batch", key="batches/*/0000.json"),
        ]
    else:  # every event of the first level: no group sees itself complete
        lost_merges = [Fault.drop_trigger("reducer", key="tree-partials/*.root", times=NPARTITIONS)]
    return {
        "drop-trigger": [Fault.drop_trigger("mapper", key=trigger(1)), *lost_merges],
        "duplicate-trigger": [
            Fault.duplicate_trigger("mapper", key=trigger(2)),
            Fault.duplicate_trigger(merger),
        ],
        "kill-before-write": [
            Fault.kill("mapper", "before-write", key=trigger(0)),
            Fault.kill(merger, "before-write"),
        ],
        "kill-after-write": [
            Fault.kill("mapper", "after-write", key=trigger(2)),
            Fault.kill("coordinator" if coordinated else merger, "after-write"),
        ],
    }.get(name) or _common_faults(name, mode)


def _common_faults(name: str, mode: str) -> list[Fault]:
    return {
        "straggler": [Fault.delay("mapper", seconds=STRAGGLER_SECONDS[mode], key=trigger(3))],
        # From the submission on, so the client, the supervisor and the functions all meet it.
        "storage-503": [Fault.storage_outage(seconds=2.5, mode="503", after=0.0)],
        "storage-refused": [Fault.storage_outage(seconds=2.5, mode="refuse", after=0.2)],
    }[name]


FAULTS = [
    "drop-trigger",
    "duplicate-trigger",
    "kill-before-write",
    "kill-after-write",
    "straggler",
    "storage-503",
    "storage-refused",
]


@pytest.fixture(scope="module")
def reference(dimuon_files):
    return tuple(result.GetValue() for result in book(ROOT.RDataFrame("Events", dimuon_files)))


def run_job(cluster, reduction: str, files, **options):
    # One range per call: the fault rules name ranges' triggers.
    executor = cluster.executor(reduction=REDUCTIONS[reduction], progress=False, ranges_per_call=1, **options)
    results = book(ROOT.RDataFrame("Events", files, executor=executor, npartitions=NPARTITIONS))
    return executor, tuple(result.GetValue() for result in results)


def leftovers(executor, job_id: str) -> list[str]:
    return [k for k in executor.storage.list("") if layout.job_of_key(k) == job_id]


def check_fired(cluster, injected: list[Fault], since: float, every_rule: bool = True) -> None:
    """Every rule fired (or, with several faults in one job, every kind of fault, since one
    fault can pre-empt another on the same function)."""
    fired = finish_faults(cluster, injected, since)
    if every_rule:
        for rule in fired:
            # A rule fires at most ``times`` times (faults.py); each of these jobs meets every one in full.
            assert rule.fired == rule.times, f"the fault {rule} fired {rule.fired} of {rule.times} times"
    else:
        kinds = {(rule.kind, rule.when, rule.mode) for rule in fired}
        missing = kinds - {(rule.kind, rule.when, rule.mode) for rule in fired if rule.fired}
        assert not missing, f"these faults never fired: {missing}"


@pytest.mark.parametrize("reduction", list(REDUCTIONS))
@pytest.mark.parametrize("fault", FAULTS)
def test_fault_prestarted(prestarted_cluster, dimuon_files, reference, fault, reduction):
    injected = faults_for(fault, reduction, "prestarted")
    prestarted_cluster.platform.inject(*injected)
    since = time.monotonic()
    try:
        options = RETRY["prestarted"] | (STRAGGLER_RETRY if fault == "straggler" else {})
        executor, result = run_job(prestarted_cluster, reduction, dimuon_files, **options)
    finally:
        check_fired(prestarted_cluster, injected, since)
    assert_exact(result, reference)
    job = executor.last_job
    if fault in ("drop-trigger", "kill-before-write", "straggler"):
        assert any(e.trigger.attempts for e in job.tracker.expected), "the lost work was never re-triggered"
    # A slow or retried copy may still be finishing after the job ended (a straggler, a copy an outage
    # delayed): once it is done it must have left nothing.
    wait_idle(prestarted_cluster)
    assert leftovers(executor, job.job_id) == []


@pytest.mark.parametrize("reduction", ["tree2", "coordinated"])  # fan-in 4 cold: test_e2e.py's cold jobs
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


# The first rule of each fault aims at one mapper: trigger(1) for a lost trigger, trigger(0) for a kill.
@pytest.mark.parametrize(("fault", "range_id"), [("drop-trigger", 1), ("kill-before-write", 0)])
def test_lost_work_without_retries_is_named(prestarted_cluster, dimuon_files, fault, range_id):
    injected = faults_for(fault, "tree2", "prestarted")[:1]
    assert injected[0].key == trigger(range_id)
    prestarted_cluster.platform.inject(*injected)
    since = time.monotonic()
    executor = prestarted_cluster.executor(
        reduction=REDUCTIONS["tree2"], progress=False, retries=0, retry_after=5.0, ranges_per_call=1
    )
    try:
        lost = re.escape(layout.interval_stem(range_id, range_id + 1))
        with pytest.raises(
            dro.JobTimeout,
            match=rf"the mapper of range {range_id} produced nothing "
            rf"\(\S+/{lost}\.root missing\) retries are disabled \(retries=0\)",
        ):
            ROOT.RDataFrame(
                "Events", dimuon_files, executor=executor, npartitions=NPARTITIONS
            ).Count().GetValue()
    finally:
        check_fired(prestarted_cluster, injected, since)
    assert leftovers(executor, executor.last_job.job_id) == []


def test_a_coordinator_killed_before_merging_its_last_batch_leaves_it_to_a_batch_reducer(
    prestarted_cluster, dimuon_files, reference
):
    """A file-triggered coordinator merges its last batch itself: killed after writing that batch
    file (to the queue, which starts nothing) and before merging it, the client's retry has a
    batch reducer read the queued file and merge it."""
    injected = [Fault.kill("coordinator", "after-write")]
    prestarted_cluster.platform.inject(*injected)
    since = time.monotonic()
    try:
        # One batch of the four partials: the coordinator's first write is its last batch file.
        executor = prestarted_cluster.executor(
            reduction=dro.CoordinatedReduction([NPARTITIONS]),
            progress=False,
            ranges_per_call=1,
            **RETRY["prestarted"],
        )
        result = tuple(
            r.GetValue()
            for r in book(ROOT.RDataFrame("Events", dimuon_files, executor=executor, npartitions=NPARTITIONS))
        )
    finally:
        check_fired(prestarted_cluster, injected, since)
    assert_exact(result, reference)
    job = executor.last_job
    assert job.functions.get("batch"), "no batch reducer merged the dead coordinator's batch"
    assert leftovers(executor, job.job_id) == []


def test_a_job_whose_functions_do_not_start_says_why_then_finishes(
    prestarted_cluster, dimuon_files, reference, caplog
):
    """Nothing for a while (here every mapper held back, as by an image pull): the job says what
    that usually means and points to ``check``, once, and then finishes exactly."""
    injected = [Fault.delay("mapper", seconds=3.0, key="triggers/*", times=NPARTITIONS)]
    prestarted_cluster.platform.inject(*injected)
    since = time.monotonic()
    try:
        with caplog.at_level(logging.WARNING, logger="distrdf_oscar.client.job"):
            _, result = run_job(
                prestarted_cluster, "tree2", dimuon_files, nothing_started_after=1.5, retry_after=30.0
            )
    finally:
        check_fired(prestarted_cluster, injected, since)
    assert_exact(result, reference)
    hints = [r.getMessage() for r in caplog.records if "nothing has started" in r.getMessage()]
    assert len(hints) == 1, hints
    assert "pulling the function image" in hints[0]
    assert hints[0].endswith("`distrdf-oscar check` tells which")
