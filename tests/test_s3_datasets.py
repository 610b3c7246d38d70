"""Datasets in object storage (``s3://bucket/key``): uploaded with ``distrdf-oscar upload`` or
``executor.upload``, staged by the mappers (datasets.S3Staging) and the client's head node."""

from __future__ import annotations

import dataclasses

import pytest
import ROOT

import distrdf_oscar as dro
from compare import assert_same_value
from distrdf_oscar import cli
from distrdf_oscar.demo.analysis import book_dimuon_spectrum
from distrdf_oscar.protocol import layout
from distrdf_oscar.protocol.storage import StorageError
from graphs import friend_chain, values, write_friend_trees

pytestmark = pytest.mark.usefixtures("secret_scan")  # conftest.py: these jobs' objects and logs are searched


@pytest.fixture(scope="module")
def local_spectrum(dimuon_files):
    return {
        name: result.GetValue()
        for name, result in book_dimuon_spectrum(ROOT.RDataFrame("Events", dimuon_files)).items()
    }


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
def urls(prestarted_cluster, upload_to):
    return upload_to(prestarted_cluster)


def _job_keys(executor) -> list[str]:
    return [k for k in executor.storage.list("") if layout.job_of_key(k)]


def test_upload_returns_urls_in_the_deployments_bucket(prestarted_cluster, urls, dimuon_files):
    bucket = prestarted_cluster.executor(progress=False).storage.bucket
    assert urls == [f"s3://{bucket}/datasets/dimuon/{path.rsplit('/', 1)[1]}" for path in dimuon_files]


# Warm with a tree reduction: test_dimuon_analysis_over_another_s3_endpoint_is_identical.
@pytest.mark.parametrize(
    ("mode", "reduction"),
    [
        ("prestarted", dro.CoordinatedReduction()),
        ("cold", dro.TreeReduction(fan_in=4)),
    ],
)
def test_dimuon_analysis_over_s3_is_identical(request, upload_to, local_spectrum, mode, reduction):
    cluster = request.getfixturevalue(f"{mode}_cluster")
    urls = upload_to(cluster)
    executor = cluster.executor(reduction=reduction, progress=False)
    executor.shared_paths = ()  # as on a real cluster: nothing read from the client's disk
    results = book_dimuon_spectrum(ROOT.RDataFrame("Events", urls, executor=executor, npartitions=5))
    for name, result in results.items():
        assert_same_value(result.GetValue(), local_spectrum[name], name)
    assert _job_keys(executor) == []


def test_missing_objects_are_named(prestarted_cluster, urls):
    executor = prestarted_cluster.executor(progress=False)
    bucket = executor.storage.bucket
    # The first file is staged by the client (its head node opens it) ...
    with pytest.raises(StorageError, match=rf"s3://{bucket}/datasets/nothing\.root failed: NoSuchKey"):
        ROOT.RDataFrame("Events", [f"s3://{bucket}/datasets/nothing.root"], executor=executor)
    with pytest.raises(StorageError, match=r"s3://no-such-bucket-dro/f\.root failed: NoSuch(Key|Bucket)"):
        ROOT.RDataFrame("Events", "s3://no-such-bucket-dro/f.root", executor=executor)
    # ... the others by the mappers, whose error names the object.
    df = ROOT.RDataFrame(
        "Events", [urls[0], f"s3://{bucket}/datasets/later.root"], executor=executor, npartitions=2
    )
    with pytest.raises(dro.RemoteError, match=rf"s3://{bucket}/datasets/later\.root failed: NoSuchKey"):
        df.Count().GetValue()
    assert _job_keys(executor) == []


