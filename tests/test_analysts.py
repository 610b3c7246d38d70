"""Analysts with OIDC credentials of their own: on an operator's deployment, and on one they own
under Kueue's per-user quota (an embedded OSCAR 4.1 with OIDC users ``alice`` and ``bob``)."""

from __future__ import annotations

import re
import sys

import pytest
import requests
import ROOT
from minio import Minio
from minio.error import S3Error
from oscar_python.client import Client

from conftest import SAME_MACHINE
from distrdf_oscar import CoordinatedReduction, OSCARExecutor, TreeReduction, cli
from distrdf_oscar.client.settings import ConfigurationError
from distrdf_oscar.platform.deployment import ROLES, Deployment
from distrdf_oscar.platform.oscar.cluster import OSCARCluster
from distrdf_oscar.platform.oscar.errors import OSCARError
from distrdf_oscar.protocol import layout
from distrdf_oscar.protocol.storage import StorageError

KEY = "a" * 40
PYTHON = ["--env", f"DRO_PYTHON={sys.executable}"]


# This module's platform (conftest.py): an OSCAR 4.1 with OIDC users.
PLATFORM = {
    "workers": 2,
    "mode": "prestarted",
    "headroom": 0.25,
    "oidc_users": ("alice", "bob"),
    "oscar_version": "4.1+kueue",
}  # per-user quotas: Kueue on, as the operator may set it


@pytest.fixture(scope="module")
def expected(dimuon_files):
    df = ROOT.RDataFrame("Events", dimuon_files)
    return df.Count(), df.Histo1D(("n", "n", 8, 0, 8), "nMuon")


def deploy(monkeypatch, capsys, platform, *args: str, token_of: str | None = None) -> tuple[int, str, str]:
    """``distrdf-oscar ARGS`` as the operator (basic auth) or as an OIDC user."""
    for name in ("OSCAR_USER", "OSCAR_PASSWORD", "OSCAR_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OSCAR_ENDPOINT", platform.oscar_endpoint)
    monkeypatch.setenv("DISTRDF_OSCAR_KEY", KEY)
    if token_of:
        monkeypatch.setenv("OSCAR_TOKEN", platform.oidc_options(token_of)["oidc_token"])
    else:
        monkeypatch.setenv("OSCAR_USER", platform.oscar_user)
        monkeypatch.setenv("OSCAR_PASSWORD", platform.oscar_password)
    code = cli.main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def analyst(platform, sub: str, name: str, reduction=None) -> OSCARExecutor:
    return OSCARExecutor(
        platform.oscar_endpoint,
        token=platform.oidc_options(sub)["oidc_token"],
        signing_key=KEY,
        deployment=Deployment(name=name),
        reduction=reduction,
        progress=False,
        retry_after=20.0,
        shared_paths=SAME_MACHINE,
    )


def run(executor, files):
    df = ROOT.RDataFrame("Events", files, executor=executor, npartitions=3)
    count, histogram = df.Count(), df.Histo1D(("n", "n", 8, 0, 8), "nMuon")
    return count.GetValue(), [histogram.GetBinContent(i) for i in range(10)]


def reference(expected):
    count, histogram = expected
    return count.GetValue(), [histogram.GetBinContent(i) for i in range(10)]


def test_an_analyst_runs_jobs_on_an_operators_restricted_deployment(
    platform, dimuon_files, expected, monkeypatch, capsys
):
    code, _, err = deploy(
        monkeypatch, capsys, platform, "deploy", "--deployment", "ops", "--allowed-user", "alice", *PYTHON
    )
    assert code == 0, err
    for reduction in (TreeReduction(fan_in=2), CoordinatedReduction()):
        executor = analyst(platform, "alice", "ops", reduction)
        assert run(executor, dimuon_files) == reference(expected)
        # Alice's client used her own MinIO account, handed out by /system/config.
        assert executor.storage.config.access_key == "alice"
    # The OSCAR jobs that served her were deleted once finished (she may list and delete them).
    served = dict(executor.last_job.functions.items())
    assert executor.wait_for_bookkeeping()
    assert set(served) == {"mapper", "coordinator", "batch"}
    admin = OSCARCluster(platform.oscar_endpoint, user=platform.oscar_user, password=platform.oscar_password)
    for role, names in served.items():
        assert not set(names) & set(admin.job_listing(f"ops-{role}").jobs), role

    # Bob is not listed: he sees no service, and his storage account may not touch the buckets.
    with pytest.raises(OSCARError, match=r"not visible to you.*--allowed-user"):
        _ = analyst(platform, "bob", "ops").storage  # connecting is the check
    bob_oscar = Client(platform.oidc_options("bob"))
    assert bob_oscar.list_services().json() == []
    answer = requests.get(
        f"{platform.oscar_endpoint}/system/services/ops-mapper",
        timeout=30,
        headers={"Authorization": f"Bearer {platform.oidc_options('bob')['oidc_token']}"},
    )
    assert answer.status_code == 403  # OSCAR 4.x (3.6 and 3.7 answer an empty 200)
    answer = requests.post(
        f"{platform.oscar_endpoint}/job/ops-mapper",
        data="{}",
        timeout=30,
        headers={"Authorization": f"Bearer {platform.oidc_options('bob')['oidc_token']}"},
    )
    assert answer.status_code == 404  # not a service Bob may use
    access, secret = platform.oidc_storage_keys("bob")
    bob = Minio(platform.s3_endpoint, access_key=access, secret_key=secret, secure=False)
    with pytest.raises(S3Error, match="AccessDenied"):
        list(bob.list_objects("ops", recursive=True))
    assert deploy(monkeypatch, capsys, platform, "undeploy", "--deployment", "ops", "--yes")[0] == 0


