"""Partial-result format: TaskResults -> files -> n-way merge -> read back == pairwise DistRDF reduction."""

from __future__ import annotations

import os
import pickle
import shutil

import pytest
import ROOT
from ROOT._distrdf.Backends.Base import distrdf_reducer

from compare import assert_same_value
from distrdf_oscar.protocol import partial
from graphs import book_all, values
from inprocess import InProcessBackend


@pytest.fixture(scope="module")
def mapped(dimuon_files, tmp_path_factory):
    """Four real mapper TaskResults over disjoint entry ranges, written as partial files."""
    backend = InProcessBackend(npartitions=4)
    actions = book_all(backend.make_dataframe("Events", dimuon_files))
    # DistRDF prunes graph nodes nobody references: keep the variations proxy alive.
    variations = ROOT.RDF.Distributed.VariationsFor(actions[-1])
    actions[0].GetValue()
    assert list(variations.GetKeys()) == ["nominal", "scale:down", "scale:up"]
    workdir = tmp_path_factory.mktemp("partials")
    paths = []
    for index, result in enumerate(backend.fresh_results()):
        path = str(workdir / f"p{index}.root")
        rows = str(workdir / f"rows{index}.root")
        partial.write_partial(
            path, result, job_id="jtest", range_id=index, columns_file=partial.ColumnsFile(rows, rows)
        )
        paths.append(path)
    return backend, paths, workdir


def test_native_slots_for_mergeables_with_native_form(mapped):
    _backend, paths, _ = mapped
    meta = partial.read_meta(paths[0])
    kinds = [slot["kind"] for slot in meta.slots]
    # Count x2, Sum x2, Mean, Min, Max, StdDev, then Stats and 9 histograms/graphs, AsNumpy, the nominal
    # varied histogram, and the VariationsFor action DistRDF appends to the graph
    assert kinds == ["scalar"] * 4 + ["fallback", "scalar", "scalar", "fallback"] + ["object"] * 10 + [
        "columns",
        "object",
        "variations",
    ]
    assert meta.ranges == [(0, 1)]
    assert meta.job_id == "jtest"
    assert meta.format == partial.FORMAT_VERSION


def test_nway_merge_equals_pairwise_distrdf_reduction(mapped):
    backend, paths, workdir = mapped
    merged_path = str(workdir / "merged.root")
    meta = partial.merge_partials(merged_path, paths)
    assert meta.ranges == [(0, 1), (1, 2), (2, 3), (3, 4)]
    merged, _ = partial.read_partial(merged_path, fetch=shutil.copyfile)

    pairwise = backend.fresh_results()
    reference = pairwise[0]
    for other in pairwise[1:]:
        reference = distrdf_reducer(reference, other)

    assert merged.entries_in_trees.processed_entries == reference.entries_in_trees.processed_entries
    assert merged.entries_in_trees.trees_with_entries == reference.entries_in_trees.trees_with_entries
    assert len(merged.mergeables) == len(reference.mergeables)
    for index, (got, want) in enumerate(zip(merged.mergeables, reference.mergeables, strict=True)):
        if hasattr(want, "GetKeys"):
            assert list(got.GetKeys()) == list(want.GetKeys())
            for key in want.GetKeys():
                assert_same_value(got.GetVariation(key), want.GetVariation(key), f"slot {index} [{key}]")
        else:
            assert_same_value(got.GetValue(), want.GetValue(), f"slot {index}")


def test_merged_partial_matches_single_process(mapped, dimuon_files):
    _, paths, workdir = mapped
    merged_path = str(workdir / "merged_sp.root")
    partial.merge_partials(merged_path, paths)
    merged, _ = partial.read_partial(merged_path, fetch=shutil.copyfile)
    local = book_all(ROOT.RDataFrame("Events", dimuon_files))
    expected = values(local)
    # The graph holds one more action than was booked here: the VariationsFor that the fixture added.
    for index, (got, want) in enumerate(zip(merged.mergeables[:-1], expected[:-1], strict=False)):
        assert_same_value(got.GetValue(), want, f"slot {index}")
    nominal = local[-1].GetValue()
    assert_same_value(merged.mergeables[-1].GetVariation("nominal"), nominal, "varied nominal")


def test_partial_is_much_smaller_than_pickled_taskresult(mapped):
    backend, paths, _ = mapped
    pickled = len(backend.task_results[0])
    # A third of the dataset: ~210 kB pickled (uncompressed object streams), ~32 kB as a partial
    # (native slots in a compressed ROOT file). Well under a quarter leaves room for ROOT's versions.
    assert os.path.getsize(paths[0]) * 4 < pickled, (os.path.getsize(paths[0]), pickled)


def test_mismatched_jobs_are_refused(mapped, tmp_path):
    backend, paths, _ = mapped
    other = str(tmp_path / "other.root")
    rows = partial.ColumnsFile(str(tmp_path / "rows.root"), str(tmp_path / "rows.root"))
    partial.write_partial(other, backend.fresh_results()[1], job_id="jother", range_id=1, columns_file=rows)
    with pytest.raises(partial.PartialFormatError, match="belongs to job jother"):
        partial.merge_partials(str(tmp_path / "out.root"), [paths[0], other])


def test_not_a_partial_is_refused(tmp_path):
    path = str(tmp_path / "plain.root")
    f = ROOT.TFile(path, "RECREATE")
    ROOT.TH1D("h", "h", 1, 0, 1).Write()
    f.Close()
    with pytest.raises(partial.PartialFormatError, match="not a distrdf-oscar partial"):
        partial.read_meta(path)