def _cli_settings(monkeypatch, cluster) -> None:
    """The environment the command line reads, pointing at ``cluster`` as an operator's would."""
    monkeypatch.setenv("OSCAR_ENDPOINT", cluster.platform.oscar_endpoint)
    monkeypatch.setenv("OSCAR_USER", cluster.platform.oscar_user)
    monkeypatch.setenv("OSCAR_PASSWORD", cluster.platform.oscar_password)
    monkeypatch.setenv("DISTRDF_OSCAR_KEY", cluster._signing_key)
    for name in ("OSCAR_TOKEN", "OSCAR_SSL_VERIFY", "MINIO_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)


def test_the_upload_command_prints_the_urls(prestarted_cluster, dimuon_files, monkeypatch, capsys):
    _cli_settings(monkeypatch, prestarted_cluster)
    executor = prestarted_cluster.executor(progress=False)
    deployment = executor.deployment.name
    assert cli.main(["upload", "--deployment", deployment, "--folder", "cli", dimuon_files[0]]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [f"s3://{executor.storage.bucket}/datasets/cli/{dimuon_files[0].rsplit('/', 1)[1]}"]
    assert (
        ROOT.RDataFrame("Events", printed, executor=executor, npartitions=2).Count().GetValue()
        == ROOT.RDataFrame("Events", dimuon_files[0]).Count().GetValue()
    )
    executor.storage.delete([printed[0].split("/", 3)[3]])
    with pytest.raises(dro.DatasetError, match="no such file"):
        executor.upload(["/nonexistent/f.root"])


@pytest.mark.parametrize("mode", ["merge", "storage"])
def test_snapshot_merged_into_one_file_or_kept_in_storage(
    prestarted_cluster, dimuon_files, urls, tmp_path, monkeypatch, mode
):
    import os

    import numpy as np

    monkeypatch.chdir(tmp_path)
    executor = prestarted_cluster.executor(progress=False, snapshots=mode)
    if mode == "storage":
        executor.shared_paths = ()  # its dataframe reads nothing from the client's disk, as on a real cluster

    def skim(df):
        return df.Filter("nMuon > 1").Define("x", "nMuon * 1000 + int(Muon_pt[0] * 10)")

    # As on a real cluster, the storage mode's input and output stay in object storage.
    source = urls if mode == "storage" else dimuon_files
    snapshot = skim(ROOT.RDataFrame("Events", source, executor=executor, npartitions=3)).Snapshot(
        "Skim", "out/skim.root", ["nMuon", "x"]
    )
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


def test_an_unknown_snapshot_mode_is_refused(prestarted_cluster):
    with pytest.raises(
        dro.ConfigurationError, match="snapshots must be one of 'download', 'merge', 'storage'"
    ):
        prestarted_cluster.executor(snapshots="upload")


# -- another S3 endpoint: s3http://host:port/bucket/key, keys from S3_ACCESS_KEY/S3_SECRET_KEY -------


@dataclasses.dataclass
class Endpoint:
    host: str  # host:port
    keys: dict[str, str]  # S3_ACCESS_KEY, S3_SECRET_KEY of a user who may read bucket physics
    urls: list[str]  # the dimuon files there
    friend_urls: list[str]  # their friend trees there
    friends: list[str]  # the friend trees on the local disk


@pytest.fixture(scope="module")
def other_endpoint(dimuon_files, tmp_path_factory):
    """A second S3 server (moto, its own process on loopback) that checks signatures: an IAM user
    may read bucket ``physics``, holding the dimuon files and their friend trees."""
    import json

    import boto3
    import requests
    from minio import Minio

    from conftest import _SECRETS
    from distrdf_oscar.platform.embedded.s3server import S3Server

    server = S3Server()
    server.launch()
    try:
        server.wait_ready()
        endpoint = f"http://{server.endpoint}"
        iam = boto3.client(
            "iam",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="setup",
            aws_secret_access_key="setup",
        )
        iam.create_user(UserName="analyst")
        iam.put_user_policy(
            UserName="analyst",
            PolicyName="read",
            PolicyDocument=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
                }
            ),
        )
        created = iam.create_access_key(UserName="analyst")["AccessKey"]
        keys = {"S3_ACCESS_KEY": created["AccessKeyId"], "S3_SECRET_KEY": created["SecretAccessKey"]}
        _SECRETS.append(keys["S3_SECRET_KEY"])
        setup = Minio(server.endpoint, access_key="setup", secret_key="setup", secure=False)
        setup.make_bucket("physics")
        friends = write_friend_trees(dimuon_files, tmp_path_factory.mktemp("friends"))
        urls: dict[str, list[str]] = {}
        for kind, paths in (("events", dimuon_files), ("friends", friends)):
            for path in paths:
                key = f"run3/{kind}/{path.rsplit('/', 1)[1]}"
                setup.fput_object("physics", key, path)
                urls.setdefault(kind, []).append(f"s3http://{server.endpoint}/physics/{key}")
        # From now on every request must be signed by a known user (moto's IAM checks).
        requests.post(f"{endpoint}/moto-api/reset-auth", data=b"0", timeout=10).raise_for_status()
        yield Endpoint(server.endpoint, keys, urls["events"], urls["friends"], friends)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def endpoint_executor(prestarted_cluster, other_endpoint):
    """An executor whose services hold the endpoint's keys as OSCAR secrets (as `distrdf-oscar deploy
    --dataset-credentials` gives them; a deployment of its own), reading nothing from the client's disk."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in other_endpoint.keys.items():
            patch.setenv(name, value)
        executor = prestarted_cluster.executor(
            progress=False,
            deployment=prestarted_cluster.deployment("extdata"),
            dataset_credentials=True,
            reduction=dro.TreeReduction(fan_in=2),
        )
    executor.shared_paths = ()
    return executor


@pytest.fixture
def client_keys(other_endpoint, monkeypatch):
    """The endpoint's keys in the client's environment (its head node reads the first file)."""
    for name, value in other_endpoint.keys.items():
        monkeypatch.setenv(name, value)


@pytest.mark.usefixtures("client_keys")
def test_dimuon_analysis_over_another_s3_endpoint_is_identical(
    other_endpoint, endpoint_executor, local_spectrum
):
    df = ROOT.RDataFrame("Events", other_endpoint.urls, executor=endpoint_executor, npartitions=5)
    for name, result in book_dimuon_spectrum(df).items():
        assert_same_value(result.GetValue(), local_spectrum[name], name)
    assert _job_keys(endpoint_executor) == []


@pytest.mark.usefixtures("client_keys")
def test_a_chain_of_s3_files_with_friends_is_staged_for_the_head_node(
    prestarted_cluster, upload_to, dimuon_files, other_endpoint, endpoint_executor
):
    """A TChain of the deployment's objects (s3://) with a friend chain on the other endpoint: the
    client's head node stages the first file of each (datasets.stage_for_head_node); the mappers
    read every file by its URL."""

    def book(df):
        df = df.Define("w", "Friends.weight * nMuon")
        return [
            df.Count(),
            df.Sum("w"),
            df.Histo1D(("w", "w", 40, 0, 40), "w"),
            df.Filter("nMuon > 2").Sum("w"),
        ]

    want_main, _want_friend = friend_chain(dimuon_files, other_endpoint.friends)
    want = values(book(ROOT.RDataFrame(want_main)))
    main, _friend = friend_chain(upload_to(prestarted_cluster), other_endpoint.friend_urls)
    got = values(book(ROOT.RDataFrame(main, executor=endpoint_executor, npartitions=4)))
    for index, (g, e) in enumerate(zip(got, want, strict=True)):
        assert_same_value(g, e, f"action {index}")
    assert _job_keys(endpoint_executor) == []


def test_another_endpoints_bad_inputs_are_named_by_the_client(other_endpoint, endpoint_executor, monkeypatch):
    """The head node stages the first file: a missing object, an endpoint that does not answer, wrong
    or missing keys fail at once, naming the URL, never a key."""
    from distrdf_oscar.platform.embedded.s3server import free_port

    host, keys = other_endpoint.host, other_endpoint.keys
    monkeypatch.setenv("S3_ACCESS_KEY", keys["S3_ACCESS_KEY"])
    monkeypatch.setenv("S3_SECRET_KEY", keys["S3_SECRET_KEY"])
    missing = f"s3http://{host}/physics/run3/nothing.root"
    with pytest.raises(
        StorageError, match=rf"^dataset lookup of {missing} failed: NoSuchKey \(no such object"
    ):
        ROOT.RDataFrame("Events", missing, executor=endpoint_executor)
    closed = f"s3http://127.0.0.1:{free_port()}/physics/f.root"
    with pytest.raises(
        StorageError,
        match=rf"^dataset lookup of {closed} failed: the S3 endpoint "
        r"http://127\.0\.0\.1:\d+ did not answer \(NewConnectionError\)$",
    ):
        ROOT.RDataFrame("Events", closed, executor=endpoint_executor)
    monkeypatch.setenv("S3_SECRET_KEY", "not-the-secret")
    with pytest.raises(
        StorageError,
        match=rf"^dataset lookup of {other_endpoint.urls[0]} failed: AccessDenied "
        r"\(check the keys in S3_ACCESS_KEY/S3_SECRET_KEY; the functions get "
        r"them as secrets of the services: distrdf-oscar deploy "
        r"--dataset-credentials\)$",
    ):
        ROOT.RDataFrame("Events", other_endpoint.urls[0], executor=endpoint_executor)
    monkeypatch.delenv("S3_ACCESS_KEY")
    monkeypatch.delenv("S3_SECRET_KEY")
    with pytest.raises(
        StorageError,
        match=r"AccessDenied \(no S3_ACCESS_KEY/S3_SECRET_KEY set: the request was "
        r"anonymous",
    ):
        ROOT.RDataFrame("Events", other_endpoint.urls[0], executor=endpoint_executor)
    with pytest.raises(dro.DatasetError, match=r"'s3http:///physics/f\.root' names no host"):
        ROOT.RDataFrame("Events", "s3http:///physics/f.root", executor=endpoint_executor)
    with pytest.raises(
        dro.ConfigurationError, match=r"^dataset credentials: S3_ACCESS_KEY and S3_SECRET_KEY not set"
    ):
        endpoint_executor.__class__("http://127.0.0.1:1", signing_key="k" * 32, dataset_credentials=True)


@pytest.mark.usefixtures("client_keys")
def test_another_endpoints_bad_inputs_are_named_by_the_mappers(
    prestarted_cluster, other_endpoint, endpoint_executor
):
    """Files after the first are staged by the mappers: a missing object, and services deployed without
    the endpoint's keys (no --dataset-credentials), fail the job naming the URL."""
    missing = f"s3http://{other_endpoint.host}/physics/run3/later.root"
    df = ROOT.RDataFrame(
        "Events", [other_endpoint.urls[0], missing], executor=endpoint_executor, npartitions=2
    )
    with pytest.raises(dro.RemoteError, match=rf"dataset lookup of {missing} failed: NoSuchKey"):
        df.Count().GetValue()
    assert _job_keys(endpoint_executor) == []
    plain = prestarted_cluster.executor(progress=False)  # the session's deployment: no dataset credentials
    plain.shared_paths = ()
    df = ROOT.RDataFrame("Events", other_endpoint.urls[:2], executor=plain, npartitions=2)
    with pytest.raises(
        dro.RemoteError,
        match=rf"dataset lookup of s3http://{other_endpoint.host}/physics/run3/events/"
        r"dimuon_\S+\.root failed: AccessDenied "
        r"\(no S3_ACCESS_KEY/S3_SECRET_KEY set: the request was anonymous",
    ):
        df.Count().GetValue()
    assert _job_keys(plain) == []


