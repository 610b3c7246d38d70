"""Mapper: run the user's computation graph on one entry range, write its partial."""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from ..protocol import datasets, layout, partial
from ..protocol.messages import MapperPayload, MapperTrigger, MessageError
from ..protocol.plan import JobPlan, PlanError, TreePlan, plan_from_json
from . import context, event_loops, tree_reducer

if TYPE_CHECKING:
    from ..protocol.storage import Storage


@functools.lru_cache(maxsize=8)
def _payload(storage: Storage, key: str) -> MapperPayload:
    # A warm worker serves many ranges of a job: fetch and unpickle the graph once.
    import cloudpickle

    payload = cloudpickle.loads(storage.get_bytes(key))
    if not isinstance(payload, MapperPayload):
        raise MessageError(f"{key}: not a mapper payload of this version of distrdf-oscar")
    return payload


_declared: set[tuple[str, str]] = set()


def _distribute(storage: Storage, keys: layout.JobKeys, payload: MapperPayload) -> None:
    """Fetch the user's headers, libraries and files; declare each only once per process."""
    from ROOT._distrdf.Backends import Utils

    libdir = os.path.join(os.getcwd(), "distributed")
    os.makedirs(libdir, exist_ok=True)
    for kind in MapperPayload.KINDS:
        for name in payload.names(kind):
            data = storage.get_bytes(keys.job_file(name))
            # Plain files go to the working directory, where user code opens them by name.
            path = os.path.join(os.getcwd() if kind == "files" else libdir, name)
            with open(path, "wb") as f:
                f.write(data)
            if kind in ("headers", "shared_libraries"):
                digest = (name, hashlib.sha256(data).hexdigest())
                if digest in _declared:
                    continue
                _declared.add(digest)
                if kind == "headers":
                    Utils.distribute_headers([path])
                else:
                    Utils.distribute_shared_libraries([path])


def _operations(mapper: Any) -> list[Any]:
    graph = mapper.keywords["computation_graph_callable"].args[0]
    return [node.operation for node in graph.values() if getattr(node, "operation", None) is not None]


_CACHED_GRAPHS = 8
_NOT_CLONEABLE = ("Report", "HistoND", "HistoNSparseD")


def _clones_fail(actions: Iterable[Any]) -> bool:
    """ROOT 6.40's JIT cannot link ``CloneResultAndAction`` for an AsNumpy of a column of
    arrays (``RVec<RVec<T>>``: an unresolved ``std::_Construct``), so such a graph is not reused."""
    from ROOT._pythonization._rdataframe import AsNumpyResult

    return any(
        isinstance(action, AsNumpyResult)
        and action._py_arrays is not None
        and any(array.dtype.kind == "O" for array in action._py_arrays.values())
        for action in actions
    )


def _forget(exec_id: Any) -> None:
    from ROOT._distrdf import _graph_cache

    _graph_cache._ACTIONS_REGISTER.pop(exec_id, None)
    _graph_cache._RDF_REGISTER.pop(exec_id, None)


def _prepare(mapper: Any, current_range: Any) -> None:
    from ROOT._distrdf import _graph_cache

    # A warm worker keeps each job's jitted graph for its next ranges; bound that cache.
    for registry in (_graph_cache._ACTIONS_REGISTER, _graph_cache._RDF_REGISTER):
        while len(registry) >= _CACHED_GRAPHS and current_range.exec_id not in registry:
            registry.pop(next(iter(registry)))
    if _clones_fail(_graph_cache._ACTIONS_REGISTER.get(current_range.exec_id, ())):
        _forget(current_range.exec_id)
    for operation in _operations(mapper):
        if operation.name == "Snapshot" and len(operation.args) > 1:
            # Snapshot writes <stem>_<range>.root where the user asked: make its folder exist here.
            folder = os.path.dirname(str(operation.args[1]))
            if folder:
                os.makedirs(folder, exist_ok=True)
        elif operation.name in _NOT_CLONEABLE:
            # DistRDF clones a graph's actions for the next range in the same process; ROOT 6.40
            # aborts cloning Report (RNodeBase::GetVariedFilter) and leaves a cloned THn's entry
            # count from the previous range. Build such graphs afresh, as a cold function would.
            _forget(current_range.exec_id)


def _upload_snapshots(ctx: context.FunctionContext, keys: layout.JobKeys, result: Any, range_id: int) -> None:
    from ROOT._distrdf.PythonMergeables import SnapshotResult

    for mergeable in result.mergeables or []:
        if isinstance(mergeable, SnapshotResult):
            for path in mergeable.filenames:
                ctx.publish(keys.job_id, keys.snapshot(range_id, os.path.basename(path)), path)


def _climbs(path: str) -> int:
    """How many folders up a relative path starts: ``../../data/f.root`` climbs 2."""
    parts = os.path.normpath(path).split(os.sep)
    return next((i for i, part in enumerate(parts) if part != ".."), len(parts))