def test_empty_task_result_only_carries_bookkeeping(mapped, tmp_path):
    from ROOT._distrdf.Backends.Base import TaskResult
    from ROOT._distrdf.Ranges import TaskTreeEntries

    backend, paths, _ = mapped
    empty = str(tmp_path / "empty.root")
    rows = partial.ColumnsFile(str(tmp_path / "rows.root"), str(tmp_path / "rows.root"))
    partial.write_partial(
        empty, TaskResult(None, TaskTreeEntries(0, {})), job_id="jtest", range_id=4, columns_file=rows
    )
    assert not os.path.exists(rows.path)  # no AsNumpy rows: no file
    out = str(tmp_path / "out.root")
    partial.merge_partials(out, [paths[0], empty])
    merged, meta = partial.read_partial(out, fetch=shutil.copyfile)
    assert meta.ranges == [(0, 1), (4, 5)]
    reference = pickle.loads(backend.task_results[0])
    assert merged.mergeables[0].GetValue() == reference.mergeables[0].GetValue()


def _asnumpy_partial(workdir, range_id: int, arrays: dict):
    from ROOT._distrdf.Backends.Base import TaskResult
    from ROOT._pythonization._rdataframe import AsNumpyResult

    result = AsNumpyResult.__new__(AsNumpyResult)
    result.__setstate__(arrays)
    path, rows = str(workdir / f"a{range_id}.root"), str(workdir / f"a{range_id}.rows.root")
    partial.write_partial(
        path,
        TaskResult([result], None),
        job_id="jcols",
        range_id=range_id,
        columns_file=partial.ColumnsFile(rows, rows),
    )
    return path


def test_asnumpy_rows_come_back_in_range_order_whatever_the_merge_order(tmp_path):
    import numpy as np

    # Range 1 spans several chunks; range 2 passed nothing; merged out of order and in two steps.
    sizes = {0: 1000, 1: 3 * (8 << 20) // 8 + 17, 2: 0, 3: 5}
    pieces = {
        r: {"x": np.arange(n, dtype=np.float64) + r * 1e7, "k": np.full(n, r, dtype=np.int16)}
        for r, n in sizes.items()
    }
    paths = {r: _asnumpy_partial(tmp_path, r, pieces[r]) for r in sizes}
    inner = str(tmp_path / "inner.root")
    partial.merge_partials(inner, [paths[3], paths[0]])
    merged = str(tmp_path / "merged.root")
    meta = partial.merge_partials(merged, [paths[2], inner, paths[1]])
    assert [p["range"] for p in meta.column_parts] == [0, 1, 2, 3]
    assert os.path.getsize(merged) < 100_000  # the rows stay in the mappers' files
    fetched = []
    result, _ = partial.read_partial(
        merged, fetch=lambda key, dest: (fetched.append(key), shutil.copyfile(key, dest))
    )
    got = result.mergeables[0].GetValue()
    assert list(got) == ["x", "k"]
    for column in ("x", "k"):
        np.testing.assert_array_equal(got[column], np.concatenate([pieces[r][column] for r in sorted(sizes)]))
        assert got[column].dtype == pieces[0][column].dtype
    assert len(fetched) == 3  # range 2 had no rows: nothing fetched
    preview, _ = partial.read_partial(merged)  # without fetch: empty, of the right types
    assert {c: (len(a), a.dtype) for c, a in preview.mergeables[0].GetValue().items()} == {
        "x": (0, np.float64),
        "k": (0, np.int16),
    }
    with pytest.raises(partial.PartialFormatError, match="rows of range 0 are in two inputs"):
        partial.merge_partials(str(tmp_path / "twice.root"), [paths[0], inner])


def test_merging_native_partials_never_starts_pyroot(dimuon_files, tmp_path):
    """A reducer of native partials pays the core's start-up, not PyROOT's (issue: cold reducers)."""
    import subprocess
    import sys

    backend = InProcessBackend(npartitions=2)
    df = backend.make_dataframe("Events", dimuon_files)
    actions = [df.Count(), df.Histo1D(("pt", "pt", 20, 0, 100), "Muon_pt"), df.Sum("nMuon")]
    actions[0].GetValue()
    paths = []
    for index, result in enumerate(backend.fresh_results()):
        paths.append(str(tmp_path / f"p{index}.root"))
        rows = str(tmp_path / f"rows{index}.root")
        partial.write_partial(
            paths[-1], result, job_id="jnative", range_id=index, columns_file=partial.ColumnsFile(rows, rows)
        )
    assert {slot["kind"] for slot in partial.read_meta(paths[0]).slots} == {"scalar", "object"}
    merged = str(tmp_path / "merged.root")
    # Nor the client's modules: the package loads them on first use (distrdf_oscar/__init__.py).
    script = (
        "import sys; from distrdf_oscar.protocol import partial; partial.merge_partials(sys.argv[1], sys.argv[2:]); "
        "print(sorted(m for m in ('cppyy', 'libcppyy', 'distrdf_oscar.client.executor', 'distrdf_oscar.local') "
        "if m in sys.modules))"
    )  # PyROOT's engine, the executor, the embedded platform
    out = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", script, merged, *paths],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "[]", out.stdout
    result, meta = partial.read_partial(merged)
    assert meta.ranges == [(0, 1), (1, 2)]
    assert result.mergeables[0].GetValue() == ROOT.RDataFrame("Events", dimuon_files).Count().GetValue()