def test_deploy_gives_the_dataset_credentials_as_secrets(
    prestarted_cluster, other_endpoint, endpoint_executor, monkeypatch, capsys
):
    """`distrdf-oscar deploy --dataset-credentials` makes the services the executor's option made (the keys
    OSCAR secrets of every service, never variables); without the keys in its environment it refuses."""
    import sys

    _cli_settings(monkeypatch, prestarted_cluster)
    for name, value in other_endpoint.keys.items():
        monkeypatch.setenv(name, value)
    assert endpoint_executor.storage  # deployed with the executor's option
    command = [
        "deploy",
        "--deployment",
        "extdata",
        "--env",
        f"DRO_PYTHON={sys.executable}",
        "--dataset-credentials",
    ]
    assert cli.main(command) == 0
    assert set(capsys.readouterr().out.split("\n")[:-1]) == {
        f"extdata-{role}: unchanged" for role in ("mapper", "reducer", "coordinator", "batch")
    }
    for service in endpoint_executor.deployment.services():
        assert set(service["environment"]["secrets"]) >= {"S3_ACCESS_KEY", "S3_SECRET_KEY"}
        assert not {"S3_ACCESS_KEY", "S3_SECRET_KEY"} & set(service["environment"]["variables"])
    monkeypatch.delenv("S3_SECRET_KEY")
    assert cli.main(command) != 0
    assert "dataset credentials: S3_SECRET_KEY not set in the environment" in capsys.readouterr().err


