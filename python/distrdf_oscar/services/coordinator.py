"""Coordinator: batches arriving partials by the job's plan, first come first served.

An item is a mapper partial or an earlier batch's result, both under the
job's ``partials/`` folder. Batch ``i`` is launched (by writing its batch
file, which triggers a batch reducer) as soon as ``plan[i]`` unconsumed items
exist; the last batch writes the final result. The coordinator stops when
every batch is launched, when the job reports an error, or when the client
has cleaned the job up.
"""

from __future__ import annotations

import json
import time

from .. import layout
from . import context

POLL_SECONDS = 0.1


def run(ctx: context.FunctionContext, job_plan: dict) -> None:
    keys = layout.JobKeys(job_plan["job"])
    # A single partial is "merged" alone, so the final result still comes from a batch reducer.
    batches = job_plan["batches"] or [1]
    deadline = time.monotonic() + float(job_plan.get("coordinator_timeout", 3600))
    arrived: list[str] = []
    consumed: set[str] = set()
    launched = 0
    while launched < len(batches):
        available = [k for k in arrived if k not in consumed]
        if len(available) >= batches[launched]:
            take = available[:batches[launched]]
            consumed.update(take)
            last = launched == len(batches) - 1
            batch = {"job": keys.job_id, "index": launched, "inputs": take,
                     "output": keys.result if last else keys.batch_result(launched)}
            if not ctx.publish(keys.job_id, keys.batch(launched), data=json.dumps(batch).encode()):
                return
            launched += 1
            continue
        if time.monotonic() > deadline:
            raise TimeoutError(f"coordinator gave up after launching {launched} of {len(batches)} batches")
        if ctx.storage.list(keys.prefix(layout.ERRORS)) or not ctx.storage.exists(keys.manifest):
            return
        time.sleep(POLL_SECONDS)
        known = set(arrived)
        arrived.extend(k for k in ctx.storage.list(keys.prefix(layout.PARTIALS)) if k not in known)


def main() -> int:
    return context.serve("coordinator", lambda ctx: run(ctx, ctx.read_input_json()))
