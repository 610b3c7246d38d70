"""Tree reducer: triggered by every new tree partial; merges its group once complete.

The last member of a group to arrive always sees the whole group, so with
at-least-once triggers every group is merged. A reducer that finds its
group's output already present skips the work (duplicate trigger). When a
trigger was lost, the client writes a retry trigger naming the group's
interval, and the reducer merges that group.
"""

from __future__ import annotations

import json

from .. import layout, plan
from . import context
from .merging import merge_keys


def _group(ctx: context.FunctionContext, job_plan: dict) -> list[plan.Interval] | None:
    """The group this invocation is about: the one containing the new member, or the retried one."""
    retry = layout.parse_retry(ctx.key)
    if retry is not None:
        wanted = tuple(ctx.read_input_json()["interval"])
        return next((g for g in plan.tree_groups(job_plan["npartitions"], job_plan["fan_in"])
                     if (g[0][0], g[-1][1]) == wanted), None)
    member = layout.parse_interval(ctx.key)
    if member is None:
        raise ValueError(f"tree reducer triggered by unexpected object {ctx.key!r}")
    return plan.tree_parent(job_plan, member)


def run(ctx: context.FunctionContext) -> None:
    job_id = layout.job_of_key(ctx.key)
    if job_id is None:
        raise ValueError(f"tree reducer triggered by unexpected object {ctx.key!r}")
    keys = layout.JobKeys(job_id)
    job_plan = json.loads(ctx.storage.get_bytes(keys.plan))
    group = _group(ctx, job_plan)
    if group is None:
        return
    output = keys.tree_output(group[0][0], group[-1][1], job_plan["npartitions"])
    present = set(ctx.storage.list(keys.prefix(layout.TREE_PARTIALS)))
    members = [keys.tree_partial(*m) for m in group]
    if not all(m in present for m in members) or output in present:
        return
    merge_keys(ctx, job_id, members, output)


def main() -> int:
    return context.serve("reducer", run)