def test_the_dataset_cache_stays_under_its_bound(
    prestarted_cluster, upload_to, dimuon_files, local_spectrum, tmp_path, monkeypatch
):
    """DRO_CACHE_MAX_BYTES bounds a process's staged files: the least recently used go first, never
    one a running range has open (pinned until S3Staging.release)."""
    import glob
    import os
    import time

    from distrdf_oscar.protocol import datasets

    urls = upload_to(prestarted_cluster)
    bound = int(1.5 * max(os.path.getsize(p) for p in dimuon_files))  # room for one file, not two
    storage = prestarted_cluster.executor(progress=False).storage
    monkeypatch.setenv("DRO_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv(datasets.CACHE_MAX_VARIABLE, str(bound))
    monkeypatch.setattr(datasets, "_caches", {})
    staging = datasets.S3Staging(storage, "bounded")
    first, second = staging.rename(urls[0]), staging.rename(urls[1])
    assert os.path.exists(first)  # over the bound, but one range reads both
    assert os.path.exists(second)
    staging.release()
    assert not os.path.exists(first)  # the least recently used went
    assert os.path.exists(second)
    again = datasets.S3Staging(storage, "bounded")
    assert again.rename(urls[1]) == second
    again.release()
    cache = datasets.process_cache("bounded")
    assert sum(size for _, size, _ in cache.files()) <= bound

    # The warm workers, bounded the same way, give the exact result.
    deployment = prestarted_cluster.deployment("cachebound")
    deployment = deployment.__class__(
        name=deployment.name, variables={**deployment.variables, datasets.CACHE_MAX_VARIABLE: str(bound)}
    )
    executor = prestarted_cluster.executor(progress=False, deployment=deployment)
    executor.shared_paths = ()
    started = time.time()
    df = ROOT.RDataFrame("Events", urls, executor=executor, npartitions=6)
    for name, result in book_dimuon_spectrum(df).items():
        assert_same_value(result.GetValue(), local_spectrum[name], name)
    used = [
        folder
        for folder in glob.glob(
            os.path.join(prestarted_cluster.platform.tmpdir, "**", "dro-datasets-*"), recursive=True
        )
        if any(
            os.path.getmtime(os.path.join(f, n)) >= started for f, _, names in os.walk(folder) for n in names
        )
    ]
    assert used, "no warm worker staged a file"
    for folder in used:
        assert (
            sum(os.path.getsize(os.path.join(f, n)) for f, _, names in os.walk(folder) for n in names)
            <= bound
        )
    assert _job_keys(executor) == []
