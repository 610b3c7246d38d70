"""Tree reducer: triggered by every new tree partial; merges its group once complete.

The last member of a group to arrive always sees the whole group, so with
at-least-once triggers every group is merged. In an inline tree
(plan.TreePlan.inline, the default) the writer of a node merges upwards itself
and this service runs only for the client's retries. A reducer that finds its
group's output already present skips the work (duplicate trigger). When a
trigger was lost, the client writes a retry trigger naming the group's
interval, and the reducer merges that group.
"""

from __future__ import annotations

from ..protocol import layout
from ..protocol.messages import TreeRetry
from ..protocol.plan import Interval, TreePlan, expect_plan
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


def merge_group(
    ctx: context.FunctionContext,
    job_plan: TreePlan,
    group: list[Interval],
    written: str | None = None,
    claim: bool = True,
    staged: dict[str, str] | None = None,
) -> bool:
    """Merge ``group`` if all its members exist and its output does not; True if this call wrote
    the output. ``written`` is a member known to exist (the one that triggered us, or that we
    wrote); ``staged`` maps members on disk already to their paths (merging.merge_keys).

    Members that arrive together each see the group complete: the first to ``claim`` it merges,
    the others stop (no duplicate merge, nor a late copy of the result after the job). A retry
    the client writes (``claim=False``) merges regardless: the claimer may have died."""
    output = job_plan.output(group)
    members = [job_plan.node(m) for m in group]
    # One lookup per member: O(fan-in), whatever the job's size.
    if not all(m == written or ctx.storage.exists(m) for m in members) or ctx.storage.exists(output):
        return False
    keys = layout.JobKeys(job_plan.job)
    if claim and not ctx.storage.put_if_absent(
        keys.group_claim(group[0][0], group[-1][1]), ctx.worker.encode()
    ):
        return False
    return merge_keys(ctx, job_plan.job, members, output, staged=staged) == context.WRITTEN


def merge_upwards(
    ctx: context.FunctionContext, job_plan: TreePlan, node: Interval, path: str | None = None
) -> None:
    """Inline tree: ``node`` was just written by us (from ``path``, if still on disk); merge every
    group that completes, up to the root. Of two writers racing for a group, the one whose merge
    wins goes on."""
    staged = {job_plan.node(node): path} if path else None
    while (group := job_plan.parent(node)) is not None and merge_group(
        ctx, job_plan, group, job_plan.node(node), staged=staged
    ):
        node, staged = (group[0][0], group[-1][1]), None


def run(ctx: context.FunctionContext) -> None:
    job_id = layout.job_of_key(ctx.key)
    if job_id is None:
        raise ValueError(f"tree reducer triggered by unexpected object {ctx.key!r}")
    keys = layout.JobKeys(job_id)
    job_plan = expect_plan(ctx.storage.get_bytes(keys.plan), TreePlan, f"tree reducer triggered by {ctx.key}")
    group = _group(ctx, job_plan)
    retry = layout.parse_retry(ctx.key) is not None
    # The member that triggered us is on disk already: OSCAR's supervisor fetched it.
    staged = None if retry else {ctx.key: ctx.input_path}
    if (
        group is not None
        and merge_group(ctx, job_plan, group, ctx.key, claim=not retry, staged=staged)
        and job_plan.inline
    ):
        merge_upwards(ctx, job_plan, (group[0][0], group[-1][1]))


def main() -> int:
    return context.serve("reducer", run)
