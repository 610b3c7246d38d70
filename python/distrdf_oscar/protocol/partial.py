"""Partial-result files: one ROOT file per DistRDF ``TaskResult``.

The layout is documented in ``docs/partial-format.md``. In short: slot ``i`` of
the computation graph is the top-level key ``slot_<i>`` holding a native ROOT
object (histogram, graph, THn, TStatistic, TParameter) that the native core
merges n-way, or a directory of such objects for ``VariationsFor`` results.
Everything else (format version, job id, covered ranges, processed-entries
bookkeeping, and the pickled mergeables without a native form) lives under the
``distrdf_oscar`` directory, which the native core skips and this module merges.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import pickle
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, cast

from . import columns
from .columns import PartialFormatError
from .slots import Slot, slot_name
from .timeline import CallRecord

FORMAT_VERSION = 2
META_DIR = "distrdf_oscar"
META_KEY = "meta"
FILE_TITLE = "distrdf-oscar partial result"
COLUMNS_TITLE = "distrdf-oscar AsNumpy rows"
# LZ4: partials are about as small as with zlib and read about twice as fast.
COMPRESSION = 404

_MERGEABLE_NS = "ROOT::Detail::RDF::"
# Objects of these classes have an n-way Merge(TCollection*) in ROOT.
_NATIVE_CLASS_PREFIXES = ("TH1", "TH2", "TH3", "TProfile", "THn", "TGraph", "TStatistic")
# Scalars that map exactly onto a TParameter merge mode. Mean and StdDev keep
# their entry count in private members, so they take the fallback slot.
_SCALAR_MODES = {
    "RMergeableCount": "sum",
    "RMergeableSum": "sum",
    "RMergeableMin": "min",
    "RMergeableMax": "max",
}
_INTEGER_TYPES = {
    "ULong64_t",
    "Long64_t",
    "int",
    "unsigned int",
    "long",
    "unsigned long",
    "long long",
    "unsigned long long",
    "short",
    "unsigned short",
    "char",
    "unsigned char",
    "bool",
}


@dataclass
class PartialMeta:
    """Bookkeeping carried by every partial file (merged in Python)."""

    job_id: str
    ranges: list[tuple[int, int]]
    slots: list[Slot] | None
    processed_entries: int | None = None
    trees_with_entries: dict[str, int] = field(default_factory=dict)
    # Where the rows of the ``columns`` slots live: one {"range", "key", "rows": {slot: n}} per
    # mapper partial, in range order (columns.py).
    column_parts: list[dict[str, Any]] = field(default_factory=list)
    # The records of the function calls that produced this partial and its inputs (timeline.py).
    functions: list[CallRecord] = field(default_factory=list)
    format: int = FORMAT_VERSION

    def to_json(self) -> str:
        return json.dumps({**self.__dict__, "functions": [asdict(f) for f in self.functions]}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, path: str) -> PartialMeta:
        data = json.loads(text)
        if data.get("format") != FORMAT_VERSION:
            raise PartialFormatError(
                f"{path}: partial format {data.get('format')!r}, expected {FORMAT_VERSION}"
            )
        data["ranges"] = [tuple(r) for r in data["ranges"]]
        data["functions"] = [CallRecord(**f) for f in data.get("functions", [])]
        return cls(**data)


def _root() -> Any:
    import ROOT

    ROOT.gROOT.SetBatch(True)
    return ROOT


_helpers_declared = False


def _declare_helpers(ROOT: Any) -> None:
    """C++ helpers that rebuild mergeables with the exact class the mapper produced."""
    global _helpers_declared
    if _helpers_declared:
        return
    ROOT.gInterpreter.Declare(
        """
        #include "ROOT/RDF/RMergeableValue.hxx"
        namespace distrdf_oscar {
        template <typename M, typename T>
        std::unique_ptr<ROOT::Detail::RDF::RMergeableValue<T>> MakeMergeable(const T &value) {
           return std::make_unique<M>(value);
        }
        template <typename M, typename T>
        std::unique_ptr<ROOT::Detail::RDF::RMergeableVariations<T>>
        MakeVariations(std::vector<std::string> keys, const std::vector<T *> &values) {
           std::vector<std::unique_ptr<ROOT::Detail::RDF::RMergeableValueBase>> owned;
           for (auto *v : values) owned.emplace_back(std::make_unique<M>(*v));
           ROOT::Detail::RDF::RMergeableVariationsBase base(std::move(keys), std::move(owned));
           return std::make_unique<ROOT::Detail::RDF::RMergeableVariations<T>>(std::move(base));
        }
        }
        """
    )
    _helpers_declared = True


def _actual_class(ROOT: Any, mergeable: Any) -> str:
    """Dynamic C++ class of a mergeable (cppyy shows the declared base class)."""
    declared = getattr(type(mergeable), "__cpp_name__", None)
    if declared is None:
        return type(mergeable).__module__ + "." + type(mergeable).__qualname__
    tclass = ROOT.TClass.GetClass(declared)
    actual = tclass.GetActualClass(mergeable) if tclass else None
    return cast(str, actual.GetName() if actual else declared)


def _template_arg(class_name: str) -> str:
    return class_name[class_name.index("<") + 1 : class_name.rindex(">")].strip()


def _is_native_object(class_name: str) -> bool:
    return class_name.startswith(_NATIVE_CLASS_PREFIXES)


def _classify(ROOT: Any, mergeable: Any) -> Slot:
    from ROOT._pythonization._rdataframe import AsNumpyResult

    if isinstance(mergeable, AsNumpyResult):
        return columns.describe(mergeable)
    cls = _actual_class(ROOT, mergeable)
    short = cls.removeprefix(_MERGEABLE_NS)
    if short.startswith("RMergeableVariations<"):
        value_type = _template_arg(short)
        if _is_native_object(value_type):
            inner = f"{_MERGEABLE_NS}RMergeableFill<{value_type}>"
            return {
                "kind": "variations",
                "mergeable": inner,
                "type": value_type,
                "keys": [str(k) for k in mergeable.GetKeys()],
            }
    elif short.startswith(("RMergeableFill<", "RMergeableValue<")):
        value_type = _template_arg(short)
        if _is_native_object(value_type):
            return {"kind": "object", "mergeable": cls, "type": value_type}
    else:
        name = short.split("<", 1)[0]
        if name in _SCALAR_MODES:
            value_type = "ULong64_t" if name == "RMergeableCount" else _template_arg(short)
            if value_type in _INTEGER_TYPES or value_type == "double":
                return {"kind": "scalar", "mergeable": cls, "type": value_type, "mode": _SCALAR_MODES[name]}
    return {"kind": "fallback", "mergeable": cls}


def _make_parameter(ROOT: Any, name: str, value: float, value_type: str, mode: str) -> Any:
    if value_type in _INTEGER_TYPES:
        if int(value) >= 2**63:
            raise OverflowError(f"{name}: integer result {value} exceeds Long64_t")
        param = ROOT.TParameter["Long64_t"](name, int(value))
    else:
        param = ROOT.TParameter["double"](name, float(value))
    if mode == "min":
        param.SetBit(ROOT.TParameter["double"].kMin)
    elif mode == "max":
        param.SetBit(ROOT.TParameter["double"].kMax)
    return param


@dataclass
class ColumnsFile:
    """Where a mapper writes the rows of its AsNumpy results, and the key it publishes them at."""

    path: str
    key: str


def write_partial(
    path: str,
    task_result: Any,
    *,
    job_id: str,
    range_id: int,
    columns_file: ColumnsFile,
    functions: Sequence[CallRecord] = (),
) -> PartialMeta:
    """Write a mapper's ``TaskResult`` for range ``range_id`` as a partial file (``functions``:
    the records of the calls that produced it, timeline.py).

    The rows of AsNumpy results go to ``columns_file.path`` instead, created only if there are
    any (``meta.column_parts`` then names its key): the partial stays small for every reducer
    and supervisor that downloads it, and only the client reads the rows (docs/partial-format.md).
    """
    ROOT = _root()
    entries = task_result.entries_in_trees
    slots: list[Slot] | None = None if task_result.mergeables is None else []
    rows: dict[str, int] = {}
    out = _create(ROOT, path, FILE_TITLE)
    rows_out = None
    try:
        meta_dir = out.mkdir(META_DIR)
        for index, mergeable in enumerate(task_result.mergeables or []):
            slot = _classify(ROOT, mergeable)
            name = slot_name(index)
            out.cd()
            if slot["kind"] == "object":
                out.WriteObject(mergeable.GetValue(), name)
            elif slot["kind"] == "variations":
                vdir = out.mkdir(name)
                for vindex, variation in enumerate(slot["keys"]):
                    vdir.WriteObject(mergeable.GetVariation(variation), f"v{vindex:04d}")
            elif slot["kind"] == "scalar":
                param = _make_parameter(ROOT, name, mergeable.GetValue(), slot["type"], slot["mode"])
                out.WriteObject(param, name)
            elif slot["kind"] == "columns":
                if rows_out is None:
                    rows_out = _create(ROOT, columns_file.path, COLUMNS_TITLE)
                if slot["storage"] == "tree":
                    rows[name] = columns.write(ROOT, rows_out, name, mergeable, slot["columns"], range_id)
                else:
                    rows_out.WriteObject(ROOT.TObjString(_encode(mergeable)), name)
                    rows[name] = len(next(iter(mergeable.GetValue().values()), ()))
            else:
                meta_dir.WriteObject(ROOT.TObjString(_encode(mergeable)), name)
            if slots is not None:
                slots.append(slot)
        if rows_out is not None:
            _write_all(ROOT, rows_out, columns_file.path)
        meta = PartialMeta(
            job_id=job_id,
            ranges=[(range_id, range_id + 1)],
            slots=slots,
            processed_entries=None if entries is None else int(entries.processed_entries),
            trees_with_entries={} if entries is None else dict(entries.trees_with_entries),
            column_parts=[{"range": range_id, "key": columns_file.key, "rows": rows}] if rows else [],
            functions=list(functions),
        )
        _finish(ROOT, out, meta_dir, meta, path)
    finally:
        out.Close()
        if rows_out is not None:
            rows_out.Close()
    return meta


def _create(ROOT: Any, path: str, title: str) -> Any:
    out = ROOT.TFile.Open(path, "RECREATE", title, COMPRESSION)
    if not out or out.IsZombie():
        raise OSError(f"cannot create {path}")
    return out


def _write_all(ROOT: Any, out: Any, path: str) -> None:
    if out.Write() < 0 or out.TestBit(ROOT.TFile.kWriteError):
        raise OSError(f"write error on {path}")


def _finish(ROOT: Any, out: Any, meta_dir: Any, meta: PartialMeta, path: str) -> None:
    meta_dir.WriteObject(ROOT.TObjString(meta.to_json()), META_KEY)
    _write_all(ROOT, out, path)


def _encode(obj: Any) -> str:
    return base64.b64encode(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)).decode("ascii")


def _decode(text: str) -> Any:
    return pickle.loads(base64.b64decode(text))


def _open(ROOT: Any, path: str, what: str | None = None) -> Any:
    f = ROOT.TFile.Open(path, "READ")
    if not f or f.IsZombie():
        raise PartialFormatError(f"{what or path}: not a readable ROOT file")
    return f


def _read_string(tfile: Any, key: str, path: str) -> str:
    obj = tfile.Get(f"{META_DIR}/{key}")
    if not obj:
        raise PartialFormatError(f"{path}: missing {META_DIR}/{key}; not a distrdf-oscar partial file")
    return str(obj.GetString())


def _read_object_string(tfile: Any, key: str, what: str) -> str:
    obj = tfile.Get(key)
    if not obj or not obj.InheritsFrom("TObjString"):
        raise PartialFormatError(f"{what}: missing {key}")
    return str(obj.GetString())


def add_functions(path: str, records: Sequence[CallRecord]) -> None:
    """Add function records (timeline.py) to a partial's metadata."""
    from .. import _core

    meta = read_meta(path)
    meta.functions.extend(records)
    try:
        _core.write_texts(
            path, META_DIR, {META_KEY: meta.to_json()}, update=True, title=FILE_TITLE, compression=COMPRESSION
        )
    except RuntimeError as exc:
        raise OSError(f"cannot update partial {path}: {exc}") from None


