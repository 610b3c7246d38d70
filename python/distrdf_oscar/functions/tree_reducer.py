"""Tree reducer: triggered by every new tree partial; merges its group once complete.

The last member of a group to arrive always sees the whole group, so with
at-least-once triggers every group is merged. A reducer that finds its
group's output already present skips the work (duplicate trigger). When a
trigger was lost, the client writes a retry trigger naming the group's
interval, and the reducer merges that group.
"""

from __future__ import annotations

from .. import layout
from ..messages import TreeRetry
from ..plan import Interval, TreePlan, expect_plan
from . import context
from .merging import merge_keys


def _group(ctx: context.FunctionContext, job_plan: TreePlan) -> list[Interval] | None:
    """The group this invocation is about: the one containing the new member, or the retried one."""
    if layout.parse_retry(ctx.key) is not None:
        return job_plan.group_covering(TreeRetry.from_json(ctx.read_input()).interval)
    member = layout.parse_interval(ctx.key)
    if member is None:
        raise ValueError(f"tree reducer triggered by unexpected object {ctx.key!r}")
    return job_plan.parent(member)


def run(ctx: context.FunctionContext) -> None:
    job_id = layout.job_of_key(ctx.key)
    if job_id is None:
        raise ValueError(f"tree reducer triggered by unexpected object {ctx.key!r}")
    keys = layout.JobKeys(job_id)
    job_plan = expect_plan(ctx.storage.get_bytes(keys.plan), TreePlan, f"tree reducer triggered by {ctx.key}")
    group = _group(ctx, job_plan)
    if group is None:
        return
    output = job_plan.output(group)
    members = [keys.tree_partial(*m) for m in group]
    # One lookup per member (the one that triggered us exists): O(fan-in), whatever the job's size.
    if not all(m == ctx.key or ctx.storage.exists(m) for m in members) or ctx.storage.exists(output):
        return
    merge_keys(ctx, job_id, members, output)


def main() -> int:
    return context.serve("reducer", run)
