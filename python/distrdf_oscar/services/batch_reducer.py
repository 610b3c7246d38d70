"""Batch reducer: merges the partials a coordinator listed in one batch file."""

from __future__ import annotations

from . import context
from .merging import merge_keys


def main() -> int:
    ctx = context.current()
    batch = ctx.read_input_json()
    try:
        merge_keys(ctx, batch["job"], batch["inputs"], batch["output"])
    except BaseException as exc:  # noqa: BLE001 - every failure must reach the client
        ctx.report_error(batch["job"], f"batch-{batch['index']:04d}", exc)
        return 1
    return 0
