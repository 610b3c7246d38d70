"""End to end on the embedded platform: every DistRDF operation vs single-process RDataFrame.

Each job books many actions in one graph, because every job pays function
start-up and JIT; the matrix covers reductions x npartitions x start modes x
data sources without running the full cross product in cold mode.
"""

from __future__ import annotations

import json
import os
import re
import subprocess

import numpy as np
import pytest
import ROOT

import distrdf_oscar as dro
from compare import assert_same_value
from graphs import book_all, friend_chain, values, write_friend_trees

pytestmark = pytest.mark.usefixtures("secret_scan")  # conftest.py: these jobs' objects and logs are searched

# ROOT's just-in-time compiler refusing a Define or Filter, on the client (cppyy's std::runtime_error);
# the compiler's own diagnostics go to stderr.
JIT_ERROR = ROOT.std.runtime_error
JIT_FAILED = "RDataFrame: An error occurred during just-in-time compilation"

REDUCTIONS = {
    "auto": "auto",  # the default
    "tree2": dro.TreeReduction(fan_in=2),
    "tree4": dro.TreeReduction(fan_in=4),
    "coordinated": dro.CoordinatedReduction(),
}


@pytest.fixture(scope="module")
def reference(dimuon_files):
    return values(book_all(ROOT.RDataFrame("Events", dimuon_files)))


def bucket_keys(executor) -> list[str]:
    return [k for k in executor.storage.list("") if not k.endswith("/")]


def job_keys(executor) -> list[str]:
    from distrdf_oscar.protocol import layout

    return [k for k in bucket_keys(executor) if layout.job_of_key(k)]


# --- the matrix --------------------------------------------------------------------------------


# The default (auto) at every size; each fixed reduction at one size that gives it several merges.
WARM_MATRIX = [
    ("auto", 1),
    ("auto", 2),
    ("auto", 7),
    ("auto", 16),
    ("tree2", 16),
    ("tree4", 7),
    ("coordinated", 7),
]