def read_meta(path: str) -> PartialMeta:
    return _read_part(path)[0]


def _merged_meta(metas: list[PartialMeta], paths: Sequence[str]) -> PartialMeta:
    first = metas[0]
    for meta, path in zip(metas, paths, strict=True):
        if meta.job_id != first.job_id:
            raise PartialFormatError(f"{path}: belongs to job {meta.job_id}, not {first.job_id}")
    with_slots = [(m.slots, path) for m, path in zip(metas, paths, strict=True) if m.slots is not None]
    for slots, path in with_slots:
        if slots != with_slots[0][0]:
            raise PartialFormatError(f"{path}: its actions differ from {with_slots[0][1]}'s")
    ranges = sorted(r for m in metas for r in m.ranges)
    trees: dict[str, int] = {}
    for m in metas:
        trees.update(m.trees_with_entries)
    processed = [m.processed_entries for m in metas if m.processed_entries is not None]
    parts = sorted((p for m in metas for p in m.column_parts), key=lambda p: p["range"])
    for before, after in itertools.pairwise(parts):
        if before["range"] == after["range"]:
            raise PartialFormatError(
                f"AsNumpy rows of range {after['range']} are in two inputs: "
                f"{before['key']} and {after['key']}"
            )
    return PartialMeta(
        job_id=first.job_id,
        ranges=ranges,
        slots=with_slots[0][0] if with_slots else None,
        processed_entries=sum(processed) if processed else None,
        trees_with_entries=trees,
        column_parts=parts,
        functions=[f for m in metas for f in m.functions],
    )


