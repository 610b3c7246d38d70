"""Shared by the reducers: fetch partials, merge them n-way, place the result."""

from __future__ import annotations

import os
import tempfile

from ..protocol import partial
from ..protocol.timeline import CallRecord
from . import context


def merge_keys(
    ctx: context.FunctionContext,
    job_id: str,
    inputs: list[str],
    output_key: str,
    role: str = "reducer",
    staged: dict[str, str] | None = None,
    carried: tuple[CallRecord, ...] = (),
) -> str | None:
    """Merge the partials at ``inputs`` into the object ``output_key``, unless another copy of
    this task already did; if two copies race, the first to finish wins (a claim). Returns what
    publishing did (context.WRITTEN, TAKEN, ENDED), None when nothing was merged. ``role``
    names the merge in the job's timeline (reducer: a tree's, batch: a coordinated one).
    ``staged`` maps inputs already on disk (the trigger OSCAR's supervisor downloaded) to their
    paths: they are checked against their signature, not downloaded again. ``carried``: records
    of this invocation's earlier work (a coordinator's) that go into the output with the merge's."""
    ctx.task_output = output_key
    if ctx.storage.exists(output_key) or not ctx.job_alive(job_id):
        return None
    recorder = ctx.recorder(role)
    recorder.mark("ready")
    with tempfile.TemporaryDirectory(prefix="dro-merge-") as workdir:
        local = []
        for index, key in enumerate(inputs):
            if staged and key in staged:
                ctx.storage.verify_local(key, staged[key])
                local.append(staged[key])
                continue
            path = os.path.join(workdir, f"{index:06d}.root")
            ctx.storage.get_file(key, path)
            local.append(path)
        recorder.mark("inputs")
        output = os.path.join(workdir, "merged.root")

        def records() -> list[CallRecord]:
            recorder.mark("computed")
            return [recorder.record(output_key), *carried]

        partial.merge_partials(output, local, own=records)
        return ctx.publish(job_id, output_key, output, claim=True)
