"""Batch reducer: merges the partials a coordinator listed in one batch file.

Triggered by the batch file itself, or by a client's retry trigger naming the
batch, in which case the batch file (written once, by a claim) is read.
"""

from __future__ import annotations

from ..protocol import layout
from ..protocol.messages import Batch, BatchRetry
from . import context
from .merging import merge_keys


def run(ctx: context.FunctionContext) -> None:
    if layout.parse_retry(ctx.key) is not None:
        retry = BatchRetry.from_json(ctx.read_input())
        batch = Batch.from_json(
            ctx.storage.get_bytes(retry.file or layout.JobKeys(retry.job).batch(retry.index))
        )
    else:
        batch = Batch.from_json(ctx.read_input())
    merge_keys(ctx, batch.job, list(batch.inputs), batch.output, role="batch")


def main() -> int:
    return context.serve("batch", run)
