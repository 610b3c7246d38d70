"""The client's loss detection and retry decisions (recovery.py), on a controlled clock."""

from __future__ import annotations

import pytest

from distrdf_oscar.client.recovery import IDLE_GRACE, JobTimeout, RemoteError, RetryPolicy, Tracker
from distrdf_oscar.protocol import layout
from distrdf_oscar.protocol.messages import ErrorMarker, MapperTrigger
from distrdf_oscar.protocol.plan import CoordinatedReduction, TreeReduction

JOB = layout.JobKeys("j20261124120000-0123abcd")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def tracker(mode: str, n: int, clock: Clock, **policy) -> Tracker:
    reduction = (
        TreeReduction(fan_in=2, inline=False) if mode == "tree" else CoordinatedReduction([2] * (n - 1))
    )
    job_plan = reduction.describe(n, JOB.job_id)
    triggers = {}
    for r in range(n):
        output = job_plan.mapper_output((r, r + 1))
        triggers[r] = MapperTrigger(
            JOB.job_id, r, range="", payload=JOB.mapper_payload, output=output
        ).to_json()
    return Tracker.for_plan(JOB, job_plan, triggers, RetryPolicy(**policy), clock=clock)


def fire_all(t: Tracker, **kwargs) -> list[str]:
    written = []
    for trigger in t.overdue(**kwargs):
        t.fire(trigger, lambda key, body: written.append(key))
    return written


def test_tree_expects_every_partial_group_and_the_result():
    t = tracker("tree", 4, Clock())
    assert [e.key for e in t.expected] == [JOB.tree_partial(r, r + 1) for r in range(4)] + [
        JOB.tree_partial(0, 2),
        JOB.tree_partial(2, 4),
        JOB.result,
    ]


def test_coordinated_expects_batch_files_and_batch_results():
    t = tracker("coordinated", 3, Clock())
    keys = [e.key for e in t.expected]
    # The last batch file goes to the queue: the coordinator merges that batch itself.
    assert keys[3:] == [JOB.batch(0), JOB.batch_result(0), JOB.queued_batch(1), JOB.result]


def test_quiet_spell_longer_than_the_limit_retriggers_only_what_is_due():
    clock = Clock()
    t = tracker("tree", 4, clock, retry_after=5.0, retry_factor=2.0)
    clock.now += 4.0  # the first outputs take 4 s: the limit becomes max(5, 2 x 4) = 8 s
    t.observe({JOB.tree_partial(0, 1), JOB.tree_partial(2, 3), JOB.tree_partial(3, 4)})
    assert t.quiet_limit() == 8.0
    clock.now += 7.9
    assert fire_all(t) == []
    clock.now += 0.2
    # Range 1 is missing; group (2, 4) is due too (its reducer's event was lost); group (0, 2) is not due.
    assert fire_all(t) == [
        JOB.retry(layout.TRIGGERS, "000001_000002", 1),
        JOB.retry(layout.TREE_PARTIALS, "000002_000004", 1),
    ]


def test_each_retry_waits_twice_as_long_and_exhaustion_names_the_task():
    clock = Clock()
    t = tracker("tree", 2, clock, retries=2, retry_after=1.0, retry_factor=1.0)
    t.observe({JOB.tree_partial(0, 1)})
    waits = []
    for _ in range(2):
        start = clock.now
        while not fire_all(t):
            clock.now += 0.25
        waits.append(clock.now - start)
    assert waits[1] == pytest.approx(2 * waits[0], abs=0.3)
    clock.now += 100
    with pytest.raises(
        JobTimeout,
        match=r"mapper of range 1 produced nothing .*000001_000002.root missing.* "
        r"after 3 attempt\(s\)",
    ):
        t.overdue()


def test_retries_disabled():
    clock = Clock()
    t = tracker("tree", 2, clock, retries=0, retry_after=1.0)
    clock.now += 2
    # Nothing arrived: the first task in the plan, range 0's mapper, is the one named.
    with pytest.raises(
        JobTimeout,
        match=rf"^job {JOB.job_id}: the mapper of range 0 produced nothing "
        rf"\({JOB.tree_partial(0, 1)} missing\) retries are disabled "
        r"\(retries=0\); waited 2 s after the last progress\. .*"
        rf"`distrdf-oscar logs {JOB.job_id}` prints the job's logs\.$",
    ):
        t.overdue()


