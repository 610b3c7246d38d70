"""The DistRDF backend: each computation graph becomes one serverless job."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import ROOT
from ROOT._distrdf import DataFrame, HeadNode
from ROOT._distrdf.Backends import Base

from ..protocol.datasets import PathPolicy, read_urls_remotely, stage_for_head_node
from .job import JobFiles

if TYPE_CHECKING:
    from .executor import OSCARExecutor


# DistRDF is untyped: its base class is Any, which --strict (disallow_subclassing_any) refuses.
class OSCARBackend(Base.BaseBackend):  # type: ignore[misc, unused-ignore]
    """Runs each DistRDF computation graph as one serverless job."""

    def __init__(self, executor: OSCARExecutor) -> None:
        super().__init__()
        self.executor = executor

    def optimize_npartitions(self) -> int:
        return self.executor.concurrency

    def _files(self) -> JobFiles:
        return JobFiles(
            headers=list(self.headers),
            shared_libraries=list(self.shared_libraries),
            pcms=list(self.pcms),
            files=list(self.files),
        )

    def _run(
        self, ranges: list[Any], mapper: Callable[[Any], Any], on_partial: Callable[[Any], None] | None = None
    ) -> Base.TaskResult:
        # Every dataset file as the functions can open it (datasets.py), named back afterwards.
        paths = PathPolicy(self.executor.shared_paths)
        paths.rewrite_ranges(ranges)
        files = self._files()
        files.relative_inputs = dict(paths.as_written)
        result = self.executor.run_job(ranges, mapper, files, on_partial=on_partial)
        paths.restore_names(result)
        return result

    def ProcessAndMerge(
        self, ranges: list[Any], mapper: Callable[[Any], Any], reducer: Callable[[Any, Any], Any]
    ) -> Base.TaskResult:
        return self._run(ranges, mapper)

    def ProcessAndMergeLive(
        self,
        ranges: list[Any],
        mapper: Callable[[Any], Any],
        reducer: Callable[[Any, Any], Any],
        drawables_info_dict: dict[int, tuple[list[Callable[[Any], Any] | None], int, str]],
    ) -> Base.TaskResult:
        """Like ProcessAndMerge, drawing the merged mapper partials as they arrive."""
        live = _LiveCanvas(drawables_info_dict, reducer)
        result = self._run(ranges, mapper, on_partial=live.add)
        live.close()
        return result

    def distribute_unique_paths(self, paths: Iterable[str]) -> None:
        # Distributed files travel with each job (see JobFiles), not ahead of it.
        pass

    def make_dataframe(self, *args: Any, **kwargs: Any) -> Any:
        npartitions = kwargs.pop("npartitions", None)
        # DistRDF would divide by it when splitting the ranges (a bare ZeroDivisionError).
        if npartitions is not None and (
            isinstance(npartitions, bool) or not isinstance(npartitions, int) or npartitions < 1
        ):
            raise ValueError(f"npartitions must be an integer of at least 1, got {npartitions!r}")
        read_urls_remotely(ROOT)  # the head node opens the first file too
        args, staged = stage_for_head_node(lambda: self.executor.storage, args)
        headnode = HeadNode.get_headnode(self, npartitions, *args)
        if staged:  # the ranges name the objects, which the mappers stage
            headnode.inputfiles = [staged.get(name, name) for name in headnode.inputfiles]
        return DataFrame.RDataFrame(headnode)


class _LiveCanvas:
    """Client-side merge of mapper partials for LiveVisualize, drawn after each arrival."""

    def __init__(
        self,
        drawables_info_dict: dict[int, tuple[list[Callable[[Any], Any] | None], int, str]],
        reducer: Callable[[Any, Any], Any],
    ) -> None:
        self.drawables = drawables_info_dict
        self.reducer = reducer
        self.merged: Any = None
        self._context = ROOT.TVirtualPad.TContext()
        rows = math.ceil(math.sqrt(len(drawables_info_dict)))
        cols = math.ceil(len(drawables_info_dict) / rows)
        self.canvas = ROOT.TCanvas("distrdf_oscar_live", "distrdf-oscar live", 800 * rows, 400 * cols)
        self.canvas.Divide(rows, cols)

    def add(self, task_result: Any) -> None:
        self.merged = task_result if self.merged is None else self.reducer(self.merged, task_result)
        if self.merged.mergeables is None:
            return
        for pad_number, (callbacks, index, operation) in enumerate(self.drawables.values(), start=1):
            value = self.merged.mergeables[index].GetValue()
            for callback in callbacks:
                if callback is not None:
                    callback(value)
            pad = self.canvas.cd(pad_number)
            value.Draw("AP" if operation in ("Graph", "GraphAsymmErrors") else "")
            pad.Update()

    def close(self) -> None:
        self.canvas.Close()
        self._context.__destruct__()