def test_an_analysts_s3_dataset_is_read_with_her_keys_or_refused_naming_it(
    platform, dimuon_files, expected, monkeypatch, capsys
):
    for name, users in (("ops", ("--allowed-user", "alice")), ("closed", ())):
        code, _, err = deploy(monkeypatch, capsys, platform, "deploy", "--deployment", name, *users, *PYTHON)
        assert code == 0, err
    alice = analyst(platform, "alice", "ops")
    alice.shared_paths = ()  # as on a real cluster: nothing from her disk
    urls = alice.upload(dimuon_files, folder="alice-run")  # into the bucket her account may write
    assert run(alice, urls) == reference(expected)
    operator = OSCARExecutor(
        platform.oscar_endpoint,
        user=platform.oscar_user,
        password=platform.oscar_password,
        signing_key=KEY,
        deployment=Deployment(name="closed"),
        progress=False,
    )
    closed = operator.upload(dimuon_files[:1], folder="private")
    # Her head node stages the first file with her keys, which may not read that bucket.
    with pytest.raises(StorageError, match=rf"{re.escape(closed[0])} failed: AccessDenied"):
        ROOT.RDataFrame("Events", closed, executor=alice)
    alice.storage.delete([url.split("/", 3)[3] for url in urls])
    operator.storage.delete([url.split("/", 3)[3] for url in closed])


def test_a_coordinated_job_under_a_per_user_quota_runs_or_is_refused_naming_it(
    platform, dimuon_files, expected, monkeypatch, capsys
):
    """Services Alice owns are admitted by Kueue from her queue (2 CPUs, 2Gi). The coordinator holds its
    share for the whole job, so mappers must fit beside it: a deployment where they cannot is refused
    at once, naming the quota; one where they fit runs without deadlock."""
    code, _, err = deploy(
        monkeypatch, capsys, platform, "deploy", "--deployment", "mine", *PYTHON, token_of="alice"
    )
    assert code == 0, err
    owners = {s["name"]: s["owner"] for s in Client(platform.oidc_options("alice")).list_services().json()}
    assert {owners[f"mine-{role}"] for role in ROLES} == {"alice"}
    # Mappers of 2Gi alone fit: a tree runs, one function at a time.
    assert run(analyst(platform, "alice", "mine", TreeReduction(fan_in=2)), dimuon_files) == reference(
        expected
    )
    with pytest.raises(
        ConfigurationError,
        match=r"Kueue quota .*2 CPUs, 2Gi.*mapper beside the coordinator "
        r"needs 1.25 CPUs and 2.5Gi",
    ):
        run(analyst(platform, "alice", "mine", CoordinatedReduction()), dimuon_files)
    assert analyst(platform, "alice", "mine").storage.list(layout.JOBS + "/") == []  # nothing was submitted

    code, out, err = deploy(
        monkeypatch,
        capsys,
        platform,
        "deploy",
        "--deployment",
        "mine",
        "--memory",
        "1536Mi",
        *PYTHON,
        token_of="alice",
    )
    assert code == 0, err
    assert set(out.split("\n")[:-1]) <= {f"mine-{role}: updated" for role in ROLES} | {
        f"mine-{role}: unchanged" for role in ROLES
    }
    assert run(analyst(platform, "alice", "mine", CoordinatedReduction()), dimuon_files) == reference(
        expected
    )
    assert (
        deploy(monkeypatch, capsys, platform, "undeploy", "--deployment", "mine", "--yes", token_of="alice")[
            0
        ]
        == 0
    )