def test_idle_service_is_a_loss_after_the_grace_unless_the_output_just_appeared():
    clock = Clock()
    t = tracker("tree", 2, clock, retry_after=60.0)
    t.observe({JOB.tree_partial(0, 1)})
    asked = []

    def idle(folder, since):
        asked.append((folder, since))
        return True

    clock.now += IDLE_GRACE - 0.1
    assert fire_all(t, idle=idle) == []
    assert asked == []
    clock.now += 0.2
    assert fire_all(t, idle=idle, exists=lambda key: True) == []  # it appeared meanwhile
    assert fire_all(t, idle=idle, exists=lambda key: False) == [
        JOB.retry(layout.TRIGGERS, "000001_000002", 1)
    ]
    # The listing asked for is one taken after the grace that followed the trigger.
    assert asked[0] == (layout.TRIGGERS, 1000.0 + IDLE_GRACE)
    assert (
        fire_all(t, idle=lambda folder, since: False) == []
    )  # a busy service: wait for the quiet-spell rule


def test_a_spell_that_needed_a_retry_does_not_stretch_the_limit():
    clock = Clock()
    t = tracker("tree", 2, clock, retry_after=1.0, retry_factor=2.0)
    clock.now += 1.0
    t.observe({JOB.tree_partial(0, 1)})
    clock.now += 2.5
    assert fire_all(t)
    clock.now += 1.0
    t.observe({JOB.tree_partial(0, 1), JOB.tree_partial(1, 2)})
    assert t.quiet_limit() == 2.0


def marker(output: str | None, retryable: bool) -> ErrorMarker:
    return ErrorMarker(
        job=JOB.job_id,
        who="mapper-000001_000002",
        service="distrdf-mapper",
        trigger=JOB.trigger(1),
        output=output,
        retryable=retryable,
        error="StorageError: boom",
        traceback="Traceback: boom",
    )


def test_transient_function_errors_are_retried_then_reported_with_the_traceback():
    t = tracker("tree", 2, Clock(), retries=1)
    output = JOB.tree_partial(1, 2)
    trigger = t.on_error("e1", marker(output, True))
    assert trigger is not None
    assert trigger.label == "mapper of range 1"
    t.fire(trigger, lambda key, body: None)
    with pytest.raises(RemoteError, match=r"(?s)after 2 attempt\(s\): StorageError: boom.*remote traceback"):
        t.on_error("e2", marker(output, True))
    assert t.new_markers(["e1", "e2", "e3"]) == ["e3"]


def test_errors_in_user_code_are_not_retried():
    t = tracker("tree", 2, Clock())
    # Reported at once: no attempt count, the function's error and its traceback.
    with pytest.raises(
        RemoteError,
        match=rf"^job {JOB.job_id}: the mapper of range 1 failed: StorageError: boom\n"
        rf"  its function's logs: distrdf-oscar logs {JOB.job_id} --task mapper-000001_000002\n"
        r"--- remote traceback \(distrdf-mapper\) ---\nTraceback: boom$",
    ):
        t.on_error("e1", marker(JOB.tree_partial(1, 2), False))


def test_transient_error_before_the_task_is_known_leaves_the_work_to_the_overdue_rule():
    clock = Clock()
    t = tracker("tree", 2, clock)
    # A tree reducer that could not read the plan names no output: not fatal when transient...
    assert t.on_error("e1", marker(None, True)) is None
    # ...its group is retried once due and its service idle, as after a lost event.
    t.observe({JOB.tree_partial(0, 1), JOB.tree_partial(1, 2)})
    clock.now += IDLE_GRACE + 0.1
    assert fire_all(t, idle=lambda folder, since: True, exists=lambda key: False) != []
    # A permanent one still fails the job at once.
    with pytest.raises(RemoteError, match="StorageError: boom"):
        t.on_error("e2", marker(None, False))


def test_error_of_a_copy_whose_task_is_done_is_ignored():
    t = tracker("tree", 2, Clock())
    t.observe({JOB.tree_partial(1, 2)})
    assert t.on_error("e1", marker(JOB.tree_partial(1, 2), True)) is None


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        ({"retries": -1}, r"^retries must be a non-negative integer, got -1$"),
        ({"retries": 1.5}, r"^retries must be a non-negative integer, got 1\.5$"),
        ({"retry_after": 0}, r"^retry_after must be positive and retry_factor at least 1$"),
        ({"retry_factor": 0.5}, r"^retry_after must be positive and retry_factor at least 1$"),
    ],
)
def test_bad_retry_options_are_refused(policy, message):
    with pytest.raises(ValueError, match=message):
        RetryPolicy(**policy)
