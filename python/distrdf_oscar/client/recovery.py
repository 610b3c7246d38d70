"""What a job expects to appear, and what the client does when something does not.

OSCAR does not retry, MinIO's webhook can lose or repeat events, and a killed
function leaves no trace. So the client lists every object the job must
produce (each range's partial, each reduction, the coordinator's batch files,
the result), notices what is overdue, and writes a *retry trigger* for it: a
new object in the input folder of the service that produces it, which
invokes that service again. Every output is written by a claim (first copy
wins), so a retry racing a slow copy is harmless.

When is something overdue? The job observes when outputs appear. Once it has
been quiet (no new output) for ``max(retry_after, retry_factor x the longest
quiet spell seen so far)``, every expected output whose inputs are all present
is overdue (a spell that ended only after a retry is not counted: it measured
a loss, not how long the work takes). Each further retry of the same task waits twice as long. A task
may be retried ``retries`` times; then the job fails with an error naming it.

The platform is observed too: OSCAR lists each service's functions with their
status. When an output has been due for ``IDLE_GRACE`` seconds and a listing
taken after that shows no function of the service that produces it pending,
suspended or running, nothing is going to produce it (its event was lost, or
its function died) and it is retried at once. A busy service (a straggler,
another job's functions), or a listing that cannot be trusted (see
``OSCARExecutor``), falls back to the quiet-spell rule.
"""

from __future__ import annotations

import base64
import logging
import pickle
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..protocol import layout, plan, root_errors
from ..protocol.messages import ErrorMarker, MapperTrigger

log = logging.getLogger(__name__)

# Seconds an output must have been due, and its trigger written, before an idle service counts as a
# loss: more than a storage event takes to reach OSCAR and show up as a pending function.
IDLE_GRACE = 2.0


class RemoteError(RuntimeError):
    """A function of the job failed. The message's first line names the task and the cause, the
    next the command that prints the function's logs; its remote traceback follows, without cppyy's
    overload listing: ``full_text`` is the message with it, ``marker`` the function's report."""

    def __init__(self, message: str, full_text: str | None = None, marker: ErrorMarker | None = None) -> None:
        super().__init__(message)
        self.full_text = message if full_text is None else full_text
        self.marker = marker


class JobTimeout(TimeoutError):
    """Something the job needs never appeared, even after the allowed retries."""


class JobRemoved(RuntimeError):
    """The job's objects were removed from storage while its client waited."""


@dataclass
class RetryPolicy:
    retries: int = 3  # retries per task (range, reduction, coordinator) before the job fails
    retry_after: float = 60.0  # seconds: the shortest quiet spell that counts as a loss
    retry_factor: float = 3.0  # a loss is a quiet spell this many times the longest one seen

    def __post_init__(self) -> None:
        if isinstance(self.retries, bool) or not isinstance(self.retries, int) or self.retries < 0:
            raise ValueError(f"retries must be a non-negative integer, got {self.retries!r}")
        if self.retry_after <= 0 or self.retry_factor < 1:
            raise ValueError("retry_after must be positive and retry_factor at least 1")


@dataclass(eq=False)
class Trigger:
    """How to make a service run again for one task: a retry object in its input folder."""

    folder: str
    name: str
    body: bytes
    label: str  # for messages, e.g. "mapper of range 3"
    attempts: int = 0  # retries written so far
    last_fired: float = 0.0  # monotonic time of the original trigger or the latest retry
    last_error: ErrorMarker | None = None
    crashes: int = 0  # reports of its process dying


@dataclass
class Expected:
    """An object the job must produce, the objects it needs first, and what retries it."""

    key: str
    needs: Callable[[set[str]], bool]
    trigger: Trigger
    kind: str = (
        "merge"  # "mapper" (a range's partial), "merge" (a reduction's output), "launch" (a batch file)
    )
    due_since: float | None = None  # when its inputs were first all present


