"""A function whose process dies (a segfault or std::abort in user C++) is reported as a crash:
the service script (cold) or the warm pool sees it, the task is retried once, and the client
raises RemoteError naming the signal, long before any loss-detection timeout."""

from __future__ import annotations

import re
import time

import pytest
import ROOT

import distrdf_oscar as dro
from distrdf_oscar.client.recovery import RetryPolicy, Tracker
from distrdf_oscar.functions.crash import describe, summary
from distrdf_oscar.protocol import layout
from distrdf_oscar.protocol.messages import ErrorMarker, MapperTrigger
from distrdf_oscar.protocol.plan import TreeReduction

pytestmark = pytest.mark.usefixtures("secret_scan")

CRASHES = {
    "SIGSEGV": "if (rdfentry_ == 7) { volatile int* p = nullptr; *p = 1; } return true;",
    "SIGABRT": "if (rdfentry_ == 7) std::abort(); return true;",
}


@pytest.mark.parametrize("mode", ["cold", "prestarted"])
@pytest.mark.parametrize("signal_name", sorted(CRASHES))
def test_a_crashing_filter_fails_the_job_naming_the_crash(request, dimuon_files, mode, signal_name):
    cluster = request.getfixturevalue(f"{mode}_cluster")
    # Loss detection would take 10 minutes: only the crash report can end this job in time.
    executor = cluster.executor(progress=False, retry_after=600.0, ranges_per_call=1)
    df = ROOT.RDataFrame("Events", dimuon_files, executor=executor, npartitions=2)
    start = time.monotonic()
    with pytest.raises(dro.RemoteError) as info:
        df.Filter(CRASHES[signal_name]).Count().GetValue()
    elapsed = time.monotonic() - start
    message = str(info.value)
    job_id = executor.last_job.job_id
    assert re.match(
        rf"job {job_id}: the mapper of range 0 \([^)]+\) crashed with {signal_name} \(twice\)\n"
        rf"  its function's logs: distrdf-oscar logs {job_id} --task mapper-000000_000001-1\n",
        message,
    ), message
    assert info.value.marker.error.startswith(f"the mapper process crashed with {signal_name}")
    assert "*** Break ***" in message, "the report shows ROOT's account of the crash"
    (trigger,) = [
        t
        for t in {id(e.trigger): e.trigger for e in executor.last_job.tracker.expected}.values()
        if t.attempts
    ]
    assert trigger.label == "mapper of range 0"
    assert trigger.attempts == 1, "a crash is retried once"
    print(f"{mode} {signal_name}: RemoteError after {elapsed:.1f} s")


def test_exit_statuses_name_the_signal():
    assert describe(139) == "SIGSEGV"  # a shell's 128 + 11
    assert describe(-6) == "SIGABRT"  # subprocess' convention
    assert describe(2) == "exit status 2"
    # ROOT's handler exits with 128 + its own index (1 for a segfault): its report decides.
    assert describe(129, " *** Break *** segmentation violation\n") == "SIGSEGV"
    assert describe(133, " *** Break *** abort\n") == "SIGABRT"


def test_the_summary_keeps_the_output_before_the_crash_and_the_frames_root_points_at():
    frames = [f"#{i} 0x0000 in frame{i} ()" for i in range(7, 12)]
    output = "\n".join(
        [
            "user line 1",
            "user line 2",
            " *** Break *** segmentation violation",
            "",
            "=" * 59,
            "There was a crash.",
            "This is the entire stack trace of all threads:",
            "=" * 59,
            *[f"#{i} 0x0000 in all{i} ()" for i in range(40)],
            "=" * 59,
            "",
            "The lines below might hint at the cause of the crash. If you see question",
            "more text",
            "=" * 59,
            *frames,
            "=" * 59,
            "",
        ]
    )
    assert summary(output).splitlines() == [
        "user line 1",
        "user line 2",
        "*** Break *** segmentation violation",
        *frames,
    ]
    plain = "\n".join(f"line {i}" for i in range(100))
    assert summary(plain).splitlines() == [f"line {i}" for i in range(60, 100)]
    assert summary("") == "(no output captured)"


def _crash_marker(keys: layout.JobKeys, output: str, retry: int) -> ErrorMarker:
    trigger = keys.retry(layout.TRIGGERS, "000000_000001", retry) if retry else keys.trigger(0)
    return ErrorMarker(
        job=keys.job_id,
        who=layout.JobKeys.reporter("mapper", trigger),
        service="svc",
        trigger=trigger,
        output=output,
        retryable=True,
        error="the mapper process crashed with SIGSEGV",
        traceback="*** Break *** segmentation violation",
        crash="SIGSEGV",
    )


def test_a_crash_is_retried_once_however_many_retries_are_allowed():
    keys = layout.JobKeys("j20261124120000-0123abcd")
    job_plan = TreeReduction(fan_in=2).describe(2, keys.job_id)
    triggers = {
        r: MapperTrigger(
            keys.job_id, r, "", keys.mapper_payload, job_plan.mapper_output((r, r + 1))
        ).to_json()
        for r in range(2)
    }
    tracker = Tracker.for_plan(keys, job_plan, triggers, RetryPolicy(retries=5))
    output = job_plan.mapper_output((0, 1))
    trigger = tracker.on_error("e0", _crash_marker(keys, output, 0))
    assert trigger is not None
    assert trigger.label == "mapper of range 0"
    with pytest.raises(
        dro.RemoteError,
        match=r"^job j20261124120000-0123abcd: the mapper of range 0 crashed with SIGSEGV \(twice\)\n"
        r"  its function's logs: distrdf-oscar logs j20261124120000-0123abcd --task mapper-000000_000001-1\n",
    ):
        tracker.on_error("e1", _crash_marker(keys, output, 1))
