"""Batch reducer: merges the partials a coordinator listed in one batch file."""

from __future__ import annotations

from . import context
from .merging import merge_keys


def run(ctx: context.FunctionContext) -> None:
    batch = ctx.read_input_json()
    merge_keys(ctx, batch["job"], batch["inputs"], batch["output"])


def main() -> int:
    return context.serve("batch", run)