@contextlib.contextmanager
def _inputs_as_written(inputs: tuple[tuple[str, str], ...]) -> Iterator[None]:
    """Compute from a working directory where every input the user named by a relative path
    opens as written (a link to the file), so that what RDataFrame shows of it (``rdfsampleinfo_``,
    the processed trees) is the user's spelling, as with ROOT's other backends. The invocation's
    own files (the distributed ones among them) are linked there too; it goes away afterwards."""
    if not inputs:
        yield
        return
    home = os.getcwd()
    root = tempfile.mkdtemp(prefix=".inputs-", dir=home)
    here = os.path.join(root, *["in"] * max(_climbs(written) for written, _ in inputs))
    os.makedirs(here, exist_ok=True)
    for written, target in inputs:
        link = os.path.normpath(os.path.join(here, written))
        os.makedirs(os.path.dirname(link), exist_ok=True)
        if not os.path.lexists(link):
            os.symlink(target, link)
    for entry in os.listdir(home):
        if os.path.join(home, entry) != root and not os.path.lexists(os.path.join(here, entry)):
            os.symlink(os.path.join(home, entry), os.path.join(here, entry))
    os.chdir(here)
    try:
        yield
    finally:
        os.chdir(home)
        shutil.rmtree(root, ignore_errors=True)


def _map_range(
    ctx: context.FunctionContext, keys: layout.JobKeys, mapper: Any, current_range: Any, range_id: int
) -> str:
    """Run DistRDF's mapper on one range, publish its AsNumpy rows and Snapshot files; returns the
    path of its partial in the scratch folder."""
    staging = datasets.S3Staging(ctx.storage, "datasets")
    try:
        staging.rewrite_ranges([current_range])
        _prepare(mapper, current_range)
        result = mapper(current_range)
    finally:
        staging.release()  # this range's files may leave the cache now (datasets.DatasetCache)
    staging.restore_names(result)
    _upload_snapshots(ctx, keys, result, range_id)
    path = ctx.scratch(f"partial-{range_id:06d}.root")
    rows = partial.ColumnsFile(ctx.scratch(f"columns-{range_id:06d}.root"), keys.columns(range_id))
    meta = partial.write_partial(path, result, job_id=keys.job_id, range_id=range_id, columns_file=rows)
    if meta.column_parts:
        # Before the partial that names it; a second copy of this range writes the same rows.
        ctx.publish(keys.job_id, rows.key, rows.path, failpoint=False)
    return path


def run(ctx: context.FunctionContext, trigger: MapperTrigger) -> None:
    import cloudpickle

    keys = layout.JobKeys(trigger.job)
    ctx.task_output = trigger.output
    if not ctx.job_alive(keys.job_id) or ctx.storage.exists(trigger.output):
        return  # the job ended (failed elsewhere, or interrupted), or another copy already did these ranges
    if trigger.claim and not ctx.storage.put_if_absent(trigger.claim, ctx.worker.encode()):
        return  # a pool job's call, taken by a pool worker (or by the other copy of its overflow)
    recorder = ctx.recorder("mapper")
    import ROOT

    event_loops.watch(ROOT)
    recorder.mark("imported")
    payload = _payload(ctx.storage, trigger.payload)
    _distribute(ctx.storage, keys, payload)
    mapper = payload.mapper
    datasets.read_urls_remotely(ROOT)
    event_loops.forget()
    recorder.mark("ready")
    # A call of several ranges pays its fixed cost once and hands on one partial for them all.
    with _inputs_as_written(payload.relative_inputs):
        paths = [
            _map_range(
                ctx, keys, mapper, cloudpickle.loads(base64.b64decode(encoded)), trigger.range_id + offset
            )
            for offset, encoded in enumerate((trigger.range, *trigger.more))
        ]
    recorder.mark("computed")
    event_loops.mark(recorder)
    record = recorder.record(trigger.output)
    path = paths[0]
    if len(paths) > 1:
        path = ctx.scratch("partial.root")
        partial.merge_partials(path, paths, own=lambda: [record])
    else:
        partial.add_functions(path, [record])
    # Nodes of an inline tree trigger no reducer: merge what we complete, our own partial from disk.
    inline = trigger.merges_upwards
    written = ctx.publish(keys.job_id, trigger.output, path, claim=True, keep=inline) == context.WRITTEN
    if written and inline:
        job_plan = _plan(ctx.storage, keys.plan)
        if not isinstance(job_plan, TreePlan):
            raise PlanError(
                f"job {keys.job_id}: a call that merges upwards, in a job whose plan is not a tree"
            )
        tree_reducer.merge_upwards(ctx, job_plan, trigger.interval, path)
    if inline and os.path.exists(path):
        os.remove(path)


@functools.lru_cache(maxsize=8)
def _plan(storage: Storage, key: str) -> JobPlan:
    # A job's plan never changes: a pool worker reads it once per job.
    return plan_from_json(storage.get_bytes(key))


def main() -> int:
    return context.serve("mapper", lambda ctx: run(ctx, MapperTrigger.from_json(ctx.read_input())))
