"""Warm pools (``LocalCluster(mode="warm")``): an OSCAR exposed service whose long-lived workers
take the mapper calls (and coordinated batches) of every job from the queue, claiming each; the
file-triggered services stay the fallback. Run on the embedded platform's model of exposed
services, as on a real cluster, and under the faults a pool meets there: a replica killed
mid-call, a queued call lost, the object store failing, the whole pool stopped."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
import ROOT

import distrdf_oscar as dro
from distrdf_oscar.client.job import remove_job
from distrdf_oscar.demo import analysis
from distrdf_oscar.platform.embedded import Fault
from distrdf_oscar.protocol import layout
from distrdf_oscar.protocol.messages import Manifest, MapperTrigger
from jobfaults import (
    assert_exact,
    book,
    finish_faults,
    run_acting_on_first,
    run_booked,
    running_jobs,
    signal_holder,
)

pytestmark = pytest.mark.usefixtures("secret_scan")  # conftest.py: these jobs' objects and logs are searched

NPARTITIONS = 12


@pytest.fixture(scope="module")
def pool_cluster():
    # The warm mode, without its emulated pod start for the file-triggered fallback (test time).
    with dro.LocalCluster(workers=2, mode="warm", startup_delay=0.0, fault_injection=True) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def reference(dimuon_files):
    return tuple(result.GetValue() for result in book(ROOT.RDataFrame("Events", dimuon_files)))


def served(executor) -> int:
    return sum(worker.served for worker in executor.pool_workers())


def wait_for_served(executor, count: int, timeout: float = 15.0) -> int:
    """The pool's served count once it reaches ``count`` (heartbeats come every few seconds)."""
    deadline = time.monotonic() + timeout
    while (total := served(executor)) < count and time.monotonic() < deadline:
        time.sleep(0.5)
    return total


@pytest.mark.parametrize(
    "reduction", [dro.TreeReduction(fan_in=2), dro.CoordinatedReduction()], ids=["tree2", "coordinated"]
)
def test_pool_workers_serve_many_calls_and_start_no_oscar_job(
    pool_cluster, dimuon_files, reference, reduction
):
    executor = pool_cluster.executor(reduction=reduction, progress=False, ranges_per_call=1)
    workers = {w.worker for w in executor.pool_workers()}
    before = served(executor)
    results = book(ROOT.RDataFrame("Events", dimuon_files, executor=executor, npartitions=NPARTITIONS))
    assert_exact(tuple(result.GetValue() for result in results), reference)
    job = executor.last_job
    assert job.pool
    # No OSCAR job at all: the mappers, the tree's merges (inline), the coordinator and its batches
    # all ran in the two long-lived workers.
    assert job.functions == {}
    # Coordinated: the batches taken from the queue, all but the last, which its coordinator merges
    # (unless a worker that saw it queued claims it first, which counts it as served).
    launched = sum(1 for item in job.tracker.expected if item.kind == "launch")
    calls = NPARTITIONS + max(0, launched - 1)
    assert wait_for_served(executor, before + calls) - before in (
        (calls, calls + 1) if launched else (calls,)
    )
    assert {w.worker for w in executor.pool_workers()} == workers  # the same processes throughout


def _settled_served(executor) -> int:
    """The pool's served count once two heartbeats in a row report the same (the last calls of an
    earlier job are counted a heartbeat late)."""
    from distrdf_oscar.functions.pool import HEARTBEAT_PERIOD

    previous, deadline = -1, time.monotonic() + 30
    while (count := served(executor)) != previous and time.monotonic() < deadline:
        previous = count
        time.sleep(HEARTBEAT_PERIOD * 1.5)
    return count


