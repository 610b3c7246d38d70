"""Native n-way merge of ROOT files (distrdf-oscar's C++ core)."""

from collections.abc import Callable, Sequence
from os import PathLike
from typing import Literal, TypedDict

class MergeSummary(TypedDict):
    inputs: int
    objects: int  # merged keys, trees included, directories not
    trees: int
    directories: int
    excluded: int  # top-level keys skipped because of ``exclude``
    tree_entries: int
    output_bytes: int
    seconds: float

class MergeError(RuntimeError):
    """A merge failed; the partial output was removed.

    ``kind`` is "input" (missing, unreadable or non-ROOT input), "mismatch" (inputs with different
    keys, classes or tree branches, or a class without a merge function), "output" (the output
    exists without ``overwrite``, or is one of the inputs) or "write" (creating or writing the
    output failed, e.g. disk full).
    """

    kind: Literal["input", "mismatch", "output", "write"]

def merge_files(
    output: str | PathLike[str],
    inputs: Sequence[str | PathLike[str]],
    *,
    exclude: Sequence[str] = (),
    overwrite: bool = False,
    compression: int = -1,
    threads: int = 0,
    log: Callable[[str], None] | None = None,
) -> MergeSummary:
    """Merge ROOT files n-way into a new file ``output`` (the GIL is released meanwhile).

    Every key (highest cycle) must exist in every input with the same class; each key is merged
    with one call of its class's merge function, trees are concatenated into the matching
    directory, directories recurse. ``exclude`` names top-level keys to skip. ``compression`` is
    ROOT's algorithm*100+level (-1: ROOT's default). ``threads`` read inputs in parallel (0: one
    per available CPU, at most 8). ``log`` receives progress lines.
    """

def root_version() -> str:
    """Version of ROOT the core runs with, e.g. "6.40.00"."""

def read_text(path: str, key: str) -> str | None:
    """The TObjString at ``key`` (e.g. "dir/name") of a ROOT file, None if absent; RuntimeError if
    the file cannot be read."""

def write_texts(
    path: str, directory: str, texts: dict[str, str], *, update: bool, title: str = "", compression: int = -1
) -> None:
    """Write each (key, text) of ``texts`` as a TObjString in ``directory`` of a ROOT file (made if
    missing), updating the file or creating it anew."""

def watch_event_loops(shown: int) -> None:
    """Record, from ROOT's log, when RDataFrame's event loops start, finish their JIT and end (once
    per process; later calls do nothing). RDataFrame messages above level ``shown`` are not passed on."""

def take_event_loop_marks() -> list[tuple[str, float]]:
    """The (phase, epoch seconds) marks recorded since the last call, oldest first; phase is
    "loop_started", "jitted" or "loop_ended"."""
