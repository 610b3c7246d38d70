"""Batch reducer: merges the partials a coordinator listed in one batch file.

Triggered by the batch file itself, or by a client's retry trigger naming the
batch, in which case the batch file (written once, by a claim) is read.
"""

from __future__ import annotations

import json

from .. import layout
from . import context
from .merging import merge_keys


def run(ctx: context.FunctionContext) -> None:
    batch = ctx.read_input_json()
    if layout.parse_retry(ctx.key) is not None:
        batch = json.loads(ctx.storage.get_bytes(layout.JobKeys(batch["job"]).batch(batch["index"])))
    merge_keys(ctx, batch["job"], batch["inputs"], batch["output"])


def main() -> int:
    return context.serve("batch", run)
