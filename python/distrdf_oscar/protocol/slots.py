"""What a partial file says of each result of the graph, its slot (docs/partial-format.md): one
JSON object per result, in the partial's metadata, and the key its value is written under."""

from __future__ import annotations

from typing import Literal, NotRequired, TypedDict

SlotKind = Literal["object", "variations", "scalar", "columns", "fallback"]


class Column(TypedDict):
    """One AsNumpy column: its name and numpy dtype string (``<f8``)."""

    name: str
    dtype: str


class Slot(TypedDict):
    """How result ``i`` of the graph is stored: ``object`` (a native ROOT object merged by the
    C++ core), ``variations`` (one object per variation, ``keys``), ``scalar`` (a TParameter merged
    by ``mode``), ``columns`` (AsNumpy rows, in a rows file as chunk trees or pickled) or
    ``fallback`` (DistRDF's mergeable, pickled and merged in Python)."""

    kind: SlotKind
    mergeable: NotRequired[str]  # the C++ class of the RMergeable* (every kind but columns)
    type: NotRequired[str]  # the value's C++ type (object, variations, scalar)
    keys: NotRequired[list[str]]  # the variations, in order
    mode: NotRequired[str]  # a scalar's merge: sum, min, max
    storage: NotRequired[Literal["tree", "pickle"]]  # where the columns' rows go
    columns: NotRequired[list[Column]]


def slot_name(index: int) -> str:
    """The key, in a partial file (and in a rows file), of result ``index`` of the graph."""
    return f"slot_{index:04d}"
