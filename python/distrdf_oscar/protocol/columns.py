"""AsNumpy rows as a TTree of chunks, in a mapper's rows file (docs/partial-format.md).

A pickled ``AsNumpyResult`` costs several copies of every array at each step (pickle, base64,
unpickle, ``numpy.concatenate``), so an 800 MB result needed gigabytes everywhere. Instead each
mapper writes the numeric columns as raw values in a TTree, one entry per chunk of a few MiB:

    range/I      the mapper's range id (the order of the chunk in the result)
    count/I      values in this chunk
    c<j>[count]  the values of column j (leaf type from its numpy dtype), uncompressed

Columns without a flat numeric form (strings, RVecs, classes) are pickled instead. Either way
concatenation needs no reduction: reducers merge only the list of parts, and the client reads
the parts in range order into one preallocated array per column. The rows cross the object
storage twice (up from the mapper, down to the client) instead of once per tree level.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .slots import Column, Slot

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt


class PartialFormatError(RuntimeError):
    """A partial file (or a mapper's rows file) is not what this version of distrdf-oscar writes."""


# numpy (kind, itemsize) -> TLeaf type code
_LEAF_CODES = {
    ("f", 8): "D",
    ("f", 4): "F",
    ("i", 8): "L",
    ("i", 4): "I",
    ("i", 2): "S",
    ("i", 1): "B",
    ("u", 8): "l",
    ("u", 4): "i",
    ("u", 2): "s",
    ("u", 1): "b",
    ("b", 1): "O",
}
CHUNK_BYTES = 8 << 20
TREE_TITLE = "distrdf-oscar AsNumpy columns"


def leaf_code(dtype: np.dtype[Any]) -> str | None:
    """The TLeaf type of a numpy dtype, or None when the column has no flat numeric form."""
    return _LEAF_CODES.get((dtype.kind, dtype.itemsize))


def describe(mergeable: Any) -> Slot:
    """The ``columns`` slot of an ``AsNumpyResult``: stored as a chunk tree when every column is
    flat numbers, else pickled (strings, RVecs and classes) in the mapper's partial."""
    arrays = mergeable.GetValue()
    # In the order AsNumpy was given the columns.
    described: list[Column] = [
        {"name": str(name), "dtype": array.dtype.str} for name, array in arrays.items()
    ]
    flat = all(leaf_code(array.dtype) is not None for array in arrays.values())
    return {"kind": "columns", "storage": "tree" if flat else "pickle", "columns": described}


def write(ROOT: Any, directory: Any, name: str, mergeable: Any, columns: list[Column], range_id: int) -> int:
    """Write the arrays of ``mergeable`` as the chunk tree ``name`` in ``directory``; returns the rows."""
    import numpy as np

    arrays = mergeable.GetValue()
    values = [np.ascontiguousarray(arrays[c["name"]]) for c in columns]
    length = len(values[0]) if values else 0
    if any(len(v) != length for v in values):
        raise ValueError(f"{name}: AsNumpy columns of different lengths")
    chunk = max(1, CHUNK_BYTES // max((v.itemsize for v in values), default=1))
    directory.cd()
    tree = ROOT.TTree(name, TREE_TITLE)
    tree.SetDirectory(directory)
    range_buf = np.array([range_id], dtype=np.int32)
    count_buf = np.zeros(1, dtype=np.int32)
    tree.Branch("range", range_buf, "range/I")
    tree.Branch("count", count_buf, "count/I")
    branches = []
    for index, array in enumerate(values):
        leaf = f"c{index}[count]/{leaf_code(array.dtype)}"
        # Every chunk sets its own address; a placeholder also serves an empty column (no buffer).
        branch = tree.Branch(f"c{index}", np.zeros(1, dtype=array.dtype), leaf, chunk * array.itemsize + 1024)
        # Numbers compress little, and LZ4 on them cost a mapper 15x the time of writing them.
        branch.SetCompressionSettings(0)
        branches.append(branch)
    for start in range(0, length, chunk):
        count_buf[0] = min(chunk, length - start)
        for branch, array in zip(branches, values, strict=True):
            branch.SetAddress(array[start:])
        if tree.Fill() < 0:
            raise OSError(f"{name}: writing AsNumpy chunk at entry {start} failed")
    tree.Write("", ROOT.TObject.kOverwrite)
    tree.SetDirectory(ROOT.nullptr)
    return length


def read_into(
    ROOT: Any, tfile: Any, path: str, name: str, targets: list[npt.NDArray[Any]], offset: int, rows: int
) -> None:
    """Read the chunk tree ``name`` of one file, in range order, into ``targets[j][offset:offset + rows]``."""
    import numpy as np

    tree = tfile.Get(name)
    if not tree or not tree.InheritsFrom("TTree"):
        raise PartialFormatError(f"{path}: missing AsNumpy tree {name}")
    range_buf = np.zeros(1, dtype=np.int32)
    count_buf = np.zeros(1, dtype=np.int32)
    range_branch, count_branch = tree.GetBranch("range"), tree.GetBranch("count")
    value_branches = [tree.GetBranch(f"c{index}") for index in range(len(targets))]
    if not range_branch or not count_branch or not all(value_branches):
        raise PartialFormatError(f"{path}: AsNumpy tree {name} lacks its range, count or column branches")
    range_branch.SetAddress(range_buf)
    count_branch.SetAddress(count_buf)
    chunks = []
    for entry in range(tree.GetEntries()):
        if range_branch.GetEntry(entry) <= 0 or count_branch.GetEntry(entry) <= 0:
            raise PartialFormatError(f"{path}: cannot read chunk {entry} of AsNumpy tree {name}")
        chunks.append((int(range_buf[0]), entry, int(count_buf[0])))
    if sum(count for _, _, count in chunks) != rows:
        raise PartialFormatError(
            f"{path}: AsNumpy tree {name} holds {sum(c for _, _, c in chunks)} rows, its metadata says {rows}"
        )
    chunks.sort()  # by range; a range's own chunks keep their order (entry numbers grow)
    for _, entry, count in chunks:
        count_branch.GetEntry(entry)  # the leaf count the value branches read by
        for branch, target in zip(value_branches, targets, strict=True):
            branch.SetAddress(target[offset:])
            if branch.GetEntry(entry) < 0:
                raise PartialFormatError(f"{path}: cannot read chunk {entry} of AsNumpy tree {name}")
        offset += count
    tree.ResetBranchAddresses()


def allocate(columns: list[Column], rows: int) -> dict[str, Any]:
    import numpy as np

    return {c["name"]: np.empty(rows, dtype=np.dtype(c["dtype"])) for c in columns}


def result(columns: list[Column], arrays: dict[str, Any]) -> Any:
    """The ``AsNumpyResult`` DistRDF expects, holding ``arrays``."""
    from ROOT._pythonization._rdataframe import AsNumpyResult

    value = AsNumpyResult.__new__(AsNumpyResult)
    value.__setstate__(arrays)  # how an unpickled result is made: the arrays only
    return value
