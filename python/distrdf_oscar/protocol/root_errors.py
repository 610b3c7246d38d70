"""Reading ROOT's errors as they reach Python: the C++ reason in a few words, cppyy's overload dump cut.

cppyy reports a failing C++ call (a template instantiation, a constructor) as an exception listing
every overload it tried, each with the C++ exception it raised: the one line a user needs
(``Unknown column: "pt"``) is buried in that dump, 4 KB for a ``Histo1D`` of an unknown column. A
function's error marker carries :func:`headline` (computed where the error happened, so a file that
cannot be opened is looked at there) and its traceback, which the client shows :func:`trim`-med.
"""

from __future__ import annotations

import os
import re
import struct

_CPP_REASON = re.compile(r"(?:[a-z_]*error|invalid_argument|out_of_range|logic_error|exception): (.+)")
_UNKNOWN_COLUMN = re.compile(r'Unknown column: "([^"]*)"')
_UNOPENED_FILE = re.compile(r'could not open file "([^"]*)"')
# A line of cppyy's listing: an overload's signature (its C++ error follows), or a failed instantiation.
# An overload cppyy refused for its arguments alone, not for anything the call did.
_ARGUMENTS = re.compile(
    r"TypeError: (takes (at most|at least|exactly) \d+ arguments?|could not convert argument)"
)
CUT_NOTE = "more lines of cppyy's listing cut: repeated errors, or overloads that refused these arguments"
_HEADER = re.compile(r"^\s+none of the \d+ overloaded methods succeeded")
_OVERLOAD = re.compile(r'^\s+(?:\S.* =>|Failed to instantiate ".*")$')
# Python 3.11's markers under a frame's code: no information a reader of a remote traceback needs.
_MARKERS = re.compile(r"^\s*[\^~]+\s*$")
_SECTION = re.compile(
    r"^(?:Traceback \(most recent call last\):|During handling of the above exception|The above exception)"
)
# ROOT's file header (TFile::Init): "root", then the format version, the first record and the end of
# the file, 32-bit or, from version 1000000 on, 64-bit.
_BIG_FILE_VERSION = 1000000


def cpp_reasons(text: str) -> list[str]:
    """The distinct C++ exception messages in a cppyy error text, in order of appearance."""
    return list(dict.fromkeys(m.strip() for m in _CPP_REASON.findall(text)))


def file_fault(path: str) -> str | None:
    """What is wrong with a local file ROOT could not open, read as ROOT reads its header (it says
    so only on stderr); None for a remote URL or a file that looks sound."""
    if "://" in path and not path.startswith("file://"):
        return None
    path = path.removeprefix("file://")
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as handle:
            header = handle.read(20)
    except OSError as exc:
        return {FileNotFoundError: "not found", PermissionError: "permission denied"}.get(
            type(exc), exc.strerror or type(exc).__name__
        )
    if not header:
        return "empty"
    if header[:4] != b"root":
        return "not a ROOT file"
    if len(header) < 20:
        return f"truncated at {size} bytes"
    version = struct.unpack(">i", header[4:8])[0]
    (end,) = (
        struct.unpack(">q", header[12:20])
        if version >= _BIG_FILE_VERSION
        else struct.unpack(">i", header[12:16])
    )
    return f"truncated at {size} of its {end} bytes" if size < end else None


def plain(reason: str, look: bool = False) -> str:
    """A C++ reason in a few words: the unknown column, the file that could not be opened (and,
    with ``look``, what is wrong with it as seen from this process), else the reason itself."""
    if column := _UNKNOWN_COLUMN.search(reason):
        return f"unknown column '{column.group(1)}'"
    if unopened := _UNOPENED_FILE.search(reason):
        fault = file_fault(unopened.group(1)) if look else None
        return f'cannot read file "{unopened.group(1)}"' + (f": {fault}" if fault else "")
    return reason.rstrip(".")


def headline(exc: BaseException) -> str:
    """One line on what went wrong: the C++ reasons in a few words when cppyy buried them in a
    dump (the traceback keeps the dump), else ``Type: message``."""
    text = str(exc)
    reasons = cpp_reasons(text) if "\n" in text else []
    return (
        "; ".join(dict.fromkeys(plain(reason, look=True) for reason in reasons))
        or f"{type(exc).__name__}: {text}"
    )


def cause(error: str) -> str:
    """What a client shows of a marker's error: its first line. An earlier version's headline was
    "REASONS (from Type: cppyy's dump)": its reasons are put in a few words."""
    first = error.split("\n", 1)[0]
    if "\n" not in error or " (from " not in first:
        return first
    return "; ".join(plain(reason) for reason in first.split(" (from ", 1)[0].split("; "))


def trim(traceback: str) -> str:
    """A remote traceback to show: without Python's ``^^^`` markers, and each cppyy listing cut to
    the overloads whose C++ error differs. Overloads cppyy refused only for their arguments'
    number or types (it tries every one) go when another failed for a reason of its own, which is
    then the problem. How many lines were cut is said."""
    out: list[str] = []
    entry: list[str] = []  # the overload being read, from its signature
    listing: list[tuple[list[str], list[str]]] = []  # the current listing's overloads: (lines, blanks)
    headed = False  # whether the listing's "none of the N overloaded methods" line was shown
    cut = 0

    def flush(ending: bool) -> None:
        nonlocal entry, cut, headed, listing
        if entry:
            size = len(entry)
            while size and not entry[size - 1].strip():
                size -= 1
            listing.append((entry[:size], entry[size:]))
            entry = []
        if not ending:
            return
        errors = [tuple(line.strip() for line in lines[1:]) for lines, _ in listing]
        own = [bool(e) and not all(_ARGUMENTS.search(line) for line in e) for e in errors]
        seen: set[tuple[str, ...]] = set()
        for index, ((lines, blanks), error, reason) in enumerate(zip(listing, errors, own, strict=True)):
            if error not in seen and (reason or not any(own)):
                out.extend(lines if index == len(listing) - 1 else lines + blanks)
            else:
                cut += len(lines)
            seen.add(error)
        if cut:
            out.append(f"  [{cut} {CUT_NOTE}]")
        out.extend(listing[-1][1] if listing else [])  # a blank line that ends the listing stays
        listing, cut, headed = [], 0, False

    for line in traceback.splitlines():
        if _MARKERS.match(line):
            continue
        if _HEADER.match(line):  # cppyy repeats it before each retry's listing: said once
            flush(ending=False)
            if headed:
                cut += 1
            else:
                out.append(line)
            headed = True
        elif _OVERLOAD.match(line):
            flush(ending=False)
            entry = [line]
        elif listing or entry:
            if _SECTION.match(line):
                flush(ending=True)
                out.append(line)
            else:
                entry.append(line)
        else:
            out.append(line)
    if listing or entry or headed:
        flush(ending=True)
    return "\n".join(out)