def test_a_claimed_call_is_never_computed_again(pool_cluster):
    """A queued call whose claim is taken (computed, or being computed, elsewhere) is dropped."""
    executor = pool_cluster.executor(progress=False)
    storage = executor.storage
    keys = layout.JobKeys(layout.new_job_id())
    storage.put_bytes(keys.manifest, Manifest(job=keys.job_id, created=time.time(), plan={}).to_json())
    try:
        before = _settled_served(executor)
        assert storage.put_if_absent(keys.claim(0, 1), b"someone else")
        output = keys.partial(0, 1)
        offer = MapperTrigger(keys.job_id, 0, "", keys.mapper_payload, output, claim=keys.claim(0, 1))
        storage.put_bytes(keys.queued(0, 1), offer.to_json())
        deadline = time.monotonic() + 10
        while storage.exists(keys.queued(0, 1)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not storage.exists(keys.queued(0, 1)), "the pool never looked at the offer"
        assert not storage.exists(output)
        assert storage.list(keys.prefix(layout.ERRORS)) == []
        assert _settled_served(executor) == before
    finally:
        remove_job(storage, keys.job_id)


def test_a_pool_that_dies_mid_job_leaves_the_rest_to_the_file_triggered_services(
    pool_cluster, dimuon_files, reference
):
    executor = pool_cluster.executor(
        reduction=dro.TreeReduction(fan_in=2),
        progress=False,
        ranges_per_call=1,
        retry_after=2.0,
        pool_overflow_after=2.0,
    )
    storage = executor.storage
    stopped = threading.Event()

    def stop_when_work_started() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not stopped.is_set():
            if any(storage.list(f"{layout.JOBS}/{job}/claims/") for job in running_jobs(storage)):
                executor.stop_pool()
                stopped.set()
                return
            time.sleep(0.05)

    watcher = threading.Thread(target=stop_when_work_started)
    watcher.start()
    try:
        results = book(ROOT.RDataFrame("Events", dimuon_files, executor=executor, npartitions=NPARTITIONS))
        assert_exact(tuple(result.GetValue() for result in results), reference)
    finally:
        stopped.set()
        watcher.join()
        executor.start_pool(pool_cluster.workers, wait=120)  # as the module's other tests expect it
    job = executor.last_job
    assert job.pool
    assert job.functions.get("mapper"), "no file-triggered mapper took over from the stopped pool"


def test_the_dimuon_analysis_in_pool_mode_is_identical(pool_cluster, dimuon_files):
    reference = analysis.book_dimuon_spectrum(ROOT.RDataFrame("Events", dimuon_files))["spectrum"].GetValue()
    executor = pool_cluster.executor(progress=False)
    spectrum = analysis.book_dimuon_spectrum(
        ROOT.RDataFrame("Events", dimuon_files, executor=executor, npartitions=4)
    )["spectrum"].GetValue()
    assert all(
        spectrum.GetBinContent(i) == reference.GetBinContent(i) for i in range(reference.GetNbinsX() + 2)
    )


def test_a_replica_killed_mid_call_is_replaced_and_its_call_recomputed(pool_cluster, dimuon_files, reference):
    """The worker's heartbeat stops: the client offers its claimed call to the pool again at once
    (not after the quiet spell, here a minute), the surviving worker computes it, and the
    Deployment restarts the replica."""
    executor = pool_cluster.executor(
        reduction=dro.TreeReduction(fan_in=2), progress=False, ranges_per_call=1, retry_after=60.0
    )
    storage = executor.storage
    before = {w.worker for w in executor.pool_workers()}
    killed: list[int] = []
    result, _ = run_acting_on_first(
        executor,
        NPARTITIONS,
        dimuon_files,
        f"{layout.JOBS}/{{job}}/claims/",
        signal_holder(storage, signal.SIGKILL, killed),
    )
    assert killed, "no claim was seen to kill its holder"
    assert_exact(result, reference)
    job = executor.last_job
    assert job.functions == {}, "the pool did not recompute the killed worker's call"
    assert all(item.trigger.attempts == 0 for item in job.tracker.expected), "a quiet-spell retry was needed"
    # A replacement replica imports ROOT and reports: the pool is whole again.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        now = {w.worker for w in executor.pool_workers()}
        if len(now) == pool_cluster.workers and now != before:
            break
        time.sleep(0.5)
    now = {w.worker for w in executor.pool_workers()}
    assert len(now) == pool_cluster.workers
    assert not any(str(killed[0]) in w.split("-") for w in now)


def test_a_worker_killed_while_coordinating_is_replaced_at_once(pool_cluster, dimuon_files, reference):
    """The worker running a coordinated job's coordinator dies: the client queues the coordinator
    again as soon as the heartbeat lapses; the new one adopts the batches already launched (and a
    batch whose claimer died is claimed again), well before the quiet spell (here a minute)."""
    executor = pool_cluster.executor(
        reduction=dro.CoordinatedReduction(),
        progress=False,
        ranges_per_call=1,
        retry_after=60.0,
        pool_overflow_after=120.0,
    )
    storage = executor.storage
    killed: list[int] = []
    result, _ = run_acting_on_first(
        executor,
        NPARTITIONS,
        dimuon_files,
        f"{layout.JOBS}/{{job}}/claims/coordinator",
        signal_holder(storage, signal.SIGKILL, killed),
    )
    assert killed, "no coordinator claim was seen"
    assert_exact(result, reference)
    job = executor.last_job
    assert job.functions == {}, "a file-triggered function had to step in"
    assert all(item.trigger.attempts == 0 for item in job.tracker.expected), "a quiet-spell retry was needed"
    deadline = time.monotonic() + 120  # the replacement replica imports ROOT and reports
    while len(executor.pool_workers()) < pool_cluster.workers and time.monotonic() < deadline:
        time.sleep(0.5)


def test_a_stalled_worker_is_overtaken_and_its_late_copy_changes_nothing(
    pool_cluster, dimuon_files, reference
):
    """A worker that stops mid-call (SIGSTOP: a node starved or swapping) stops its heartbeat too:
    its call is offered to the pool again and computed by the other worker; resumed, the stalled
    worker finishes its copy, which loses the claim on the output and leaves nothing behind."""
    executor = pool_cluster.executor(
        reduction=dro.TreeReduction(fan_in=2), progress=False, ranges_per_call=1, retry_after=60.0
    )
    storage = executor.storage
    stopped: list[int] = []
    try:
        result, _ = run_acting_on_first(
            executor,
            NPARTITIONS,
            dimuon_files,
            f"{layout.JOBS}/{{job}}/claims/",
            signal_holder(storage, signal.SIGSTOP, stopped),
        )
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
    assert stopped, "no claim was seen to stop its holder"
    assert_exact(result, reference)
    job = executor.last_job
    assert job.functions == {}
    assert all(item.trigger.attempts == 0 for item in job.tracker.expected), "a quiet-spell retry was needed"
    deadline = time.monotonic() + 30  # the resumed copy withdraws whatever it writes for the ended job
    while [k for k in storage.list("") if layout.job_of_key(k) == job.job_id] and time.monotonic() < deadline:
        time.sleep(0.5)
    assert [k for k in storage.list("") if layout.job_of_key(k) == job.job_id] == []


def test_a_lost_queued_call_is_computed_by_the_file_triggered_mapper(pool_cluster, dimuon_files, reference):
    """An offer gone before any worker claimed it (a lost object): the client's retry covers it."""
    executor = pool_cluster.executor(
        reduction=dro.TreeReduction(fan_in=4), progress=False, ranges_per_call=1, retry_after=2.0
    )
    storage = executor.storage
    last = layout.interval_stem(
        NPARTITIONS - 1, NPARTITIONS
    )  # workers take the queue in order: last is taken last
    result, dropped = run_acting_on_first(
        executor,
        NPARTITIONS,
        dimuon_files,
        f"{layout.QUEUE}/{{job}}/{last}",
        lambda key: storage.delete([key]),
    )
    assert dropped, "the last offer was never seen"
    assert_exact(result, reference)
    job = executor.last_job
    lost = next(
        item
        for item in job.tracker.expected
        if item.key == layout.JobKeys(job.job_id).partial(NPARTITIONS - 1, NPARTITIONS)
    )
    assert lost.trigger.attempts >= 1, "the lost call was never retried"
    assert job.functions.get("mapper"), "no file-triggered mapper ran"
    assert [k for k in storage.list("") if layout.job_of_key(k) == job.job_id] == []


def test_a_pool_job_through_an_object_store_outage_is_exact(pool_cluster, dimuon_files, reference):
    """The object store answers 503 for a while mid-job: workers, coordinator and client wait it out."""
    executor = pool_cluster.executor(
        reduction=dro.CoordinatedReduction(), progress=False, ranges_per_call=1, retry_after=3.0
    )
    outage = Fault.storage_outage(seconds=2.5, mode="503", after=0.5)
    pool_cluster.platform.inject(outage)
    since = time.monotonic()
    try:
        result = run_booked(executor, NPARTITIONS, dimuon_files)
    finally:
        fired = finish_faults(pool_cluster, [outage], since)
    assert fired[0].fired, "the outage never began"
    assert_exact(result, reference)
    assert len(executor.pool_workers()) == pool_cluster.workers