@pytest.mark.parametrize(("reduction", "npartitions"), WARM_MATRIX)
def test_ttree_all_actions_on_the_warm_pool(pool_cluster, dimuon_files, reference, reduction, npartitions):
    executor = pool_cluster.executor(reduction=REDUCTIONS[reduction], progress=False)
    df = ROOT.RDataFrame("Events", dimuon_files, executor=executor, npartitions=npartitions)
    _check_all(df, reference, dimuon_files)
    assert job_keys(executor) == []
    assert executor.last_job.pool
    calls = [e for e in executor.last_job.tracker.expected if e.kind == "mapper"]
    if reduction == "auto":
        assert executor.last_choice is not None
        assert len(calls) == -(-npartitions // executor.last_choice.ranges_per_call)
    else:  # by default a pool's mapper call takes ceil(N / (4 calls x 2 workers)) ranges
        assert len(calls) == -(-npartitions // -(-npartitions // 8))


@pytest.mark.parametrize(("reduction", "npartitions"), [("tree2", 16), ("coordinated", 7)])
def test_ttree_all_actions_prestarted(prestarted_cluster, dimuon_files, reference, reduction, npartitions):
    executor = prestarted_cluster.executor(reduction=REDUCTIONS[reduction], progress=False)
    df = ROOT.RDataFrame("Events", dimuon_files, executor=executor, npartitions=npartitions)
    _check_all(df, reference, dimuon_files)
    assert job_keys(executor) == []
    # By default a file-triggered mapper call takes ceil(N / 2 workers) ranges: one call per slot.
    calls = [e for e in executor.last_job.tracker.expected if e.kind == "mapper"]
    assert len(calls) == min(npartitions, 2)


# Cold functions pay interpreter start-up, ROOT import and the graph's JIT every time: fewer cases.
# Cold mode: one function does every action; the reductions run cold in test_faults.py.
@pytest.mark.parametrize(("reduction", "npartitions"), [("tree4", 1)])
def test_ttree_all_actions_cold(cold_cluster, dimuon_files, reference, reduction, npartitions):
    executor = cold_cluster.executor(reduction=REDUCTIONS[reduction], progress=False)
    df = ROOT.RDataFrame("Events", dimuon_files, executor=executor, npartitions=npartitions)
    _check_all(df, reference, dimuon_files)
    assert job_keys(executor) == []


def _check_all(df, expected, files):
    actions = book_all(df)
    variations = ROOT.RDF.Distributed.VariationsFor(actions[-1])
    got = values(actions)
    for index, (g, e) in enumerate(zip(got, expected, strict=True)):
        assert_same_value(g, e, f"action {index}")
    local = ROOT.RDF.Experimental.VariationsFor(book_all(ROOT.RDataFrame("Events", files))[-1])
    assert sorted(variations.GetKeys()) == sorted(str(k) for k in local.GetKeys())
    for key in local.GetKeys():
        assert_same_value(variations[str(key)], local[key], f"variation {key}")


@pytest.mark.parametrize(
    ("mode", "reduction", "npartitions"),
    [
        ("pool", "auto", 16),
        ("prestarted", "coordinated", 7),
        ("prestarted", "tree4", 1),
        ("cold", "tree4", 1),  # cold functions cost seconds each; test_faults.py runs the reductions cold
    ],
)
def test_empty_source_all_actions(request, mode, reduction, npartitions):
    cluster = request.getfixturevalue(f"{mode}_cluster")
    executor = cluster.executor(reduction=REDUCTIONS[reduction], progress=False)

    def build(df):
        df = df.Define("x", "double(rdfentry_ % 97) * 0.5").Define("i", "int(rdfentry_ % 5)")
        df = df.Define("w", "1.0 + (rdfentry_ % 3)")
        return [
            df.Count(),
            df.Sum("x"),
            df.Mean("x"),
            df.StdDev("x"),
            df.Min("i"),
            df.Max("x"),
            df.Histo1D(("e1", "e1", 50, 0, 50), "x", "w"),
            df.Profile1D(("ep", "ep", 10, 0, 50), "x", "w"),
            df.Histo2D(("e2", "e2", 10, 0, 50, 5, 0, 5), "x", "i"),
            df.Graph("x", "w"),
            df.Filter("i == 2").AsNumpy(["x"], lazy=True),
        ]

    got = values(build(ROOT.RDataFrame(10_000, executor=executor, npartitions=npartitions)))
    expected = values(build(ROOT.RDataFrame(10_000)))
    for index, (g, e) in enumerate(zip(got, expected, strict=True)):
        assert_same_value(g, e, f"action {index}")


# --- features --------------------------------------------------------------------------------------


def test_default_npartitions_is_cluster_concurrency(prestarted_cluster, dimuon_files):
    executor = prestarted_cluster.executor(progress=False)
    df = ROOT.RDataFrame("Events", dimuon_files, executor=executor)
    count = df.Count()
    assert count.GetValue() == ROOT.RDataFrame("Events", dimuon_files).Count().GetValue()
    assert df._headnode.npartitions == prestarted_cluster.workers


def test_report_and_filters_on_missing_columns(pool_cluster, tmp_path):
    # One file with an "extra" column, one without: FilterAvailable/FilterMissing/DefaultValueFor.
    paths = []
    for index, with_extra in enumerate((True, False)):
        path = str(tmp_path / f"part{index}.root")
        df = ROOT.RDataFrame(500).Define("x", f"double(rdfentry_ + {index * 500})")
        columns = ["x"]
        if with_extra:
            df = df.Define("extra", "int(rdfentry_ % 7)")
            columns.append("extra")
        df.Snapshot("T", path, columns)
        paths.append(path)

    def build(df):
        return [
            df.FilterAvailable("extra").Count(),
            df.FilterMissing("extra").Count(),
            df.DefaultValueFor("extra", 100).Sum("extra"),
            df.Filter("x > 100", "x cut").Filter("x < 900", "x window").Count(),
        ]

    executor = pool_cluster.executor(progress=False)
    for npartitions in (1, 3):
        dist = ROOT.RDataFrame("T", paths, executor=executor, npartitions=npartitions)
        got = values(build(dist))
        expected = values(build(ROOT.RDataFrame("T", paths)))
        assert got == expected
        report = dist.Filter("x > 100", "x cut").Filter("x < 900", "x window").Report()
        cuts = {cut.GetName(): (cut.GetPass(), cut.GetAll()) for cut in report.GetValue()}
        assert cuts == {"x cut": (899, 1000), "x window": (799, 899)}


def test_friend_trees(pool_cluster, dimuon_files, tmp_path):
    friends = write_friend_trees(dimuon_files, tmp_path)

    def build(df):
        return [df.Sum("Friends.weight"), df.Histo1D(("fw", "fw", 20, 0, 10), "Friends.weight", "nMuon")]

    main, _friend = friend_chain(dimuon_files, friends)
    dist = ROOT.RDataFrame(main, executor=pool_cluster.executor(progress=False), npartitions=4)
    got = values(build(dist))
    main2, _friend2 = friend_chain(dimuon_files, friends)
    expected = values(build(ROOT.RDataFrame(main2)))
    for index, (g, e) in enumerate(zip(got, expected, strict=True)):
        assert_same_value(g, e, f"friend action {index}")


def test_fromspec_and_define_per_sample(pool_cluster, dimuon_files, tmp_path):
    spec = {
        "samples": {
            "first": {"trees": ["Events"], "files": dimuon_files[:1], "metadata": {"scale": 2.0}},
            "rest": {
                "trees": ["Events"] * (len(dimuon_files) - 1),
                "files": dimuon_files[1:],
                "metadata": {"scale": 0.5},
            },
        }
    }
    path = str(tmp_path / "spec.json")
    with open(path, "w") as f:
        json.dump(spec, f)

    def build(df):
        df = df.DefinePerSample("scale", 'rdfsampleinfo_.GetD("scale")').Define("sw", "scale * nMuon")
        return [df.Sum("sw"), df.Histo1D(("sw", "sw", 20, 0, 10), "sw"), df.Count()]

    executor = pool_cluster.executor(progress=False)
    got = values(build(ROOT.RDF.Experimental.FromSpec(path, executor=executor, npartitions=4)))
    expected = values(build(ROOT.RDF.Experimental.FromSpec(path)))
    for index, (g, e) in enumerate(zip(got, expected, strict=True)):
        assert_same_value(g, e, f"spec action {index}")


def test_sample_info_shows_relative_paths_as_written(pool_cluster, tmp_path, monkeypatch):
    """As in ROOT's own DistRDF tests (TestDefinePerSample): files named relative to the working
    directory, ``../data/...``; rdfsampleinfo_ must show them so in the functions too."""
    (tmp_path / "data").mkdir()
    (tmp_path / "work").mkdir()
    for index in range(3):
        ROOT.RDataFrame(10).Define("x", f"double(rdfentry_ + {index * 10})").Snapshot(
            "Events", str(tmp_path / "data" / f"sample{index + 1}.root")
        )
    monkeypatch.chdir(tmp_path / "work")
    files = [f"../data/sample{index}.root" for index in (1, 2, 3)]

    def build(df):
        df = df.DefinePerSample("name", "rdfsampleinfo_.AsString()").DefinePerSample(
            "weight", 'rdfsampleinfo_.Contains("sample2") ? 2.0 : 1.0'
        )
        return [df.Filter(f'name == "{name}/Events"').Count() for name in files] + [df.Sum("weight")]

    got = values(
        build(ROOT.RDataFrame("Events", files, executor=pool_cluster.executor(progress=False), npartitions=3))
    )
    assert got == values(build(ROOT.RDataFrame("Events", files)))
    assert got[:3] == [10, 10, 10]
    assert os.listdir(tmp_path / "work") == []  # nothing of the functions' is left where the user is


def test_rungraphs_concurrent_jobs_do_not_interfere(pool_cluster, dimuon_files):
    executors = [
        pool_cluster.executor(reduction=r, progress=False)
        for r in (dro.TreeReduction(2), dro.CoordinatedReduction(), dro.TreeReduction(4))
    ]
    histos, expected = [], []
    for index, executor in enumerate(executors):
        cut = f"nMuon >= {index}"
        df = ROOT.RDataFrame("Events", dimuon_files, executor=executor, npartitions=3 + index)
        histos.append(df.Filter(cut).Histo1D(("r", "r", 30, 0, 30), "Muon_pt"))
        expected.append(
            ROOT.RDataFrame("Events", dimuon_files)
            .Filter(cut)
            .Histo1D(("r", "r", 30, 0, 30), "Muon_pt")
            .GetValue()
        )
    assert ROOT.RDF.RunGraphs(histos) == 3
    for got, want in zip(histos, expected, strict=True):
        assert_same_value(got.GetValue(), want, "RunGraphs histogram")
    assert job_keys(executors[0]) == []


@pytest.mark.parametrize(
    ("mode", "reduction", "npartitions"),
    [
        ("pool", "auto", 7),
        ("prestarted", "coordinated", 6),
        ("cold", "tree4", 5),
    ],
)
def test_asnumpy_of_millions_in_entry_order(request, mode, reduction, npartitions):
    """Numeric columns travel as chunk trees (columns.py); an RVec column stays pickled. Both
    arrive in single-process entry order, whatever order the reducers merged the partials in."""
    cluster = request.getfixturevalue(f"{mode}_cluster")
    executor = cluster.executor(reduction=REDUCTIONS[reduction], progress=False)

    def book(df):
        df = df.Define("x", "sin(double(rdfentry_)) * 1e3").Define("n", "int(rdfentry_ % 1013) - 500")
        df = df.Define("big", "ULong64_t(rdfentry_) * 4294967311ull").Define(
            "q", "float(rdfentry_ % 7) / 3.f"
        )
        df = df.Define("b", "rdfentry_ % 3 == 0").Define("c", "(unsigned char)(rdfentry_ % 251)")
        passing = df.Filter("rdfentry_ % 5 != 1")
        return [
            passing.AsNumpy(["x", "n", "big", "q", "b", "c"], lazy=True),
            df.Filter("rdfentry_ % 100000 == 7")
            .Define("v", "ROOT::RVecF{1.f, float(rdfentry_)}")
            .AsNumpy(["v", "x"], lazy=True),
            df.Filter("false").AsNumpy(["x"], lazy=True),
        ]

    entries = 1_000_000 if mode == "cold" else 3_000_000  # cold: the same path, fresh processes
    got = [r.GetValue() for r in book(ROOT.RDataFrame(entries, executor=executor, npartitions=npartitions))]
    want = [r.GetValue() for r in book(ROOT.RDataFrame(entries))]
    assert len(want[0]["x"]) == entries * 4 // 5
    assert_same_value(got[0], want[0], "numeric columns")
    assert list(got[0]) == ["x", "n", "big", "q", "b", "c"]
    assert list(got[1]) == ["v", "x"]
    assert [list(v) for v in got[1]["v"]] == [list(v) for v in want[1]["v"]]
    np.testing.assert_array_equal(got[1]["x"], want[1]["x"])
    assert_same_value(got[2], want[2], "empty selection")


def test_snapshot_lands_where_asked(pool_cluster, dimuon_files, tmp_path):
    executor = pool_cluster.executor(progress=False)
    df = ROOT.RDataFrame("Events", dimuon_files, executor=executor, npartitions=3)
    target = tmp_path / "snaps" / "snap.root"
    snapshot = df.Define("x", "nMuon * 2").Filter("nMuon > 1").Snapshot("Skim", str(target), ["nMuon", "x"])
    written = sorted(p.name for p in (tmp_path / "snaps").iterdir())
    assert written == [f"snap_{i}.root" for i in range(3)]
    expected = ROOT.RDataFrame("Events", dimuon_files).Filter("nMuon > 1").Count().GetValue()
    assert (
        ROOT.RDataFrame("Skim", [str(tmp_path / "snaps" / n) for n in written]).Count().GetValue() == expected
    )
    # The snapshot is itself a distributed dataframe on the same executor.
    assert (
        snapshot.Sum("x").GetValue()
        == 2 * ROOT.RDataFrame("Events", dimuon_files).Filter("nMuon > 1").Sum("nMuon").GetValue()
    )
    assert job_keys(executor) == []


@pytest.fixture
def restore_distributed_state():
    """DistRDF keeps distributed files and code on its base class: undo for later tests."""
    from ROOT._distrdf.Backends.Base import BaseBackend

    saved = {
        name: set(getattr(BaseBackend, name)) for name in ("headers", "files", "pcms", "shared_libraries")
    }
    initialization = BaseBackend.__dict__["initialization"]  # the staticmethod itself, not its function
    yield
    for name, value in saved.items():
        setattr(BaseBackend, name, value)
    BaseBackend.initialization = initialization


def test_distributed_code_headers_libraries_files_and_initialize(
    pool_cluster, dimuon_files, tmp_path, restore_distributed_state
):
    header = tmp_path / "dro_triple.h"
    header.write_text("#pragma once\nint dro_triple(int x);\n")
    source = tmp_path / "dro_triple.cxx"
    source.write_text('extern "C++" int dro_triple(int x) { return 3 * x; }\n')
    library = tmp_path / "libdrotriple.so"
    subprocess.run(["g++", "-shared", "-fPIC", "-o", str(library), str(source)], check=True)
    data = tmp_path / "offset.txt"
    data.write_text("7\n")
    ROOT.RDF.Distributed.DistributeSharedLibs(str(library))
    ROOT.RDF.Distributed.DistributeHeaders(str(header))
    ROOT.RDF.Distributed.DistributeFiles(str(data))
    ROOT.RDF.Distributed.DistributeCppCode("int dro_add_offset(int x) { return x + 100; }")
    # A lambda travels by value (cloudpickle), as a user's notebook function would.
    ROOT.RDF.Distributed.initialize(lambda: ROOT.gInterpreter.Declare("int dro_init_value() { return 5; }"))
    ROOT.RDF.Distributed.DistributeCppCode(
        '#include <fstream>\nint dro_read_offset_remote() { std::ifstream f("offset.txt"); int v = -1; f >> v; return v; }'
    )

    executor = pool_cluster.executor(progress=False)
    df = ROOT.RDataFrame("Events", dimuon_files, executor=executor, npartitions=3)
    df = df.Define("t", "dro_triple(nMuon) + dro_add_offset(0) + dro_init_value() + dro_read_offset_remote()")
    got = df.Sum("t").GetValue()
    n = ROOT.RDataFrame("Events", dimuon_files)
    expected = 3 * n.Sum("nMuon").GetValue() + (100 + 5 + 7) * n.Count().GetValue()
    assert got == expected


_LIVE_ENTRIES: list[float] = []


def record_live_entries(histogram):
    # Module level: ROOT parses a callback's source, which fails for an indented nested function.
    _LIVE_ENTRIES.append(histogram.GetEntries())


def test_live_visualize_draws_partials(pool_cluster, dimuon_files):
    # Two ranges per call, pinned: auto's choice follows the session's job records.
    executor = pool_cluster.executor(progress=False, ranges_per_call=2)
    df = ROOT.RDataFrame("Events", dimuon_files, executor=executor, npartitions=4)
    histo = df.Histo1D(("live", "live", 40, 0, 40), "Muon_pt")
    seen = _LIVE_ENTRIES
    seen.clear()
    ROOT.RDF.Distributed.LiveVisualize({histo: record_live_entries})
    final = histo.GetValue()
    expected = (
        ROOT.RDataFrame("Events", dimuon_files).Histo1D(("live", "live", 40, 0, 40), "Muon_pt").GetValue()
    )
    assert_same_value(final, expected, "live histogram")
    # One call per mapper partial (each delivered once, also one that arrived with the result), and
    # none while only empty ranges have arrived: the two calls' partials (4 ranges, 2 slots).
    assert len(seen) == 2, seen
    assert seen[0] > 0
    assert seen == sorted(seen)
    assert seen[-1] <= final.GetEntries()


def test_a_finely_clustered_dataset_gives_every_range_work(prestarted_cluster, tmp_path):
    """DistRDF never splits a cluster: the benchmarks' datasets are written with small clusters so
    that every one of many ranges has entries. Each range's mapper runs an event loop, and the
    spectrum is the single-process one."""
    from distrdf_oscar.demo import analysis, dataset

    files = dataset.generate(str(tmp_path), 24000, files=2, cluster_entries=1000)
    assert [os.path.basename(f) for f in files] == [
        "dimuon_24000_1_c1000_000.root",
        "dimuon_24000_1_c1000_001.root",
    ]
    assert dataset.clusters(files) == 24
    executor = prestarted_cluster.executor(
        reduction=dro.TreeReduction(fan_in=4), progress=False, ranges_per_call=1
    )
    df = ROOT.RDataFrame("Events", files, executor=executor, npartitions=12)
    got = analysis.book_dimuon_spectrum(df)["spectrum"].GetValue()
    want = analysis.book_dimuon_spectrum(ROOT.RDataFrame("Events", files))["spectrum"].GetValue()
    assert_same_value(got, want, "spectrum")
    mappers = [f for f in executor.last_job.record.functions if f.role == "mapper"]
    assert len(mappers) == 12
    assert all("loop_started" in f.phases for f in mappers)
    with pytest.raises(ValueError, match="cluster_entries must be positive"):
        dataset.generate(str(tmp_path), 10, cluster_entries=0)


# --- failures ---------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["prestarted", "cold"])
def test_remote_error_reaches_user_with_traceback(request, dimuon_files, mode):
    cluster = request.getfixturevalue(f"{mode}_cluster")
    executor = cluster.executor(progress=False)
    df = ROOT.RDataFrame("Events", dimuon_files, executor=executor, npartitions=2)
    failing = df.Define("y", 'if (rdfentry_ == 5) throw std::runtime_error("boom at entry five"); return 1;')
    with pytest.raises(dro.RemoteError, match="boom at entry five") as info:
        failing.Sum("y").GetValue()
    assert "remote traceback" in str(info.value)
    assert "mapper-000000" in str(info.value)
    assert job_keys(executor) == []


def test_unknown_column_fails_in_the_client_before_any_function(prestarted_cluster, dimuon_files, capfd):
    executor = prestarted_cluster.executor(progress=False)
    before = bucket_keys(executor)
    df = ROOT.RDataFrame("Events", dimuon_files, executor=executor, npartitions=2)
    # DistRDF jit-checks the expression on the client (ROOT prints the compiler's message naming the column).
    with pytest.raises(JIT_ERROR, match=re.escape(JIT_FAILED)):
        df.Define("y", "no_such_column * 2").Sum("y").GetValue()
    assert "error: use of undeclared identifier 'no_such_column'" in capfd.readouterr().err
    assert bucket_keys(executor) == before


@pytest.mark.parametrize(
    ("what", "book", "error", "message", "diagnostics"),
    [
        # The backend checks the dataset before building the graph (dispatch.py).
        (
            "wrong tree name",
            lambda df: df.Count(),
            ValueError,
            r'^cannot build the RDataFrame: .*cannot find dataset "NoSuchTree" in file ".*dimuon.*\.root"',
            [],
        ),
        # The compiler sees the column as var0: its diagnostics quote the rest of the expression.
        (
            "C++ syntax error in a Define",
            lambda df: df.Define("y", "nMuon +* ;").Sum("y"),
            JIT_ERROR,
            rf"Define\(string_view name, string_view expression\) =>.*{re.escape(JIT_FAILED)}",
            ["error: expected expression", "var0 +* ;"],
        ),
        (
            "C++ syntax error in a Filter",
            lambda df: df.Filter("nMuon >> > 2").Count(),
            JIT_ERROR,
            rf"Filter\(string_view expression, string_view name = \"\"\) =>.*{re.escape(JIT_FAILED)}",
            ["error: expected expression", "var0 >> > 2"],
        ),
    ],
)
def test_bad_analysis_fails_before_any_function_and_leaves_nothing(
    prestarted_cluster, dimuon_files, capfd, what, book, error, message, diagnostics
):
    executor = prestarted_cluster.executor(progress=False)
    before = bucket_keys(executor)
    tree = "NoSuchTree" if what == "wrong tree name" else "Events"
    capfd.readouterr()
    with pytest.raises(error, match=re.compile(message, re.DOTALL)):
        book(ROOT.RDataFrame(tree, dimuon_files, executor=executor, npartitions=2)).GetValue()
    stderr = capfd.readouterr().err
    for diagnostic in diagnostics:
        assert diagnostic in stderr
    assert bucket_keys(executor) == before


def test_missing_input_file_is_reported(prestarted_cluster, dimuon_files, tmp_path):
    # One range per call (auto may batch both ranges into one call, e.g. while a pool is up).
    executor = prestarted_cluster.executor(progress=False, ranges_per_call=1)
    missing = str(tmp_path / "missing.root")
    # Two files, two ranges: the second range's mapper is the one to open the missing file.
    with pytest.raises(
        dro.RemoteError,
        match=rf"^job \S+: the mapper of range 1 \(file missing\.root\) failed: "
        rf'cannot read file "{re.escape(missing)}": not found\n',
    ):
        ROOT.RDataFrame(
            "Events", [dimuon_files[0], missing], executor=executor, npartitions=2
        ).Count().GetValue()
    assert job_keys(executor) == []


def test_plan_not_covering_partials_fails_before_anything_runs(prestarted_cluster, dimuon_files):
    executor = prestarted_cluster.executor(reduction=dro.CoordinatedReduction([6, 3]), progress=False)
    before = bucket_keys(executor)
    with pytest.raises(dro.PlanError, match="does not merge 4 partials exactly once"):
        ROOT.RDataFrame("Events", dimuon_files, executor=executor, npartitions=4).Count().GetValue()
    assert bucket_keys(executor) == before


def test_clean_exit_leaves_no_process_or_tempdir(dimuon_files):
    import tempfile

    before = set(os.listdir(tempfile.gettempdir()))
    cluster = dro.LocalCluster(workers=1, mode="cold", startup_delay=0.0).start()
    tmpdir, pid = cluster.platform.tmpdir, cluster.platform.pid
    executor = cluster.executor(progress=False)
    assert ROOT.RDataFrame(100, executor=executor, npartitions=1).Count().GetValue() == 100
    cluster.close()
    assert not os.path.exists(tmpdir)
    assert not os.path.exists(f"/proc/{pid}")
    assert set(os.listdir(tempfile.gettempdir())) - before == set()


def test_an_unknown_column_in_an_action_is_named_first(prestarted_cluster, dimuon_files):
    executor = prestarted_cluster.executor(progress=False)
    df = ROOT.RDataFrame("Events", dimuon_files, executor=executor, npartitions=2)
    with pytest.raises(dro.RemoteError) as info:
        df.Histo1D(("h", "h", 10, 0, 10), "no_such_column").GetValue()
    first_line = str(info.value).splitlines()[0]
    assert re.fullmatch(
        r"job j\d{14}-[0-9a-f]{8}: the mapper of range [01] \([^)]+\.root\) failed: "
        r"unknown column 'no_such_column'",
        first_line,
    ), first_line
    assert job_keys(executor) == []


@pytest.mark.parametrize("npartitions", [0, -3, 1.5])
def test_npartitions_below_one_is_refused_before_distrdf_divides_by_it(
    prestarted_cluster, dimuon_files, npartitions
):
    executor = prestarted_cluster.executor(progress=False)
    with pytest.raises(
        ValueError, match=re.escape(f"npartitions must be an integer of at least 1, got {npartitions}")
    ):
        ROOT.RDataFrame("Events", dimuon_files, executor=executor, npartitions=npartitions)


def test_the_demo_refuses_zero_partitions_naming_the_flag(capsys):
    from distrdf_oscar import cli

    assert cli.main(["demo", "--npartitions", "0"]) == 2
    assert "--npartitions, --workers, --events and --files must be at least 1" in capsys.readouterr().err
