"""The ``rootmerge`` command: its interface (help, exit codes, messages) and an independent check
of its output against ROOT's own ``hadd`` on 64 files, object by object.

The binary is looked up on PATH (where an installed distrdf-oscar puts it), else taken from the
ROOTMERGE environment variable (e.g. a development build: ``ROOTMERGE=build/rootmerge``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import ROOT

from compare import assert_close, assert_same_graph, assert_same_hist, assert_same_statistic, assert_same_thn
from rootfiles import write_objects


def _find_rootmerge() -> str | None:
    found = shutil.which("rootmerge")
    if found:
        return found
    env = os.environ.get("ROOTMERGE")
    if env and os.access(env, os.X_OK):
        return env
    return None


ROOTMERGE = _find_rootmerge()
_SKIP_REASON = (
    f"rootmerge not found: not on PATH, and ROOTMERGE={os.environ['ROOTMERGE']!r} is not an executable"
    if os.environ.get("ROOTMERGE")
    else "rootmerge not found: not on PATH (install distrdf-oscar) and ROOTMERGE is not set "
    "(e.g. ROOTMERGE=build/rootmerge)"
)
pytestmark = pytest.mark.skipif(ROOTMERGE is None, reason=_SKIP_REASON)

NFILES = 64
EXIT_OK, EXIT_USAGE, EXIT_INPUT, EXIT_MISMATCH = 0, 2, 3, 4


def run(*args, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [ROOTMERGE, *map(str, args)], check=False, capture_output=True, text=True, timeout=timeout
    )


def _hadd() -> str:
    path = os.path.join(os.path.dirname(ROOT.__file__), "bin", "hadd")
    if not os.access(path, os.X_OK):
        pytest.skip(f"hadd not found at {path}")
    return path


def _hist(name="h", cls="TH1D", fills=1):
    status = ROOT.TH1.AddDirectoryStatus()
    ROOT.TH1.AddDirectory(False)
    try:
        h = getattr(ROOT, cls)(name, name, 10, 0, 1)
    finally:
        ROOT.TH1.AddDirectory(status)
    for _ in range(fills):
        h.Fill(0.5)
    return h


def _assert_error(result, code, *fragments):
    assert result.returncode == code, f"exit {result.returncode}, expected {code}; stderr: {result.stderr}"
    assert "rootmerge: error: " in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, f"{fragment!r} not in {result.stderr!r}"
    assert result.stdout == "", result.stdout


# ---------------------------------------------------------------------------------------------
# The command line


def test_help_documents_usage_and_exit_codes():
    result = run("--help")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith("usage: rootmerge ")
    for option in ("-f", "-v", "-j", "-c", "-x", "OUT", "IN"):
        assert option in out
    assert "exit codes" in out
    for code in range(6):
        assert re.search(rf"^\s+{code}\s+\S", out, re.MULTILINE), f"exit code {code} not documented"
    assert run("-h").stdout == out


def test_version():
    result = run("--version")
    assert result.returncode == 0
    assert "ROOT 6." in result.stdout


def test_no_arguments_is_a_usage_error():
    result = run()
    _assert_error(result, EXIT_USAGE, "missing OUT and IN files", "--help")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["out.root"], "missing IN files"),
        (["--bogus", "out.root", "in.root"], "unknown option --bogus"),
        (["-j"], "-j needs"),
        (["-c", "x", "out.root", "in.root"], "-c needs"),
        (["-x"], "-x needs"),
    ],
)
def test_bad_arguments_are_usage_errors(tmp_path, args, fragment):
    result = subprocess.run(
        [ROOTMERGE, *args], check=False, capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    _assert_error(result, EXIT_USAGE, fragment)
    assert not (tmp_path / "out.root").exists()


@pytest.fixture
def pair(tmp_path):
    return write_objects(tmp_path / "a.root", h=_hist(fills=1)), write_objects(
        tmp_path / "b.root", h=_hist(fills=2)
    )


def test_success_prints_one_summary_line(tmp_path, pair):
    out = tmp_path / "out.root"
    result = run(out, *pair)
    assert result.returncode == EXIT_OK, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.stdout
    assert re.fullmatch(
        rf"rootmerge: merged 2 files, 1 object \(0 trees\) into {re.escape(str(out))} "
        r"\([0-9.]+ k?B\) in [0-9.]+ s",
        lines[0],
    ), lines[0]
    f = ROOT.TFile.Open(str(out))
    assert f.Get("h").GetEntries() == 3
    f.Close()


def test_existing_output_needs_f(tmp_path, pair):
    out = tmp_path / "out.root"
    out.write_bytes(b"keep me")
    result = run(out, *pair)
    _assert_error(result, EXIT_USAGE, str(out), "already exists", "-f")
    assert out.read_bytes() == b"keep me"

    result = run("-f", out, *pair)
    assert result.returncode == EXIT_OK, result.stderr
    assert len(result.stdout.splitlines()) == 1
    f = ROOT.TFile.Open(str(out))
    assert f
    assert not f.IsZombie()
    assert f.Get("h").GetEntries() == 3
    f.Close()


def test_output_that_is_an_input_is_refused_even_with_f(pair):
    before = Path(pair[0]).read_bytes()
    result = run("-f", pair[0], *pair)
    _assert_error(result, EXIT_USAGE, "is also an input")
    assert Path(pair[0]).read_bytes() == before


def test_missing_input(tmp_path, pair):
    out = tmp_path / "out.root"
    missing = tmp_path / "missing.root"
    result = run(out, pair[0], missing, pair[1])
    _assert_error(result, EXIT_INPUT, str(missing), "does not exist")
    assert not out.exists()


def test_non_root_input(tmp_path, pair):
    out = tmp_path / "out.root"
    text = tmp_path / "readme.txt"
    text.write_text("not ROOT\n")
    result = run(out, *pair, text)
    _assert_error(result, EXIT_INPUT, str(text), "not a ROOT file")
    assert not out.exists()


def test_directory_input(tmp_path, pair):
    out = tmp_path / "out.root"
    result = run(out, pair[0], tmp_path)
    _assert_error(result, EXIT_INPUT, "is a directory")
    assert not out.exists()


def test_mismatched_objects(tmp_path, pair):
    out = tmp_path / "out.root"
    other = write_objects(tmp_path / "other.root", h=_hist(cls="TH1F"))
    result = run(out, *pair, other)
    _assert_error(result, EXIT_MISMATCH, "'h'", "TH1F", "TH1D", "other.root")
    assert not out.exists()

    extra = write_objects(tmp_path / "extra.root", h=_hist(), g=_hist("g"))
    result = run(out, *pair, extra)
    _assert_error(result, EXIT_MISMATCH, "'g'", "extra.root")
    assert not out.exists()

    named = [write_objects(tmp_path / f"n{i}.root", n=ROOT.TNamed("n", str(i))) for i in range(2)]
    result = run(out, *named)
    _assert_error(result, EXIT_MISMATCH, "TNamed", "merge function")
    assert not out.exists()


def test_options_exclude_compression_threads_verbose(tmp_path):
    inputs = [
        write_objects(tmp_path / f"in{i}.root", h=_hist(fills=i + 1), skip=_hist("skip")) for i in range(3)
    ]
    out = tmp_path / "out.root"
    result = run("-v", "-j", "1", "-c", "505", "-x", "skip", out, *inputs)
    assert result.returncode == EXIT_OK, result.stderr
    assert "merged key 'h' (TH1D) from 3 inputs" in result.stderr  # -v lists keys on stderr
    assert len(result.stdout.splitlines()) == 1
    f = ROOT.TFile.Open(str(out))
    try:
        assert [k.GetName() for k in f.GetListOfKeys()] == ["h"]
        assert f.Get("h").GetEntries() == 6
        assert f.GetCompressionSettings() == 505
    finally:
        f.Close()


# ---------------------------------------------------------------------------------------------
# Independent check: 64 files with different random content, rootmerge vs hadd, key by key.


def _random_file(path: str, seed: int) -> dict:
    """One input file; returns the totals the merge must reproduce."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(50, 400))
    x, y, z = rng.exponential(2.0, n), rng.normal(0, 1.5, n), rng.random(n)
    w = rng.uniform(0.5, 2.0, n)
    status = ROOT.TH1.AddDirectoryStatus()
    ROOT.TH1.AddDirectory(False)
    try:
        h1 = ROOT.TH1D("h1", "TH1D", 100, 0, 10)
        h1.FillN(n, x, w)
        h2 = ROOT.TH2F("h2", "TH2F", 20, 0, 10, 20, -5, 5)
        h2.FillN(n, x, y, np.round(w * 2))  # integer weights: float contents stay exact
        prof = ROOT.TProfile("prof", "TProfile", 30, 0, 10)
        prof.FillN(n, x, y, w)
        hsub = ROOT.TH1D("hsub", "in a directory", 25, 0, 1)
        hsub.FillN(n, z, ROOT.nullptr)
    finally:
        ROOT.TH1.AddDirectory(status)
    nbins = np.array([40, 40, 10], dtype=np.int32)
    sparse = ROOT.THnSparseD(
        "sparse", "THnSparseD", 3, nbins, np.array([0.0, -5.0, 0.0]), np.array([10.0, 5.0, 1.0])
    )
    point = np.zeros(3)
    for i in range(0, n, 2):
        point[:] = (x[i], y[i], z[i])
        sparse.Fill(point, w[i])
    m = int(rng.integers(3, 30))
    graph = ROOT.TGraph(m, rng.random(m), rng.random(m))
    graph.SetName("graph")
    param = ROOT.TParameter["double"]("param", float(w.sum()))

    f = ROOT.TFile(path, "RECREATE")
    for name, obj in (
        ("h1", h1),
        ("h2", h2),
        ("prof", prof),
        ("sparse", sparse),
        ("graph", graph),
        ("param", param),
    ):
        f.WriteObject(obj, name)
    tree = ROOT.TTree("tree", "small tree")
    a = np.zeros(1, dtype=np.float64)
    b = np.zeros(1, dtype=np.int32)
    tree.Branch("a", a, "a/D")
    tree.Branch("b", b, "b/I")
    entries = int(rng.integers(5, 60))
    for value in rng.normal(10, 3, entries):
        a[0] = value
        b[0] = int(value * 7)
        tree.Fill()
    tree.Write()
    sub = f.mkdir("dir", "a subdirectory")
    sub.WriteObject(hsub, "hsub")
    f.Close()
    return {"n": n, "sumw": float(w.sum()), "points": m, "entries": entries}