def merge_partials(
    output: str, inputs: Sequence[str], own: Callable[[], list[CallRecord]] | None = None
) -> PartialMeta:
    """Merge partial files n-way into ``output``.

    Native slots go through the C++ core in one call per key; fallback slots
    are unpickled and merged with ROOT's own ``MergeValues``. Partials of tasks
    that processed nothing (no mergeables) only contribute their bookkeeping.
    The records (metadata, pickled slots) are read and written by the core too:
    a merge of native partials never starts PyROOT (about 0.7 s in a fresh process).
    ``own()``: the merging call's records (its own, and a coordinator's that merges its last
    batch), taken once the merge is done and added to its inputs' (timeline.py).
    """
    from .. import _core

    if not inputs:
        raise ValueError("merge_partials needs at least one input")
    parts = [_read_part(p) for p in inputs]
    metas = [m for m, _ in parts]
    meta = _merged_meta(metas, inputs)
    with_values = [p for p, m in zip(inputs, metas, strict=True) if m.slots is not None]
    if with_values:
        _core.merge_files(
            output, list(with_values), exclude=[META_DIR], overwrite=True, compression=COMPRESSION
        )
    records = {
        name: _merge_fallback([texts[name] for _, texts in parts if name in texts])
        for name in _fallback_names(meta)
    }
    if own is not None:
        meta.functions.extend(own())
    records[META_KEY] = meta.to_json()
    try:
        _core.write_texts(
            output, META_DIR, records, update=bool(with_values), title=FILE_TITLE, compression=COMPRESSION
        )
    except RuntimeError as exc:
        raise OSError(f"cannot write merged partial {output}: {exc}") from None
    return meta