@dataclass
class Tracker:
    keys: layout.JobKeys
    policy: RetryPolicy
    expected: list[Expected] = field(default_factory=list)
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        self._last_progress = self.clock()
        self._longest_quiet = 0.0
        self._retried_in_spell = False
        self._present: set[str] = set()
        self._observed = False  # whether observe() has looked at which inputs are present
        self._handled_markers: set[str] = set()

    # -- the plan's expectations ---------------------------------------------------

    @classmethod
    def for_plan(
        cls,
        keys: layout.JobKeys,
        job_plan: plan.JobPlan,
        mapper_triggers: dict[int, bytes],
        policy: RetryPolicy,
        clock: Callable[[], float] = time.monotonic,
    ) -> Tracker:
        tracker = cls(keys, policy, clock=clock)
        now = clock()
        for _, body in sorted(mapper_triggers.items()):
            message = MapperTrigger.from_json(body)
            lo, hi = message.interval
            label = f"mapper of range {lo}" if hi == lo + 1 else f"mapper of ranges {lo}-{hi - 1}"
            trigger = Trigger(layout.TRIGGERS, layout.interval_stem(lo, hi), body, label, last_fired=now)
            tracker.expected.append(Expected(message.output, lambda present: True, trigger, kind="mapper"))
        # One trigger per retry object: the coordinator's restarts every batch launch it owes.
        triggers: dict[tuple[str, str], Trigger] = {}
        for item in job_plan.expectations():
            trigger = triggers.setdefault(
                (item.retry_folder, item.retry_name),
                Trigger(item.retry_folder, item.retry_name, item.retry_body, item.label, last_fired=now),
            )
            tracker.expected.append(
                Expected(item.output, _enough_present(item.inputs, item.need), trigger, kind=item.kind)
            )
        return tracker

    # -- observation ---------------------------------------------------------------

    def observe(self, present: set[str]) -> None:
        """Record which expected objects exist now; new ones are progress."""
        now = self.clock()
        new = {e.key for e in self.expected if e.key in present} - self._present
        if new:
            if not self._retried_in_spell:  # a spell that needed a retry measured a loss, not the work
                self._longest_quiet = max(self._longest_quiet, now - self._last_progress)
            self._retried_in_spell = False
            self._last_progress = now
            self._present |= new
        elif self._observed:
            return  # nothing new: no input became present
        self._observed = True
        for item in self.expected:
            if item.due_since is None and item.key not in self._present and item.needs(self._present):
                item.due_since = now

    @property
    def done(self) -> bool:
        return self.keys.result in self._present

    def counts(self) -> tuple[int, int]:
        """(mapper outputs present, reduction outputs present)."""
        done = [e.kind for e in self.expected if e.key in self._present]
        return done.count("mapper"), done.count("merge")

    def present(self, key: str) -> bool:
        """Whether the expected object ``key`` has been seen."""
        return key in self._present

    def pending(self) -> tuple[int, int]:
        """(tasks retried at least once, tasks whose last attempt reported an error), of those
        not done yet."""
        waiting = {id(e.trigger): e.trigger for e in self.expected if e.key not in self._present}
        return (
            sum(1 for t in waiting.values() if t.attempts),
            sum(1 for t in waiting.values() if t.last_error is not None),
        )

    def mapper_outputs(self) -> list[str]:
        return [e.key for e in self.expected if e.kind == "mapper" and e.key in self._present]

    def quiet_limit(self) -> float:
        return max(self.policy.retry_after, self.policy.retry_factor * self._longest_quiet)

    # -- decisions -----------------------------------------------------------------

    def overdue(
        self, idle: Callable[[str, float], bool] | None = None, exists: Callable[[str], bool] | None = None
    ) -> list[Trigger]:
        """Triggers to fire again now; raises JobTimeout for a task out of retries.

        ``idle(folder, since)`` tells whether a listing of the service watching ``folder``,
        taken at ``since`` (this clock) or later, shows no function pending, suspended or
        running (False when no such listing can be had now; asked only when it can make a
        difference); ``exists(key)``
        looks once more before an output is declared lost, as it may have appeared since
        the listing (its function finished in between)."""
        now = self.clock()
        due: list[Trigger] = []
        idle_cache: dict[tuple[str, float], bool] = {}
        for item in self.expected:
            trigger = item.trigger
            if item.key in self._present or any(t is trigger for t in due) or not item.needs(self._present):
                continue
            due_since = item.due_since if item.due_since is not None else now
            waited = now - max(self._last_progress, trigger.last_fired)
            lost = waited > self.quiet_limit() * 2**trigger.attempts
            since = max(due_since, trigger.last_fired) + IDLE_GRACE
            if not lost and idle is not None and now > since:
                if (trigger.folder, since) not in idle_cache:
                    idle_cache[(trigger.folder, since)] = idle(trigger.folder, since)
                lost = idle_cache[(trigger.folder, since)]
            if not lost or (exists is not None and exists(item.key)):
                continue
            if trigger.attempts >= self.policy.retries:
                raise self._exhausted(trigger, item.key, waited)
            due.append(trigger)
        return due

    def _exhausted(self, trigger: Trigger, key: str, waited: float) -> Exception:
        tries = f"{trigger.attempts + 1} attempt(s)"
        if trigger.last_error is not None:
            return remote_error(self.keys.job_id, trigger.last_error, f"after {tries}", trigger)
        hint = "retries are disabled (retries=0)" if self.policy.retries == 0 else f"after {tries}"
        return JobTimeout(
            f"job {self.keys.job_id}: the {trigger.label} produced nothing ({key} missing) {hint}; "
            f"waited {waited:.0f} s after the last progress. Its function was killed, never invoked "
            f"(lost storage event) or is stuck: `{logs_command(self.keys.job_id)}` prints the job's logs."
        )

    def fire(self, trigger: Trigger, write: Callable[[str, bytes], None]) -> None:
        trigger.attempts += 1
        log.warning(
            "job %s: triggering the %s again (retry %d of %d; %.1f s since the last progress)",
            self.keys.job_id,
            trigger.label,
            trigger.attempts,
            self.policy.retries,
            self.clock() - self._last_progress,
        )
        trigger.last_fired = self.clock()
        self._retried_in_spell = True
        write(self.keys.retry(trigger.folder, trigger.name, trigger.attempts), trigger.body)

    def on_error(self, marker_key: str, marker: ErrorMarker) -> Trigger | None:
        """A function reported a failure: the trigger to retry it, or raise RemoteError."""
        self._handled_markers.add(marker_key)
        item = next((e for e in self.expected if e.key == marker.output), None)
        if item is not None and item.key in self._present:
            return None  # another copy already produced it
        if item is None and marker.retryable:
            # A function that failed before it knew its task (a tree reducer reading the plan):
            # whatever it left undone becomes overdue and is retried like a lost event.
            log.warning(
                "job %s: %s failed (%s); its work is retried when overdue",
                self.keys.job_id,
                marker.who,
                marker.error,
            )
            return None
        if item is None or not marker.retryable:
            raise remote_error(self.keys.job_id, marker, task=item.trigger if item else None)
        if marker.crash is not None:
            # A crash is most often deterministic (the user's code on this range): one retry
            # tells a bad node from a bad range.
            item.trigger.crashes += 1
            if item.trigger.crashes > 1:
                raise remote_error(self.keys.job_id, marker, "twice", item.trigger)
        item.trigger.last_error = marker
        if item.trigger.attempts >= self.policy.retries:
            raise remote_error(
                self.keys.job_id, marker, f"after {item.trigger.attempts + 1} attempt(s)", item.trigger
            )
        return item.trigger

    def new_markers(self, markers: list[str]) -> list[str]:
        return [k for k in sorted(markers) if k not in self._handled_markers]