@pytest.fixture(scope="module")
def sixty_four(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("rootmerge64")
    paths, totals = [], []
    for i in range(NFILES):
        path = str(workdir / f"in{i:02d}.root")
        totals.append(_random_file(path, seed=1000 + i))
        paths.append(path)
    ours = workdir / "rootmerge.root"
    result = run(ours, *paths)
    assert result.returncode == EXIT_OK, result.stderr
    theirs = workdir / "hadd.root"
    hadd = subprocess.run(
        [_hadd(), "-f", str(theirs), *paths], check=False, capture_output=True, text=True, timeout=300
    )
    assert hadd.returncode == 0, hadd.stdout + hadd.stderr
    return {
        "paths": paths,
        "totals": totals,
        "ours": str(ours),
        "theirs": str(theirs),
        "stdout": result.stdout,
    }


def _keys(directory) -> dict[str, str]:
    """Name -> class of the highest cycle of each key."""
    best: dict[str, tuple[int, str]] = {}
    for key in directory.GetListOfKeys():
        if key.GetName() not in best or key.GetCycle() > best[key.GetName()][0]:
            best[key.GetName()] = (key.GetCycle(), key.GetClassName())
    return {name: cls for name, (_, cls) in best.items()}


def _branch_sums(tree) -> dict[str, float]:
    n = tree.GetEntries()
    tree.SetEstimate(n + 1)
    sums = {}
    for branch in tree.GetListOfBranches():
        name = branch.GetName()
        assert tree.Draw(name, "", "goff") == n
        sums[name] = float(np.frombuffer(tree.GetV1(), dtype=np.float64, count=n).sum())
    return sums


def _compare_directories(ours, theirs, path: str, seen: list[str]) -> None:
    keys, ref_keys = _keys(ours), _keys(theirs)
    assert keys == ref_keys, f"{path or '/'}: keys differ"
    for name, cls in sorted(keys.items()):
        what = f"{path}/{name}" if path else name
        seen.append(what)
        if ROOT.TClass.GetClass(cls).InheritsFrom("TDirectory"):
            a, b = ours.GetDirectory(name), theirs.GetDirectory(name)
            assert a.GetTitle() == b.GetTitle(), what
            _compare_directories(a, b, what, seen)
            continue
        a, b = ours.Get(name), theirs.Get(name)
        assert a, what
        assert b, what
        if a.InheritsFrom("TTree"):
            assert a.GetEntries() == b.GetEntries(), what
            sums, ref = _branch_sums(a), _branch_sums(b)
            assert sums.keys() == ref.keys(), what
            for branch in ref:
                assert_close(sums[branch], ref[branch], f"{what}.{branch}")
            continue
        if hasattr(a, "SetDirectory"):
            a.SetDirectory(ROOT.nullptr)
            b.SetDirectory(ROOT.nullptr)
        if a.InheritsFrom("TH1"):
            assert_same_hist(a, b, what)
            assert a.GetEntries() == b.GetEntries(), what
        elif a.InheritsFrom("THnBase"):
            assert_same_thn(a, b, what)
        elif a.InheritsFrom("TGraph"):
            assert_same_graph(a, b, what)
        elif a.InheritsFrom("TStatistic"):
            assert_same_statistic(a, b, what)
        elif cls.startswith("TParameter"):
            assert_close(a.GetVal(), b.GetVal(), what)
            for bit in ("kMultiply", "kMax", "kMin"):
                assert a.TestBit(getattr(type(a), bit)) == b.TestBit(getattr(type(b), bit)), f"{what}: {bit}"
        else:
            raise AssertionError(f"{what}: no comparison for class {cls}")


def test_64_files_same_as_hadd(sixty_four):
    ours, theirs = ROOT.TFile.Open(sixty_four["ours"]), ROOT.TFile.Open(sixty_four["theirs"])
    try:
        seen: list[str] = []
        _compare_directories(ours, theirs, "", seen)
        assert sorted(seen) == sorted(
            ["h1", "h2", "prof", "sparse", "graph", "param", "tree", "dir", "dir/hsub"]
        )
    finally:
        ours.Close()
        theirs.Close()


def test_64_files_totals(sixty_four):
    """Beyond agreeing with hadd: the merge holds everything that went into the inputs."""
    totals = sixty_four["totals"]
    f = ROOT.TFile.Open(sixty_four["ours"])
    try:
        assert f.Get("h1").GetEntries() == sum(t["n"] for t in totals)
        assert f.Get("dir/hsub").GetEntries() == sum(t["n"] for t in totals)
        assert f.Get("graph").GetN() == sum(t["points"] for t in totals)
        assert f.Get("tree").GetEntries() == sum(t["entries"] for t in totals)
        assert_close(f.Get("param").GetVal(), sum(t["sumw"] for t in totals), "param", rel=1e-12)
        assert_close(
            f.Get("h1").GetSumOfWeights() + f.Get("h1").GetBinContent(101),
            sum(t["sumw"] for t in totals),
            "h1 weights",
            rel=1e-12,
        )
    finally:
        f.Close()
    assert sixty_four["stdout"].startswith(f"rootmerge: merged {NFILES} files, 8 objects (1 tree) into ")
