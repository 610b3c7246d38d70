"""Tree reducer: triggered by every new tree partial; merges its group once complete.

The last member of a group to arrive always sees the whole group, so with
at-least-once triggers every group is merged. A reducer that finds its
group's output already present skips the work (duplicate trigger).
"""

from __future__ import annotations

import json

from .. import layout, plan
from . import context
from .merging import merge_keys


def run(ctx: context.FunctionContext) -> None:
    job_id = layout.job_of_key(ctx.key)
    member = layout.parse_interval(ctx.key)
    if job_id is None or member is None:
        raise ValueError(f"tree reducer triggered by unexpected object {ctx.key!r}")
    keys = layout.JobKeys(job_id)
    job_plan = json.loads(ctx.storage.get_bytes(keys.plan))
    group = plan.tree_parent(job_plan, member)
    if group is None:
        return
    interval = (group[0][0], group[-1][1])
    is_root = interval == (0, job_plan["npartitions"])
    output = keys.result if is_root else keys.tree_partial(*interval)
    present = set(ctx.storage.list(keys.prefix(layout.TREE_PARTIALS)))
    members = [keys.tree_partial(*m) for m in group]
    if not all(m in present for m in members) or output in present:
        return
    merge_keys(ctx, job_id, members, output)


def main() -> int:
    return context.serve("reducer", run)