def _enough_present(keys: tuple[str, ...], need: int) -> Callable[[set[str]], bool]:
    return lambda present: sum(1 for key in keys if key in present) >= need


def logs_command(job_id: str, task: str | None = None) -> str:
    """The command that prints the logs of a job's functions, or of one task's."""
    return f"distrdf-oscar logs {job_id}" + (f" --task {task}" if task else "")


def remote_error(
    job_id: str, marker: ErrorMarker, attempts: str = "", task: Trigger | None = None
) -> RemoteError:
    """The error for a function's report: ``task`` (its trigger, when the client knows it) names
    where it failed, the marker's ``who`` the function whose logs tell more."""
    where = f"job {job_id}: " + (f"the {task.label}{_reads(task.body)}" if task else marker.who)
    if marker.crash is not None:
        # The report says "the mapper process crashed with SIGSEGV", and maybe more after it.
        standard = re.match(rf"the \S+ process crashed with {re.escape(marker.crash)}", marker.error)
        more = marker.error[standard.end() :] if standard else f": {marker.error}"
        times = " (twice)" if attempts == "twice" else f" ({attempts})" if attempts else ""
        head, section = f"{where} crashed with {marker.crash}{more}{times}", "last lines of its output"
    else:
        tries = f" {attempts}" if attempts else ""
        head, section = f"{where} failed{tries}: {root_errors.cause(marker.error)}", "remote traceback"
    lead = (
        f"{head}\n  its function's logs: {logs_command(job_id, marker.who)}\n"
        f"--- {section} ({marker.service}) ---\n"
    )
    return RemoteError(lead + root_errors.trim(marker.traceback), lead + marker.traceback, marker)


def _reads(trigger_body: bytes) -> str:
    """What a mapper call reads, from DistRDF's ranges in its trigger: " (entries [lo, hi))" of an
    empty source, " (file f.root)" of a dataset's; "" for another task, or another kind of range."""
    try:
        message = MapperTrigger.from_json(trigger_body)
        ranges = [pickle.loads(base64.b64decode(r)) for r in (message.range, *message.more)]
        first, last = ranges[0], ranges[-1]
        if hasattr(first, "start"):
            return f" (entries [{first.start}, {last.end}))"
        names = [
            name.rsplit("/", 1)[-1] for name in first.filenames[first.first_file_idx : last.last_file_idx]
        ]
        share = (first.first_tree_start_perc, last.last_tree_end_perc)
    except Exception:  # noqa: BLE001 - ranges this client did not make (a test's): the label stays plain
        return ""
    if len(names) > 1:
        return f" ({len(names)} files, {names[0]} to {names[-1]})"
    return (
        f" (file {names[0]})"
        if share == (0, 1)
        else f" ({share[0]:.0%} to {share[1]:.0%} of file {names[0]})"
    )
