"""Where the functions read the dataset from (datasets.py), and RunGraphs failures (dispatch.py).

Functions run in working directories of their own: every relative path of a dataset (chain
files, friend trees, FromSpec samples, Snapshot outputs read again) must reach them as the file
the user meant, and on a real cluster a path on the client's disk must be refused at once.
"""

from __future__ import annotations

import json
import os
import re
import shutil

import pytest
import ROOT

import distrdf_oscar as dro
from compare import assert_same_value
from distrdf_oscar.protocol import layout
from distrdf_oscar.protocol.datasets import DatasetError, PathPolicy
from graphs import friend_chain, values, write_friend_trees

pytestmark = pytest.mark.usefixtures("secret_scan")  # conftest.py: these jobs' objects and logs are searched


@pytest.fixture
def relative_dataset(dimuon_files, tmp_path, monkeypatch):
    """The dimuon files under ``data/`` and their friend trees under ``friends/``, the client
    working in ``work/``: the analysis names them ``../data/…``, as users do."""
    data, friend_data = tmp_path / "data", tmp_path / "friends"
    data.mkdir()
    friend_data.mkdir()
    names = []
    for index, path in enumerate(dimuon_files):
        shutil.copy(path, data / f"events{index}.root")
        names.append(f"../data/events{index}.root")
    friends = [f"../friends/{os.path.basename(f)}" for f in write_friend_trees(dimuon_files, friend_data)]
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    return names, friends


def _book(df):
    df = df.Define("w", "Friends.weight * nMuon")
    return [
        df.Count(),
        df.Sum("w"),
        df.Histo1D(("w", "w", 40, 0, 40), "w"),
        df.Filter("nMuon > 2").AsNumpy(["w"], lazy=True),
    ]


def _job_keys(executor) -> list[str]:
    return [k for k in executor.storage.list("") if layout.job_of_key(k)]


@pytest.mark.parametrize("mode", ["prestarted", "cold"])
def test_relative_chain_and_friend_paths_reach_the_functions(request, relative_dataset, mode):
    names, friends = relative_dataset
    executor = request.getfixturevalue(f"{mode}_cluster").executor(progress=False)
    main, _friend = friend_chain(names, friends)
    got = values(_book(ROOT.RDataFrame(main, executor=executor, npartitions=3)))
    main2, _friend2 = friend_chain(names, friends)
    for index, (g, e) in enumerate(zip(got, values(_book(ROOT.RDataFrame(main2))), strict=True)):
        assert_same_value(g, e, f"action {index}")
    assert _job_keys(executor) == []


def test_relative_fromspec_samples_and_snapshot_reread(prestarted_cluster, relative_dataset):
    names, _ = relative_dataset
    spec = {
        "samples": {
            "first": {"trees": ["Events"], "files": names[:1], "metadata": {"scale": 2.0}},
            "rest": {"trees": ["Events"] * (len(names) - 1), "files": names[1:], "metadata": {"scale": 0.5}},
        }
    }
    with open("spec.json", "w") as f:
        json.dump(spec, f)

    def book(df):
        df = df.DefinePerSample("scale", 'rdfsampleinfo_.GetD("scale")').Define("sw", "scale * nMuon")
        return [df.Sum("sw"), df.Histo1D(("sw", "sw", 20, 0, 10), "sw"), df.Count()]

    executor = prestarted_cluster.executor(progress=False)
    got = values(book(ROOT.RDF.Experimental.FromSpec("spec.json", executor=executor, npartitions=4)))
    for index, (g, e) in enumerate(
        zip(got, values(book(ROOT.RDF.Experimental.FromSpec("spec.json"))), strict=True)
    ):
        assert_same_value(g, e, f"spec action {index}")

    # A Snapshot to a relative folder lands there, and its dataframe (on the same executor) reads it.
    df = ROOT.RDataFrame("Events", names, executor=executor, npartitions=3)
    snapshot = df.Filter("nMuon > 1").Snapshot("Skim", "skims/skim.root", ["nMuon"])
    assert sorted(os.listdir("skims")) == [f"skim_{i}.root" for i in range(3)]
    want = ROOT.RDataFrame("Events", names).Filter("nMuon > 1")
    assert snapshot.Sum("nMuon").GetValue() == want.Sum("nMuon").GetValue()
    assert snapshot.Count().GetValue() == want.Count().GetValue()
    assert _job_keys(executor) == []


def test_a_local_path_on_a_real_cluster_is_refused_at_submission(prestarted_cluster, relative_dataset):
    names, friends = relative_dataset
    # A real cluster's executor shares no folder with the client unless told (shared_paths).
    executor = prestarted_cluster.executor(progress=False, shared_paths=())
    df = ROOT.RDataFrame("Events", names, executor=executor, npartitions=2)
    with pytest.raises(DatasetError) as refused:
        df.Count().GetValue()
    message = str(refused.value)
    assert "'../data/events0.root' is a local path" in message
    for part in (os.path.abspath(names[0]), "root://", "shared_paths"):
        assert part in message
    assert executor.last_job is None  # refused before anything was written
    assert _job_keys(executor) == []

    # A shared folder is allowed; a friend outside it is named.
    data = os.path.dirname(os.path.abspath(names[0]))
    allowed = prestarted_cluster.executor(progress=False, shared_paths=[data])
    assert (
        ROOT.RDataFrame("Events", names, executor=allowed, npartitions=2).Count().GetValue()
        == ROOT.RDataFrame("Events", names).Count().GetValue()
    )
    main, _friend = friend_chain(names, friends)
    with pytest.raises(DatasetError, match=r"'\.\./friends/friend0\.root' is a local path"):
        ROOT.RDataFrame(main, executor=allowed, npartitions=2).Count().GetValue()
    assert _job_keys(allowed) == []


