"""Coordinator: batches arriving partials by the job's plan, first come first served.

An item is a mapper partial or an earlier batch's result, both under the
job's ``partials/`` folder. Batch ``i`` is launched (by writing its batch
file, which triggers a batch reducer) as soon as ``plan[i]`` unconsumed items
exist; the last batch writes the final result. The coordinator merges that last
batch itself (``CoordinatedPlan.merged_by_coordinator``: its file goes to the queue,
which starts no function), claiming it first; if it dies doing so, the client's retry
has a batch reducer merge it. The coordinator stops when
every batch is launched (and its own merged), or when the client has ended the job.

A coordinator may run twice (a retry after it was killed, or a straggler):
batch files are written by claims, so each batch is defined exactly once, and
a coordinator that loses a claim, or starts late, adopts the batch already
written. Every partial is thereby consumed exactly once. Where storage ignores conditional
writes, two copies could each win a claim: batches then take the plan's items in order
(``_ready``), so that both define each batch alike.

Its own record (timeline.py: from its start until the last batch was launched, and the CPU its
watching cost) travels in the last batch's output when it merges that batch itself; a
coordinator that does not leaves none.
"""

from __future__ import annotations

import time

from ..protocol import layout
from ..protocol.arrivals import Arrivals
from ..protocol.messages import Batch
from ..protocol.plan import CoordinatedPlan, expect_plan
from ..protocol.timeline import CallRecord
from . import context
from .merging import merge_keys

POLL_SECONDS = 0.1  # while the next batch lacks one item; longer while it lacks more (MAX_POLL)
MAX_POLL = 0.5
ALIVE_EVERY = 1.0  # seconds between looks at the manifest: a pool's coordinator shares its worker's core


def _adopt(ctx: context.FunctionContext, job_plan: CoordinatedPlan, index: int) -> list[str] | None:
    """The inputs of batch ``index`` if an earlier copy already launched it."""
    if not ctx.storage.exists(job_plan.batch_file(index)):
        return None
    return list(Batch.from_json(ctx.storage.get_bytes(job_plan.batch_file(index))).inputs)


def run(ctx: context.FunctionContext, job_plan: CoordinatedPlan) -> None:
    recorder = ctx.recorder("coordinator")
    recorder.mark("ready")
    keys = layout.JobKeys(job_plan.job)
    batches = job_plan.sizes
    deadline = time.monotonic() + job_plan.coordinator_timeout
    watch = Arrivals(ctx.storage, keys.prefix(layout.PARTIALS), job_plan.items())
    arrived: list[str] = []
    consumed: set[str] = set()
    launched = 0
    while launched < len(batches) and (taken := _adopt(ctx, job_plan, launched)) is not None:
        consumed.update(taken)
        launched += 1
    while launched < len(batches):
        if not _launch_next(ctx, job_plan, launched, arrived, consumed, watch, deadline):
            return
        launched += 1
    last = len(batches) - 1
    recorder.mark("computed")
    if job_plan.merged_by_coordinator(last):
        _merge_own(ctx, job_plan, last, recorder.record(job_plan.batch_file(last)))


def _merge_own(ctx: context.FunctionContext, job_plan: CoordinatedPlan, index: int, own: CallRecord) -> None:
    """Merge batch ``index`` here, with ``own`` (the coordinator's record) in its output, unless
    another copy (a retried coordinator, a pool worker) claimed it."""
    key = job_plan.batch_file(index)
    if ctx.storage.exists(job_plan.batch_output(index)):
        return
    if not ctx.storage.put_if_absent(layout.JobKeys(job_plan.job).claim_of(key), ctx.worker.encode()):
        return  # its claimer merges it, or (if it died) the client's retry
    batch = Batch.from_json(ctx.storage.get_bytes(key))
    merge_keys(ctx, batch.job, list(batch.inputs), batch.output, role="batch", carried=(own,))


def _ready(
    job_plan: CoordinatedPlan, index: int, arrived: list[str], consumed: set[str], fixed: bool
) -> list[str] | None:
    """The inputs of batch ``index`` if they are all there, else None. First come first served:
    any ``size`` unconsumed items. ``fixed`` (storage that ignores conditional writes, where two
    copies of the coordinator may both think they launched a batch): the plan's own items in
    order, so that every copy defines each batch alike and no item is merged twice."""
    size = job_plan.sizes[index]
    if fixed:
        start = sum(job_plan.sizes[:index])
        take = list(job_plan.items()[start : start + size])
        return take if set(take) <= set(arrived) else None
    available = [k for k in arrived if k not in consumed]
    return available[:size] if len(available) >= size else None


def _launch_next(
    ctx: context.FunctionContext,
    job_plan: CoordinatedPlan,
    index: int,
    arrived: list[str],
    consumed: set[str],
    watch: Arrivals,
    deadline: float,
) -> bool:
    """Wait for batch ``index``'s items, then write its batch file; False if the job ended."""
    keys = layout.JobKeys(job_plan.job)
    size = job_plan.sizes[index]
    alive_checked = time.monotonic()
    while True:
        take = _ready(job_plan, index, arrived, consumed, fixed=not ctx.storage.conditional_writes)
        if take is not None:
            batch = Batch(
                job=keys.job_id, index=index, inputs=tuple(take), output=job_plan.batch_output(index)
            )
            ctx.task_output = job_plan.batch_file(index)
            outcome = ctx.publish(keys.job_id, job_plan.batch_file(index), data=batch.to_json(), claim=True)
            if outcome == context.ENDED:
                return False
            if outcome == context.TAKEN:  # another copy of the coordinator launched it first
                take = _adopt(ctx, job_plan, index) or []
            consumed.update(take)
            return True
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"coordinator gave up after launching {index} of {len(job_plan.sizes)} batches"
            )
        if time.monotonic() - alive_checked >= ALIVE_EVERY:
            if not ctx.job_alive(keys.job_id):
                return False
            alive_checked = time.monotonic()
        # Each look is a LIST the object store serves while the mappers compute: look less often
        # while several items are still missing (they seldom all arrive at once).
        missing = size - len([k for k in arrived if k not in consumed])
        time.sleep(min(MAX_POLL, POLL_SECONDS * max(1, missing)))
        arrived.extend(watch.poll())


def main() -> int:
    return context.serve(
        "coordinator",
        lambda ctx: run(
            ctx, expect_plan(ctx.read_input(), CoordinatedPlan, f"coordinator triggered by {ctx.key}")
        ),
    )