def _fallback_names(meta: PartialMeta) -> list[str]:
    return [slot_name(index) for index, slot in enumerate(meta.slots or []) if slot["kind"] == "fallback"]


def _read_part(path: str) -> tuple[PartialMeta, dict[str, str]]:
    """The metadata and the pickled fallback slots of one partial, read by the native core."""
    from .. import _core

    def record(key: str) -> str:
        try:
            text = _core.read_text(path, f"{META_DIR}/{key}")
        except RuntimeError:
            raise PartialFormatError(f"{path}: not a readable ROOT file") from None
        if text is None:
            raise PartialFormatError(f"{path}: missing {META_DIR}/{key}; not a distrdf-oscar partial file")
        return text

    meta = PartialMeta.from_json(record(META_KEY), path)
    return meta, {name: record(name) for name in _fallback_names(meta)}


def _merge_fallback(texts: Sequence[str]) -> str:
    from ROOT._distrdf.Backends import Utils

    merged = _decode(texts[0])
    for text in texts[1:]:
        Utils.merge_values(merged, _decode(text))
    return _encode(merged)


Fetch = Callable[[str, str], None]


def read_partial(path: str, fetch: Fetch | None = None) -> tuple[Any, PartialMeta]:
    """Read a (merged) partial file back into the ``TaskResult`` DistRDF expects.

    ``fetch(key, local_path)`` downloads a mapper's AsNumpy rows (``PartialMeta.column_parts``);
    without it, AsNumpy results come back empty."""
    from ROOT._distrdf.Backends.Base import TaskResult
    from ROOT._distrdf.Ranges import TaskTreeEntries

    ROOT = _root()
    f = _open(ROOT, path)
    try:
        meta = PartialMeta.from_json(_read_string(f, META_KEY, path), path)
        mergeables = None
        if meta.slots is not None:
            _declare_helpers(ROOT)
            arrays = _read_columns(ROOT, path, meta, fetch)
            mergeables = [
                columns.result(slot["columns"], arrays[i])
                if slot["kind"] == "columns"
                else _read_slot(ROOT, f, path, i, slot)
                for i, slot in enumerate(meta.slots)
            ]
    finally:
        f.Close()
    entries = None
    if meta.processed_entries is not None:
        entries = TaskTreeEntries(meta.processed_entries, dict(meta.trees_with_entries))
    return TaskResult(mergeables, entries), meta


