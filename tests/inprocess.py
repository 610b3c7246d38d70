"""A minimal DistRDF backend that runs mappers in this process and keeps their TaskResults.

Used to produce real mapper outputs (exactly what a serverless mapper would
ship) for the partial-format tests, without any platform.
"""

from __future__ import annotations

import pickle

from ROOT._distrdf import DataFrame, HeadNode
from ROOT._distrdf.Backends import Base


class InProcessBackend(Base.BaseBackend):
    def __init__(self, npartitions: int) -> None:
        super().__init__()
        self.npartitions = npartitions
        self.task_results: list[bytes] = []  # pickled, because the reducer merges in place

    def ProcessAndMerge(self, ranges, mapper, reducer):
        results = [self._fresh_mapper(mapper, r) for r in ranges]
        self.task_results = [pickle.dumps(r) for r in results]
        merged = results[0]
        for other in results[1:]:
            merged = reducer(merged, other)
        return merged

    @staticmethod
    def _fresh_mapper(mapper, current_range):
        # Each range in a fresh graph, as separate functions would run it (ROOT 6.40's cloned
        # THn actions keep the previous range's entry count).
        from ROOT._distrdf import _graph_cache

        _graph_cache._ACTIONS_REGISTER.pop(current_range.exec_id, None)
        _graph_cache._RDF_REGISTER.pop(current_range.exec_id, None)
        return mapper(current_range)

    def fresh_results(self) -> list:
        return [pickle.loads(r) for r in self.task_results]

    def distribute_unique_paths(self, paths):
        pass

    def optimize_npartitions(self):
        return self.npartitions

    def make_dataframe(self, *args, **kwargs):
        npartitions = kwargs.pop("npartitions", self.npartitions)
        return DataFrame.RDataFrame(HeadNode.get_headnode(self, npartitions, *args))
