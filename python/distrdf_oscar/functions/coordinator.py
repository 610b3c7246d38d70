"""Coordinator: batches arriving partials by the job's plan, first come first served.

An item is a mapper partial or an earlier batch's result, both under the
job's ``partials/`` folder. Batch ``i`` is launched (by writing its batch
file, which triggers a batch reducer) as soon as ``plan[i]`` unconsumed items
exist; the last batch writes the final result. The coordinator stops when
every batch is launched, or when the client has ended the job.

A coordinator may run twice (a retry after it was killed, or a straggler):
batch files are written by claims, so each batch is defined exactly once, and
a coordinator that loses a claim, or starts late, adopts the batch already
written. Every partial is thereby consumed exactly once.
"""

from __future__ import annotations

import time

from .. import layout
from ..messages import Batch
from ..plan import CoordinatedPlan, expect_plan
from . import context

POLL_SECONDS = 0.1


def _adopt(ctx: context.FunctionContext, job_plan: CoordinatedPlan, index: int) -> list[str] | None:
    """The inputs of batch ``index`` if an earlier copy already launched it."""
    if not ctx.storage.exists(job_plan.batch_file(index)):
        return None
    return list(Batch.from_json(ctx.storage.get_bytes(job_plan.batch_file(index))).inputs)


def run(ctx: context.FunctionContext, job_plan: CoordinatedPlan) -> None:
    keys = layout.JobKeys(job_plan.job)
    batches = job_plan.sizes
    deadline = time.monotonic() + job_plan.coordinator_timeout
    watch = ctx.storage.arrivals(keys.prefix(layout.PARTIALS), job_plan.items())
    arrived: list[str] = []
    consumed: set[str] = set()
    launched = 0
    while launched < len(batches) and (taken := _adopt(ctx, job_plan, launched)) is not None:
        consumed.update(taken)
        launched += 1
    while launched < len(batches):
        available = [k for k in arrived if k not in consumed]
        if len(available) >= batches[launched]:
            take = available[:batches[launched]]
            batch = Batch(job=keys.job_id, index=launched, inputs=tuple(take), output=job_plan.batch_output(launched))
            ctx.task_output = job_plan.batch_file(launched)
            outcome = ctx.publish(keys.job_id, job_plan.batch_file(launched), data=batch.to_json(), claim=True)
            if outcome == context.ENDED:
                return
            if outcome == context.TAKEN:  # another copy of the coordinator launched it first
                take = _adopt(ctx, job_plan, launched) or []
            consumed.update(take)
            launched += 1
            continue
        if time.monotonic() > deadline:
            raise TimeoutError(f"coordinator gave up after launching {launched} of {len(batches)} batches")
        if not ctx.job_alive(keys.job_id):
            return
        time.sleep(POLL_SECONDS)
        arrived.extend(watch.poll())


def main() -> int:
    return context.serve("coordinator", lambda ctx: run(ctx, expect_plan(ctx.read_input(), CoordinatedPlan,
                                                                  f"coordinator triggered by {ctx.key}")))