def _get(ROOT: Any, tfile: Any, path: str, key: str) -> Any:
    obj = tfile.Get(key)
    if not obj:
        raise PartialFormatError(f"{path}: missing key {key}")
    if hasattr(obj, "SetDirectory"):
        obj.SetDirectory(ROOT.nullptr)
    return obj


def _read_slot(ROOT: Any, tfile: Any, path: str, index: int, slot: Slot) -> Any:
    name = slot_name(index)
    kind = slot["kind"]
    if kind == "fallback":
        return _decode(_read_string(tfile, name, path))
    if kind == "object":
        return ROOT.distrdf_oscar.MakeMergeable[slot["mergeable"], slot["type"]](
            _get(ROOT, tfile, path, name)
        )
    if kind == "scalar":
        param = _get(ROOT, tfile, path, name)
        value = int(param.GetVal()) if slot["type"] in _INTEGER_TYPES else float(param.GetVal())
        return ROOT.distrdf_oscar.MakeMergeable[slot["mergeable"], slot["type"]](value)
    if kind == "variations":
        # The Python objects own the varied objects: hold them until MakeVariations has copied them.
        owned = [_get(ROOT, tfile, path, f"{name}/v{vindex:04d}") for vindex in range(len(slot["keys"]))]
        values = ROOT.std.vector[slot["type"] + "*"]()
        for obj in owned:
            values.push_back(obj)
        keys = ROOT.std.vector["std::string"](slot["keys"])
        return ROOT.distrdf_oscar.MakeVariations[slot["mergeable"], slot["type"]](keys, values)
    raise PartialFormatError(f"{path}: unknown slot kind {kind!r}")


def _read_columns(ROOT: Any, path: str, meta: PartialMeta, fetch: Fetch | None) -> dict[int, dict[str, Any]]:
    """The arrays of every ``columns`` slot (by slot index), read part by part in range order:
    chunk trees straight into preallocated arrays, pickled parts concatenated at the end.
    Without ``fetch``, every AsNumpy result is empty (LiveVisualize's previews)."""
    import numpy as np

    slots = meta.slots or []
    indices = [i for i, slot in enumerate(slots) if slot["kind"] == "columns"]
    if not indices:
        return {}
    names = {i: slot_name(i) for i in indices}
    trees = [i for i in indices if slots[i]["storage"] == "tree"]
    pickles = [i for i in indices if slots[i]["storage"] == "pickle"]
    parts = meta.column_parts if fetch is not None else []
    arrays = {
        i: columns.allocate(slots[i]["columns"], sum(p["rows"].get(names[i], 0) for p in parts))
        for i in trees
    }
    offsets = dict.fromkeys(trees, 0)
    pieces: dict[int, list[dict[str, Any]]] = {i: [] for i in pickles}
    with tempfile.TemporaryDirectory(prefix="dro-columns-") as workdir:
        for index, part in enumerate(parts):
            if not any(part["rows"].values()):
                continue  # a range where nothing passed: nothing to fetch
            local = os.path.join(workdir, f"{index:06d}.root")
            assert fetch is not None
            fetch(part["key"], local)
            where = f"{part['key']} (AsNumpy rows of {path})"
            part_file = _open(ROOT, local, where)
            try:
                for i in trees:
                    rows = part["rows"].get(names[i], 0)
                    targets = list(arrays[i].values())
                    columns.read_into(ROOT, part_file, where, names[i], targets, offsets[i], rows)
                    offsets[i] += rows
                for i in pickles:
                    if part["rows"].get(names[i], 0):
                        pieces[i].append(_decode(_read_object_string(part_file, names[i], where)).GetValue())
            finally:
                part_file.Close()
            os.remove(local)
    for i in pickles:
        arrays[i] = {
            c["name"]: np.concatenate([piece[c["name"]] for piece in pieces[i]])
            if pieces[i]
            else np.empty(0, dtype=np.dtype(c["dtype"]))
            for c in slots[i]["columns"]
        }
    return arrays
