"""The native core (``_core.merge_files``) merges every class exactly like one process would.

K partial files are produced by ROOT's RDataFrame from disjoint entry ranges of ONE dataset
(``RDataFrame(N)`` with deterministic pseudo-random columns, ``Range(lo, hi)`` per partial, all in
one event loop), merged with ONE ``merge_files`` call, and compared with the same objects computed
over all entries: bin by bin, exactly for counts and integer contents, to a relative 1e-12 for sums
of weights and moments (only the summation order differs).
"""

from __future__ import annotations

import math
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import ROOT

from compare import assert_same_graph, assert_same_hist, assert_same_statistic, assert_same_thn
from rootfiles import write_objects

_core = pytest.importorskip("distrdf_oscar._core")
MergeError = _core.MergeError

N = 20_000  # entries of the dataset
K = 5  # partial files
REL = 1e-12
BOUNDS = [N * k // K for k in range(K + 1)]
# Uneven ranges, so that no partial is a scaled copy of another.
BOUNDS[1:-1] = [b + 137 * k for k, b in enumerate(BOUNDS[1:-1], start=1)]

SUB_TITLE = "a subdirectory"
INNER_TITLE = "nested twice"

# key -> (class, how the partial and the reference are compared)
HISTOGRAMS = {
    "h1d": "TH1D",
    "h1f": "TH1F",
    "h1i": "TH1I",
    "h1c": "TH1C",
    "h1s": "TH1S",
    "h2d": "TH2D",
    "h2f": "TH2F",
    "h3d": "TH3D",
    "h3f": "TH3F",
    "prof": "TProfile",
    "prof2": "TProfile2D",
    "prof3": "TProfile3D",
    "sub/hsub": "TH1D",
    "sub/inner/h2inner": "TH2D",
}
INTEGER_HISTOGRAMS = {"h1i", "h1c", "h1s"}
THNS = {"thn": "THnT<double>", "thns": "THnSparseT<TArrayD>"}  # THnD, THnSparseD
GRAPHS = {"graph": "TGraph", "gae": "TGraphAsymmErrors"}

_declared = False


def _declare() -> None:
    global _declared
    if not _declared:
        ROOT.gInterpreter.Declare(
            """
            namespace dro_test {
            // splitmix64 of (entry, stream): deterministic, uncorrelated columns per entry.
            inline double u(ULong64_t entry, ULong64_t stream) {
               ULong64_t z = entry * 0x9E3779B97F4A7C15ULL + stream * 0xD1B54A32D192ED03ULL + 0x632BE59BD9B4E019ULL;
               z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
               z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
               z = z ^ (z >> 31);
               return (z >> 11) * 0x1.0p-53;
            }
            }
            """
        )
        _declared = True


def _model(cls: str, *args):
    status = ROOT.TH1.AddDirectoryStatus()
    ROOT.TH1.AddDirectory(False)
    try:
        return getattr(ROOT, cls)(*args)
    finally:
        ROOT.TH1.AddDirectory(status)


def _book(df) -> dict:
    """Every action of one partial (or of the reference over all entries), by output key.

    ``df`` is an RNode, so PyROOT instantiates each templated ``Fill`` once for all branches.
    """
    r = {}
    r["h1d"] = df.Histo1D(("h1d", "TH1D", 100, 0, 10), "x", "w")
    # Float histograms get integer weights: their contents stay exact in float arithmetic.
    r["h1f"] = df.Fill(_model("TH1F", "h1f", "TH1F", 64, 0, 10), ["x", "iw"])
    r["h1i"] = df.Fill(_model("TH1I", "h1i", "TH1I", 40, 0, 10), ["x", "iw"])
    # 1000 bins keep every TH1C bin far below its saturation at 127.
    r["h1c"] = df.Fill(_model("TH1C", "h1c", "TH1C", 1000, 0, 10), ["x"])
    r["h1s"] = df.Fill(_model("TH1S", "h1s", "TH1S", 50, 0, 10), ["y"])
    r["h2d"] = df.Histo2D(("h2d", "TH2D", 20, 0, 10, 15, 0, 5), "x", "y", "w")
    r["h2f"] = df.Fill(_model("TH2F", "h2f", "TH2F", 12, 0, 10, 10, 0, 5), ["x", "y", "iw"])
    r["h3d"] = df.Histo3D(("h3d", "TH3D", 8, 0, 10, 6, 0, 5, 5, 0, 2), "x", "y", "z", "w")
    r["h3f"] = df.Fill(_model("TH3F", "h3f", "TH3F", 5, 0, 10, 4, 0, 5, 3, 0, 2), ["x", "y", "z", "iw"])
    r["prof"] = df.Profile1D(("prof", "TProfile", 25, 0, 10), "x", "y", "w")
    r["prof2"] = df.Profile2D(("prof2", "TProfile2D", 10, 0, 10, 8, 0, 5), "x", "y", "z", "w")
    r["prof3"] = df.Fill(
        _model("TProfile3D", "prof3", "TProfile3D", 5, 0, 10, 4, 0, 5, 3, 0, 2), ["x", "y", "z", "t", "w"]
    )
    r["thn"] = df.HistoND(
        ("thn", "THnD", 3, [6, 5, 4], [0.0, 0.0, 0.0], [10.0, 5.0, 2.0]), ["x", "y", "z", "w"]
    )
    r["thns"] = df.HistoNSparseD(
        ("thns", "THnSparseD", 2, [200, 100], [0.0, 0.0], [10.0, 5.0]), ["x", "y", "w"]
    )
    r["graph"] = df.Filter("i == 7").Graph("x", "y")
    r["gae"] = df.Filter("i == 11").GraphAsymmErrors("x", "y", "w", "z", "t", "w")
    r["stat"] = df.Stats("x", "w")
    r["sub/hsub"] = df.Histo1D(("hsub", "sub TH1D", 30, 0, 2), "z")
    r["sub/inner/h2inner"] = df.Histo2D(("h2inner", "inner TH2D", 10, 0, 2, 10, 0, 3), "z", "t")
    # Scalars become TParameters (as partial files store Count/Sum/Min/Max).
    r["sum_x"] = df.Sum("x")
    r["count"] = df.Count()
    r["max_li"] = df.Max("li")
    r["min_li"] = df.Min("li")
    r["sum_i"] = df.Sum("i")
    return r


def _write_partial(path: str, results: dict) -> None:
    """Adds the objects of one partial to the file its Snapshot created."""
    f = ROOT.TFile(path, "UPDATE")
    assert not f.IsZombie()
    sub = f.mkdir("sub", SUB_TITLE)
    inner = sub.mkdir("inner", INNER_TITLE)
    dirs = {"": f, "sub": sub, "sub/inner": inner}
    for key, result in results.items():
        if key in ("sum_x", "count", "max_li", "min_li", "sum_i"):
            continue
        parent, _, name = key.rpartition("/")
        dirs[parent].WriteObject(result.GetValue(), name)
    f.WriteObject(ROOT.TParameter["double"]("psum", results["sum_x"].GetValue()), "psum")
    f.WriteObject(ROOT.TParameter["Long64_t"]("pcount", int(results["count"].GetValue())), "pcount")
    pmax = ROOT.TParameter["Long64_t"]("pmax", int(results["max_li"].GetValue()))
    pmax.SetBit(ROOT.TParameter["Long64_t"].kMax)
    f.WriteObject(pmax, "pmax")
    pmin = ROOT.TParameter["Long64_t"]("pmin", int(results["min_li"].GetValue()))
    pmin.SetBit(ROOT.TParameter["Long64_t"].kMin)
    f.WriteObject(pmin, "pmin")
    f.Close()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """K partial files of disjoint ranges and the reference results over all N entries."""
    if ROOT.IsImplicitMTEnabled():  # Range needs a sequential event loop
        ROOT.DisableImplicitMT()
    _declare()
    workdir = tmp_path_factory.mktemp("core")
    df = (
        ROOT.RDataFrame(N)
        .Define("x", "10 * dro_test::u(rdfentry_, 1)")
        .Define("y", "5 * dro_test::u(rdfentry_, 2) * dro_test::u(rdfentry_, 3)")
        .Define("z", "2 * dro_test::u(rdfentry_, 4)")
        .Define("t", "3 * dro_test::u(rdfentry_, 5) + x / 10")
        .Define("w", "0.25 + 1.5 * dro_test::u(rdfentry_, 6)")
        .Define("i", "int(x * 3)")
        .Define("iw", "double(1 + rdfentry_ % 3)")
        .Define("li", "Long64_t(dro_test::u(rdfentry_, 7) * 1e15) - 500000000000000LL")
    )
    opts = ROOT.RDF.RSnapshotOptions()
    opts.fLazy = True
    paths, partials, snapshots = [], [], []
    for k in range(K):
        ranged = ROOT.RDF.AsRNode(df.Range(BOUNDS[k], BOUNDS[k + 1]))
        path = str(workdir / f"part{k}.root")
        snapshots.append(ranged.Snapshot("events", path, ["x", "i", "li"], opts))
        partials.append(_book(ranged))
        paths.append(path)
    reference = _book(ROOT.RDF.AsRNode(df))
    reference["sum_x_tree"] = df.Sum("x")
    reference["h1d"].GetValue()  # one event loop runs every range and the reference
    for path, results in zip(paths, partials, strict=True):
        _write_partial(path, results)
    ref = {
        key: (
            r.GetValue()
            if key in ("sum_x", "count", "max_li", "min_li", "sum_i", "sum_x_tree")
            else r.GetValue().Clone()
        )
        for key, r in reference.items()
    }
    for obj in ref.values():
        if hasattr(obj, "SetDirectory"):
            obj.SetDirectory(ROOT.nullptr)
    per_partial_max = [int(p["max_li"].GetValue()) for p in partials]
    return {"paths": paths, "ref": ref, "workdir": workdir, "per_partial_max": per_partial_max}


@pytest.fixture(scope="module", params=[0, 1], ids=["threads-auto", "threads-1"])
def merged(request, dataset):
    """The K partials merged in ONE merge_files call, opened for reading."""
    out = str(dataset["workdir"] / f"merged-{request.param}.root")
    lines: list[str] = []
    summary = _core.merge_files(out, dataset["paths"], threads=request.param, log=lines.append)
    f = ROOT.TFile.Open(out)
    assert f
    assert not f.IsZombie()
    yield {"file": f, "summary": summary, "path": out, "log": lines}
    f.Close()


def _get(f, key):
    obj = f.Get(key)
    assert obj, f"merged file has no key {key}"
    if hasattr(obj, "SetDirectory") and not obj.InheritsFrom("TTree"):
        obj.SetDirectory(ROOT.nullptr)
    return obj


def _stats(h) -> np.ndarray:
    stats = np.zeros(13)
    h.GetStats(stats)
    return stats


@pytest.mark.parametrize("key", sorted(HISTOGRAMS))
def test_histograms_bin_by_bin(merged, dataset, key):
    h, ref = _get(merged["file"], key), dataset["ref"][key]
    assert h.ClassName() == HISTOGRAMS[key] == ref.ClassName()
    assert_same_hist(h, ref, key)
    # Stricter than compare.py: entries exact, sums of weights and moments to 1e-12.
    assert h.GetEntries() == ref.GetEntries()
    np.testing.assert_allclose(_stats(h), _stats(ref), rtol=REL, atol=0, err_msg=f"{key}: GetStats")
    ncells = ref.GetNcells()
    contents = np.array([h.GetBinContent(i) for i in range(ncells)])
    expected = np.array([ref.GetBinContent(i) for i in range(ncells)])
    if key.rpartition("/")[2] in INTEGER_HISTOGRAMS or not ref.GetSumw2N():
        np.testing.assert_array_equal(contents, expected, err_msg=f"{key}: integer contents")
        assert np.all(contents == np.round(contents))
    if ref.GetSumw2N():
        assert h.GetSumw2N() == ref.GetSumw2N()
        np.testing.assert_allclose(
            np.array([h.GetSumw2().At(i) for i in range(ncells)]),
            np.array([ref.GetSumw2().At(i) for i in range(ncells)]),
            rtol=REL,
            atol=0,
            err_msg=f"{key}: sumw2",
        )
    if ref.InheritsFrom("TProfile") or ref.InheritsFrom("TProfile2D") or ref.InheritsFrom("TProfile3D"):
        entries = np.array([h.GetBinEntries(i) for i in range(ncells)])
        np.testing.assert_allclose(
            entries,
            np.array([ref.GetBinEntries(i) for i in range(ncells)]),
            rtol=REL,
            atol=0,
            err_msg=f"{key}: bin entries",
        )


def test_integer_histograms_really_hold_counts(dataset):
    """The TH1C reference is not saturated (else its exactness check would prove little)."""
    ref = dataset["ref"]
    assert max(ref["h1c"].GetBinContent(i) for i in range(ref["h1c"].GetNcells())) < 100
    assert ref["h1i"].GetSumOfWeights() == pytest.approx(2 * N, rel=0.01)  # integer weights 1..3
    assert ref["h1s"].GetEntries() == N


@pytest.mark.parametrize("key", sorted(THNS))
def test_thn_filled_bins(merged, dataset, key):
    h, ref = _get(merged["file"], key), dataset["ref"][key]
    assert h.ClassName() == THNS[key] == ref.ClassName()
    assert_same_thn(h, ref, key)
    assert h.GetNbins() == ref.GetNbins()
    assert h.GetEntries() == ref.GetEntries()
    for name in ("GetSumw", "GetSumw2"):
        assert math.isclose(getattr(h, name)(), getattr(ref, name)(), rel_tol=REL), name
    for dim in range(ref.GetNdimensions()):
        assert math.isclose(h.GetSumwx(dim), ref.GetSumwx(dim), rel_tol=REL)
        assert math.isclose(h.GetSumwx2(dim), ref.GetSumwx2(dim), rel_tol=REL)
    if key == "thns":
        assert 0 < h.GetNbins() < 200 * 100  # really sparse


@pytest.mark.parametrize("key", sorted(GRAPHS))
def test_graph_points_as_sets(merged, dataset, key):
    g, ref = _get(merged["file"], key), dataset["ref"][key]
    assert g.ClassName() == GRAPHS[key]
    assert g.GetN() == ref.GetN() > 100
    assert_same_graph(g, ref, key)


def test_statistic(merged, dataset):
    s, ref = _get(merged["file"], "stat"), dataset["ref"]["stat"]
    assert s.ClassName() == "TStatistic"
    assert s.GetN() == ref.GetN() == N
    assert_same_statistic(s, ref)
    for name in ("GetW", "GetW2", "GetMean"):
        assert math.isclose(getattr(s, name)(), getattr(ref, name)(), rel_tol=REL), name
    assert s.GetMin() == ref.GetMin()
    assert s.GetMax() == ref.GetMax()


def test_parameters_merge_by_their_mode(merged, dataset):
    f, ref = merged["file"], dataset["ref"]
    psum, pcount, pmax, pmin = (_get(f, k) for k in ("psum", "pcount", "pmax", "pmin"))
    assert psum.ClassName() == "TParameter<double>"
    assert math.isclose(psum.GetVal(), ref["sum_x"], rel_tol=REL)
    assert pcount.ClassName() == "TParameter<Long64_t>"
    assert pcount.GetVal() == ref["count"] == N
    assert pmax.ClassName() == pmin.ClassName() == "TParameter<Long64_t>"
    assert pmax.GetVal() == ref["max_li"]
    assert pmin.GetVal() == ref["min_li"]
    # Not trivially equal: the partials' maxima differ, and a sum would be far off.
    assert len(set(dataset["per_partial_max"])) == K
    assert max(dataset["per_partial_max"]) == ref["max_li"]


def test_parameter_mode_bits_are_kept(merged):
    f = merged["file"]
    P = ROOT.TParameter["Long64_t"]
    pmax, pmin, pcount = _get(f, "pmax"), _get(f, "pmin"), _get(f, "pcount")
    assert (pmax.TestBit(P.kMax), pmax.TestBit(P.kMin), pmax.TestBit(P.kMultiply)) == (True, False, False)
    assert (pmin.TestBit(P.kMax), pmin.TestBit(P.kMin), pmin.TestBit(P.kMultiply)) == (False, True, False)
    assert (pcount.TestBit(P.kMax), pcount.TestBit(P.kMin), pcount.TestBit(P.kMultiply)) == (
        False,
        False,
        False,
    )
    assert not _get(f, "psum").TestBit(ROOT.TParameter["double"].kMax)


def _tree_columns(tree) -> dict[str, np.ndarray]:
    n = tree.GetEntries()
    tree.SetEstimate(n + 1)
    out = {}
    for column in ("x", "i", "li"):
        assert tree.Draw(column, "", "goff") == n
        out[column] = np.frombuffer(tree.GetV1(), dtype=np.float64, count=n).copy()
    return out


def test_tree_is_concatenated(merged, dataset):
    tree = merged["file"].Get("events")
    assert tree
    assert tree.ClassName() == "TTree"
    assert tree.GetEntries() == N
    cols = _tree_columns(tree)
    ref = dataset["ref"]
    assert math.isclose(cols["x"].sum(), ref["sum_x"], rel_tol=REL)
    assert int(cols["i"].sum()) == int(ref["sum_i"])
    assert int(cols["li"].max()) == ref["max_li"]
    assert int(cols["li"].min()) == ref["min_li"]
    # In input order: the partials' trees one after the other.
    first = ROOT.TFile.Open(dataset["paths"][0])
    n0 = first.Get("events").GetEntries()
    x0 = _tree_columns(first.Get("events"))["x"]
    first.Close()
    np.testing.assert_array_equal(cols["x"][:n0], x0)


def test_tree_recompressed_when_compression_differs(dataset, tmp_path):
    """Baskets are copied as they are only when the output has the inputs' compression."""
    first = ROOT.TFile.Open(dataset["paths"][0])
    inputs_setting = first.GetCompressionSettings()
    first.Close()
    setting = 404 if inputs_setting != 404 else 505
    out = str(tmp_path / "recompressed.root")
    summary = _core.merge_files(out, dataset["paths"], compression=setting)
    assert summary["tree_entries"] == N
    f = ROOT.TFile.Open(out)
    try:
        assert f.GetCompressionSettings() == setting
        tree = f.Get("events")
        assert tree.GetEntries() == N
        assert tree.GetBranch("x").GetCompressionSettings() == setting
        cols = _tree_columns(tree)
        assert math.isclose(cols["x"].sum(), dataset["ref"]["sum_x"], rel_tol=REL)
        assert int(cols["i"].sum()) == int(dataset["ref"]["sum_i"])
        assert_same_hist(_get(f, "prof2"), dataset["ref"]["prof2"])
    finally:
        f.Close()


def test_nested_directories_keep_titles(merged):
    f = merged["file"]
    sub = f.GetDirectory("sub")
    inner = f.GetDirectory("sub/inner")
    assert sub
    assert inner
    assert sub.GetTitle() == SUB_TITLE
    assert inner.GetTitle() == INNER_TITLE
    assert sorted(k.GetName() for k in sub.GetListOfKeys()) == ["hsub", "inner"]
    assert [k.GetName() for k in inner.GetListOfKeys()] == ["h2inner"]


def test_summary_counts(merged):
    s = merged["summary"]
    assert set(s) == {
        "inputs",
        "objects",
        "trees",
        "directories",
        "excluded",
        "tree_entries",
        "output_bytes",
        "seconds",
    }
    top = len([k for k in HISTOGRAMS if "/" not in k]) + len(THNS) + len(GRAPHS) + 1 + 4  # stat, 4 params
    assert s["inputs"] == K
    assert s["objects"] == top + 2 + 1  # the two nested histograms and the tree
    assert s["trees"] == 1
    assert s["directories"] == 2
    assert s["excluded"] == 0
    assert s["tree_entries"] == N
    assert s["output_bytes"] == os.path.getsize(merged["path"])
    assert s["seconds"] >= 0
    assert merged["log"], "log= received no progress lines"
    # Every key of the inputs, no more, no less.
    f = merged["file"]
    assert sorted(k.GetName() for k in f.GetListOfKeys()) == sorted(
        [k for k in HISTOGRAMS if "/" not in k]
        + list(THNS)
        + list(GRAPHS)
        + ["stat", "psum", "pcount", "pmax", "pmin", "events", "sub"]
    )


def test_exclude_skips_a_directory(dataset, tmp_path):
    out = tmp_path / "excluded.root"  # a path-like output works too
    summary = _core.merge_files(out, dataset["paths"], exclude=["sub"])
    assert summary["excluded"] == 1
    assert summary["directories"] == 0
    top_level = len([k for k in HISTOGRAMS if "/" not in k]) + len(THNS) + len(GRAPHS) + 1 + 4
    assert summary["objects"] == top_level + 1  # everything at top level, the tree included
    f = ROOT.TFile.Open(str(out))
    try:
        names = {k.GetName() for k in f.GetListOfKeys()}
        assert "sub" not in names
        assert {"h1d", "events", "pmax"} <= names
        assert_same_hist(_get(f, "h1d"), dataset["ref"]["h1d"])
    finally:
        f.Close()


def test_single_input_is_copied(dataset, tmp_path):
    src = dataset["paths"][2]
    out = str(tmp_path / "single.root")
    summary = _core.merge_files(out, [src])
    assert (summary["inputs"], summary["trees"], summary["directories"]) == (1, 1, 2)
    a, b = ROOT.TFile.Open(src), ROOT.TFile.Open(out)
    try:
        for key in sorted(HISTOGRAMS):
            assert_same_hist(_get(b, key), _get(a, key), key)
            assert _get(b, key).GetEntries() == _get(a, key).GetEntries()
        for key in THNS:
            assert_same_thn(_get(b, key), _get(a, key), key)
        for key in GRAPHS:
            assert_same_graph(_get(b, key), _get(a, key), key)
        assert_same_statistic(_get(b, "stat"), _get(a, "stat"))
        for key in ("psum", "pcount", "pmax", "pmin"):
            assert _get(b, key).GetVal() == _get(a, key).GetVal()
        assert _get(b, "pmax").TestBit(ROOT.TParameter["Long64_t"].kMax)
        assert b.Get("events").GetEntries() == a.Get("events").GetEntries() == summary["tree_entries"]
    finally:
        a.Close()
        b.Close()


# ---------------------------------------------------------------------------------------------
# Errors: MergeError with its kind, a message naming file/key/class, and no output left behind.


def _h(cls="TH1D", name="h"):
    h = _model(cls, name, name, 10, 0, 1)
    h.Fill(0.5)
    return h


def _expect_error(out, inputs, kind, *fragments, **kwargs) -> MergeError:
    with pytest.raises(MergeError) as info:
        _core.merge_files(str(out), [str(i) for i in inputs], **kwargs)
    err = info.value
    assert isinstance(err, RuntimeError)
    assert err.kind == kind, f"kind {err.kind!r}: {err}"
    for fragment in fragments:
        assert fragment in str(err), f"{fragment!r} not in message {str(err)!r}"
    return err


def test_error_class_mismatch(tmp_path):
    a = write_objects(tmp_path / "a.root", h=_h("TH1D"), g=_h("TH1D", "g"))
    b = write_objects(tmp_path / "b.root", h=_h("TH1D"), g=_h("TH1F", "g"))
    out = tmp_path / "out.root"
    _expect_error(out, [a, b], "mismatch", "'g'", "b.root", "TH1F", "TH1D")
    assert not out.exists()


def test_error_key_missing_in_some_input(tmp_path):
    a = write_objects(tmp_path / "a.root", h=_h(), extra=_h(name="extra"))
    b = write_objects(tmp_path / "b.root", h=_h())
    c = write_objects(tmp_path / "c.root", h=_h(), extra=_h(name="extra"))
    out = tmp_path / "out.root"
    _expect_error(out, [a, b, c], "mismatch", "'extra'", "b.root")
    assert not out.exists()
    # A key the first input lacks is refused too.
    _expect_error(out, [b, a], "mismatch", "'extra'", "a.root")
    assert not out.exists()


def test_error_key_missing_in_a_subdirectory(tmp_path):
    paths = []
    for name, with_key in (("a", True), ("b", False)):
        f = ROOT.TFile(str(tmp_path / f"{name}.root"), "RECREATE")
        d = f.mkdir("dir")
        d.WriteObject(_h(), "h")
        if with_key:
            d.WriteObject(_h(name="only_a"), "only_a")
        f.Close()
        paths.append(tmp_path / f"{name}.root")
    out = tmp_path / "out.root"
    _expect_error(out, paths, "mismatch", "dir/only_a", "b.root")
    assert not out.exists()


def test_error_class_without_merge_function(tmp_path):
    a = write_objects(tmp_path / "a.root", h=_h(), note=ROOT.TNamed("note", "a"))
    b = write_objects(tmp_path / "b.root", h=_h(), note=ROOT.TNamed("note", "b"))
    out = tmp_path / "out.root"
    _expect_error(out, [a, b], "mismatch", "'note'", "TNamed", "merge function")
    assert not out.exists()


def test_error_missing_input(tmp_path):
    a = write_objects(tmp_path / "a.root", h=_h())
    out = tmp_path / "out.root"
    _expect_error(out, [a, tmp_path / "nope.root"], "input", "nope.root")
    assert not out.exists()
    _expect_error(out, [tmp_path / "nope.root", a], "input", "nope.root")
    assert not out.exists()


def test_error_non_root_input(tmp_path):
    a = write_objects(tmp_path / "a.root", h=_h())
    text = tmp_path / "notes.root"
    text.write_text("this is not a ROOT file\n" * 100)
    out = tmp_path / "out.root"
    _expect_error(out, [a, text], "input", "notes.root", "not a ROOT file")
    assert not out.exists()
    empty = tmp_path / "empty.root"
    empty.write_bytes(b"")
    _expect_error(out, [a, empty], "input", "empty.root")
    assert not out.exists()


def test_error_no_inputs(tmp_path):
    out = tmp_path / "out.root"
    _expect_error(out, [], "input")
    assert not out.exists()


def test_error_existing_output_without_overwrite(tmp_path):
    a = write_objects(tmp_path / "a.root", h=_h())
    b = write_objects(tmp_path / "b.root", h=_h())
    out = tmp_path / "out.root"
    out.write_bytes(b"precious")
    _expect_error(out, [a, b], "output", "out.root", "exists")
    assert out.read_bytes() == b"precious"  # untouched
    summary = _core.merge_files(str(out), [a, b], overwrite=True)
    assert summary["objects"] == 1
    f = ROOT.TFile.Open(str(out))
    assert f.Get("h").GetEntries() == 2
    f.Close()


def test_error_output_is_an_input(tmp_path):
    a = write_objects(tmp_path / "a.root", h=_h())
    b = write_objects(tmp_path / "b.root", h=_h())
    before = Path(a).read_bytes()
    _expect_error(a, [a, b], "output", "a.root", overwrite=True)
    assert Path(a).read_bytes() == before


def test_error_incompatible_binning(tmp_path):
    a = write_objects(tmp_path / "a.root", h=_model("TH1D", "h", "h", 10, 0, 1))
    b = write_objects(tmp_path / "b.root", h=_model("TH1D", "h", "h", 7, 0, 3))
    out = tmp_path / "out.root"
    err = _expect_error(out, [a, b], "mismatch", "'h'", "TH1D")
    assert not out.exists(), err


def test_error_output_cannot_be_created(tmp_path):
    a = write_objects(tmp_path / "a.root", h=_h())
    out = tmp_path / "no" / "such" / "dir" / "out.root"
    _expect_error(out, [a, a], "write", "out.root")
    assert not out.parent.exists()


def test_error_in_log_callback_propagates_and_removes_output(tmp_path):
    a = write_objects(tmp_path / "a.root", h=_h())
    out = tmp_path / "out.root"

    def log(line):
        raise ValueError("log refused " + line)

    with pytest.raises(ValueError, match="log refused"):
        _core.merge_files(str(out), [a, a], log=log)
    assert not out.exists()


def test_only_the_highest_cycle_is_merged(tmp_path):
    path = str(tmp_path / "cycles.root")
    f = ROOT.TFile(path, "RECREATE")
    h = _h()
    f.WriteObject(h, "h")  # cycle 1: one entry
    h.Fill(0.25)
    f.WriteObject(h, "h")  # cycle 2: two entries
    f.Close()
    out = str(tmp_path / "out.root")
    summary = _core.merge_files(out, [path, path, path])
    assert summary["objects"] == 1
    f = ROOT.TFile.Open(out)
    try:
        assert [(k.GetName(), k.GetCycle()) for k in f.GetListOfKeys()] == [("h", 1)]
        assert f.Get("h").GetEntries() == 6
    finally:
        f.Close()


def test_error_tree_with_other_branches(dataset, tmp_path):
    # Same keys and classes as a partial, but the tree has other branches.
    path = str(tmp_path / "other_tree.root")
    f = ROOT.TFile(path, "RECREATE")
    tree = ROOT.TTree("events", "events")
    x, other = np.zeros(1), np.zeros(1, dtype=np.int32)
    tree.Branch("x", x, "x/D")
    tree.Branch("other", other, "other/I")
    for _ in range(10):
        tree.Fill()
    tree.Write()
    src = ROOT.TFile.Open(dataset["paths"][0])
    for key in src.GetListOfKeys():
        if key.GetName() != "events":
            obj = key.ReadObj()
            if obj.InheritsFrom("TDirectory"):
                continue
            f.WriteObject(obj, key.GetName())
    sub = f.mkdir("sub", SUB_TITLE)
    sub.WriteObject(src.Get("sub/hsub"), "hsub")
    sub.mkdir("inner", INNER_TITLE).WriteObject(src.Get("sub/inner/h2inner"), "h2inner")
    f.Close()
    src.Close()
    out = tmp_path / "out.root"
    _expect_error(out, [dataset["paths"][0], path], "mismatch", "'events'", "other_tree.root", "branches")
    assert not out.exists()


def test_concurrent_merges_from_python_threads(dataset, tmp_path):
    """Merges may run from several threads of one process (the reducer services do)."""
    errors: list[BaseException] = []

    def work(k):
        try:
            for _ in range(2):
                _core.merge_files(str(tmp_path / f"c{k}.root"), dataset["paths"], overwrite=True, threads=2)
        except Exception as exc:  # noqa: BLE001 - reported by the test thread below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for k in range(3):
        f = ROOT.TFile.Open(str(tmp_path / f"c{k}.root"))
        try:
            for key in ("h1d", "h1c", "prof3", "sub/inner/h2inner"):
                assert_same_hist(_get(f, key), dataset["ref"][key], key)
            assert_same_thn(_get(f, "thns"), dataset["ref"]["thns"], "thns")
            assert_same_graph(_get(f, "gae"), dataset["ref"]["gae"], "gae")
            assert f.Get("events").GetEntries() == N
        finally:
            f.Close()


# ---------------------------------------------------------------------------------------------


def test_merge_releases_the_gil(tmp_path):
    """While a merge runs in a thread, this thread keeps executing Python bytecode.

    The counting loop gives the GIL away on every iteration (``time.sleep(0)``), so the merging
    thread gets it back as soon as it asks. If ``merge_files`` held the GIL, this loop could only
    run in the moments the worker spends in Python around the call: a handful of iterations
    (measured: 1-2 with a C call that keeps the GIL, thousands with one that releases it).
    """
    h = _model("TH1D", "big", "big", 200_000, 0, 1)
    rng = np.random.default_rng(3)
    h.FillN(50_000, rng.random(50_000), ROOT.nullptr)
    inputs = [write_objects(tmp_path / f"in{k}.root", big=h) for k in range(16)]
    started, state = threading.Event(), {"done": False, "error": None, "seconds": 0.0}

    def work():
        try:
            started.set()
            for _ in range(3):
                summary = _core.merge_files(str(tmp_path / "out.root"), inputs, overwrite=True, threads=1)
                state["seconds"] += summary["seconds"]
        except Exception as exc:  # noqa: BLE001 - reported by the test thread below
            state["error"] = exc
        finally:
            state["done"] = True

    thread = threading.Thread(target=work)
    thread.start()
    started.wait()
    count = 0
    while not state["done"]:
        count += 1
        time.sleep(0)  # releases the GIL
    thread.join()
    assert state["error"] is None, state["error"]
    assert count > 50, f"main thread made only {count} iterations during {state['seconds']:.3f} s of merging"
