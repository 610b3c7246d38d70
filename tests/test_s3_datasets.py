"""Datasets in object storage (``s3://bucket/key``): uploaded with ``distrdf-oscar upload`` or
``executor.upload``, staged by the mappers (datasets.S3Staging) and the client's head node."""

from __future__ import annotations

import pytest
import ROOT

import distrdf_oscar as dro
from compare import assert_same_value
from distrdf_oscar import cli, layout
from distrdf_oscar.demo.analysis import book_dimuon_spectrum
from distrdf_oscar.storage import StorageError

pytestmark = pytest.mark.usefixtures("secret_scan")  # conftest.py: these jobs' objects and logs are searched


@pytest.fixture(scope="module")
def local_spectrum(dimuon_files):
    return {name: result.GetValue() for name, result in
            book_dimuon_spectrum(ROOT.RDataFrame("Events", dimuon_files)).items()}


@pytest.fixture(scope="module")
def upload_to(dimuon_files):
    """The dimuon files uploaded to a cluster's storage (once per cluster): their URLs."""
    done: dict[int, tuple] = {}

    def urls(cluster) -> list[str]:
        if id(cluster) not in done:
            executor = cluster.executor(progress=False)
            done[id(cluster)] = (executor, executor.upload(dimuon_files, folder="dimuon"))
        return done[id(cluster)][1]

    yield urls
    for executor, uploaded in done.values():
        executor.storage.delete([url.split("/", 3)[3] for url in uploaded])


@pytest.fixture(scope="module")
def urls(warm_cluster, upload_to):
    return upload_to(warm_cluster)


def _job_keys(executor) -> list[str]:
    return [k for k in executor.storage.list("") if layout.job_of_key(k)]


def test_upload_returns_urls_in_the_deployments_bucket(warm_cluster, urls, dimuon_files):
    bucket = warm_cluster.executor(progress=False).storage.bucket
    assert urls == [f"s3://{bucket}/datasets/dimuon/{path.rsplit('/', 1)[1]}" for path in dimuon_files]


@pytest.mark.parametrize(("mode", "reduction"), [
    ("warm", dro.TreeReduction(fan_in=2)), ("warm", dro.CoordinatedReduction()), ("cold", dro.TreeReduction(fan_in=4)),
])
def test_dimuon_analysis_over_s3_is_identical(request, upload_to, local_spectrum, mode, reduction):
    cluster = request.getfixturevalue(f"{mode}_cluster")
    urls = upload_to(cluster)
    executor = cluster.executor(reduction=reduction, progress=False)
    executor.shared_paths = ()  # as on a real cluster: nothing read from the client's disk
    results = book_dimuon_spectrum(ROOT.RDataFrame("Events", urls, executor=executor, npartitions=5))
    for name, result in results.items():
        assert_same_value(result.GetValue(), local_spectrum[name], name)
    assert _job_keys(executor) == []


def test_missing_objects_are_named(warm_cluster, urls):
    executor = warm_cluster.executor(progress=False)
    bucket = executor.storage.bucket
    # The first file is staged by the client (its head node opens it) ...
    with pytest.raises(StorageError, match=rf"s3://{bucket}/datasets/nothing\.root failed: NoSuchKey"):
        ROOT.RDataFrame("Events", [f"s3://{bucket}/datasets/nothing.root"], executor=executor)
    with pytest.raises(StorageError, match=r"s3://no-such-bucket-dro/f\.root failed: NoSuch(Key|Bucket)"):
        ROOT.RDataFrame("Events", "s3://no-such-bucket-dro/f.root", executor=executor)
    # ... the others by the mappers, whose error names the object.
    df = ROOT.RDataFrame("Events", [urls[0], f"s3://{bucket}/datasets/later.root"], executor=executor,
                         npartitions=2)
    with pytest.raises(dro.RemoteError, match=rf"s3://{bucket}/datasets/later\.root failed: NoSuchKey"):
        df.Count().GetValue()
    assert _job_keys(executor) == []


def test_the_upload_command_prints_the_urls(warm_cluster, dimuon_files, monkeypatch, capsys):
    monkeypatch.setenv("OSCAR_ENDPOINT", warm_cluster.platform.oscar_endpoint)
    monkeypatch.setenv("OSCAR_USER", warm_cluster.platform.oscar_user)
    monkeypatch.setenv("OSCAR_PASSWORD", warm_cluster.platform.oscar_password)
    monkeypatch.setenv("DISTRDF_OSCAR_KEY", warm_cluster._signing_key)
    for name in ("OSCAR_TOKEN", "OSCAR_SSL_VERIFY", "MINIO_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    executor = warm_cluster.executor(progress=False)
    deployment = executor.deployment.name
    assert cli.main(["upload", "--deployment", deployment, "--folder", "cli", dimuon_files[0]]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [f"s3://{executor.storage.bucket}/datasets/cli/{dimuon_files[0].rsplit('/', 1)[1]}"]
    assert ROOT.RDataFrame("Events", printed, executor=executor, npartitions=2).Count().GetValue() == \
        ROOT.RDataFrame("Events", dimuon_files[0]).Count().GetValue()
    executor.storage.delete([printed[0].split("/", 3)[3]])
    with pytest.raises(dro.DatasetError, match="no such file"):
        executor.upload(["/nonexistent/f.root"])


@pytest.mark.parametrize("mode", ["merge", "storage"])
def test_snapshot_merged_into_one_file_or_kept_in_storage(warm_cluster, dimuon_files, urls, tmp_path, monkeypatch,
                                                          mode):
    import os

    import numpy as np

    monkeypatch.chdir(tmp_path)
    executor = warm_cluster.executor(progress=False, snapshots=mode)
    if mode == "storage":
        executor.shared_paths = ()  # its dataframe reads nothing from the client's disk, as on a real cluster

    def skim(df):
        return df.Filter("nMuon > 1").Define("x", "nMuon * 1000 + int(Muon_pt[0] * 10)")

    # As on a real cluster, the storage mode's input and output stay in object storage.
    source = urls if mode == "storage" else dimuon_files
    snapshot = skim(ROOT.RDataFrame("Events", source, executor=executor, npartitions=3)).Snapshot(
        "Skim", "out/skim.root", ["nMuon", "x"])
    want = skim(ROOT.RDataFrame("Events", dimuon_files)).AsNumpy(["x"])["x"]
    if mode == "merge":
        assert os.listdir("out") == ["skim.root"]  # one file, its entries in single-process order
        np.testing.assert_array_equal(ROOT.RDataFrame("Skim", "out/skim.root").AsNumpy(["x"])["x"], want)
    else:
        assert not os.path.exists("out")
        kept = [k for k in executor.storage.list("datasets/snapshots/") if "skim_" in k]
        assert len(kept) == 3
    # The dataframe Snapshot returns runs on the same executor, over the delivered files.
    assert snapshot.Sum("x").GetValue() == want.sum()
    assert snapshot.Count().GetValue() == len(want)
    assert _job_keys(executor) == []
    if mode == "storage":
        executor.storage.delete(kept)


def test_an_unknown_snapshot_mode_is_refused(warm_cluster):
    with pytest.raises(dro.ConfigurationError, match="snapshots must be one of 'download', 'merge', 'storage'"):
        warm_cluster.executor(snapshots="upload")