def test_path_policy_rules(tmp_path):
    policy = PathPolicy(["/cvmfs"], cwd=str(tmp_path))
    assert policy.rename("root://eos.cern.ch//eos/f.root") == "root://eos.cern.ch//eos/f.root"
    assert policy.rename("s3://bucket/f.root") == "s3://bucket/f.root"
    assert policy.rename("/cvmfs/sft.cern.ch/f.root") == "/cvmfs/sft.cern.ch/f.root"
    assert policy.rename("file:///cvmfs/x/../y.root") == "/cvmfs/y.root"
    with pytest.raises(DatasetError, match=r"/cvmfsX/f\.root"):  # a prefix of the name is not the folder
        policy.rename("/cvmfsX/f.root")
    with pytest.raises(DatasetError, match=re.escape(str(tmp_path / "f.root"))):
        policy.rename("f.root")
    # A relative path stays as written (rdfsampleinfo_ shows it so); the functions learn where it is.
    shared = PathPolicy(["/"], cwd=str(tmp_path))
    assert shared.rename("../f.root") == "../f.root"
    assert shared.as_written == {"../f.root": str(tmp_path.parent / "f.root")}


def test_rungraphs_raises_a_failing_graph_and_runs_none_twice(prestarted_cluster, dimuon_files):
    executor = prestarted_cluster.executor(progress=False)
    submitted = []
    run_job = executor.run_job

    def counting_run_job(*args, **kwargs):  # the real submission, counted
        submitted.append(1)
        return run_job(*args, **kwargs)

    executor.run_job = counting_run_job
    good = ROOT.RDataFrame("Events", dimuon_files, executor=executor, npartitions=2).Count()
    bad = (
        ROOT.RDataFrame("Events", dimuon_files, executor=executor, npartitions=2)
        .Define("boom", 'if (rdfentry_ == 3) throw std::runtime_error("boom at entry 3"); return 1;')
        .Sum("boom")
    )
    with pytest.raises(dro.RemoteError, match="boom at entry 3"):
        ROOT.RDF.RunGraphs([good, bad])
    assert len(submitted) == 2
    assert good.GetValue() == ROOT.RDataFrame("Events", dimuon_files).Count().GetValue()
    assert len(submitted) == 2  # the good graph's value came from the RunGraphs call
    assert _job_keys(executor) == []
    # Graphs of other backends, and local ones, still go to ROOT's own RunGraphs.
    local = [ROOT.RDataFrame(10).Count(), ROOT.RDataFrame(20).Count()]
    assert ROOT.RDF.RunGraphs(local) == 2
    assert local[1].GetValue() == 20


def test_absolute_paths_need_no_working_directory(tmp_path, monkeypatch):
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()  # a client whose working directory was removed under it
    policy = PathPolicy(["/data"])
    assert policy.rename("/data/f.root") == "/data/f.root"
    assert policy.rename("root://host//f.root") == "root://host//f.root"
    with pytest.raises(FileNotFoundError):
        policy.rename("f.root")  # only a relative path needs it


def test_an_rntuple_at_a_relative_path_gives_the_single_process_result(
    prestarted_cluster, tmp_path, monkeypatch
):
    """DistRDF in ROOT 6.40 runs RNTuple inputs (RNTupleHeadNode); a relative path means the client's
    directory, as for trees."""
    (tmp_path / "data").mkdir()
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    options = ROOT.RDF.RSnapshotOptions()
    options.fOutputFormat = ROOT.RDF.ESnapshotOutputFormat.kRNTuple
    for index in range(2):
        ROOT.RDataFrame(3000).Define("x", f"double(rdfentry_ * 3 + {index})").Define(
            "n", "int(rdfentry_ % 7)"
        ).Snapshot("ntpl", f"../data/nt{index}.root", ["x", "n"], options)
    names = ["../data/nt0.root", "../data/nt1.root"]

    def book(df):
        return [
            df.Count(),
            df.Filter("n > 2").Sum("x"),
            df.Histo1D(("x", "x", 50, 0, 9000), "x"),
            df.Filter("n == 5").AsNumpy(["x"], lazy=True),
        ]

    executor = prestarted_cluster.executor(progress=False)
    got = values(book(ROOT.RDataFrame("ntpl", names, executor=executor, npartitions=3)))
    for index, (g, e) in enumerate(zip(got, values(book(ROOT.RDataFrame("ntpl", names))), strict=True)):
        assert_same_value(g, e, f"action {index}")
    assert _job_keys(executor) == []
