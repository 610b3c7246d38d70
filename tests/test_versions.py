"""The whole operator and analyst cycle against each emulated OSCAR release, through oscar-python and
the CLI as on a real cluster, and the release-specific behaviours the project depends on.

What each release does is read from OSCAR's source (github grycap/oscar, ``git show vX.Y.Z:path``);
``distrdf_oscar/platform/embedded/versions.py`` names the file for every behaviour.
"""

from __future__ import annotations

import io
import json
import time

import pytest
import requests
import ROOT
from oscar_python.client import Client

from compare import assert_close, assert_same_hist
from conftest import SAME_MACHINE
from distrdf_oscar import CoordinatedReduction, OSCARExecutor, RemoteError, TreeReduction, cli
from distrdf_oscar.platform.deployment import ROLES, Deployment
from distrdf_oscar.platform.embedded import LocalPlatform
from distrdf_oscar.platform.oscar.cluster import OSCARCluster
from distrdf_oscar.platform.oscar.errors import OSCARError
from distrdf_oscar.protocol import layout
from distrdf_oscar.protocol.signing import ENV_VAR

KEY = "k" * 40
NAME = "cyc"


def book(df):
    sel = df.Filter("nMuon >= 2")
    return [df.Count(), sel.Histo1D(("pt", "pt", 64, 0, 64), "Muon_pt"), df.Mean("nMuon")]


def assert_exact(results, expected) -> None:
    assert results[0].GetValue() == expected[0].GetValue()
    assert_same_hist(results[1].GetValue(), expected[1].GetValue())
    assert_close(results[2].GetValue(), expected[2].GetValue(), "mean")


@pytest.fixture(scope="module")
def expected(dimuon_files):
    return book(ROOT.RDataFrame("Events", dimuon_files))


def settings(platform: LocalPlatform) -> dict[str, str]:
    return {
        "OSCAR_ENDPOINT": platform.oscar_endpoint,
        "OSCAR_USER": platform.oscar_user,
        "OSCAR_PASSWORD": platform.oscar_password,
        "DISTRDF_OSCAR_KEY": KEY,
    }


def run_cli(monkeypatch, capsys, platform, *args: str) -> tuple[int, str, str]:
    for name, value in settings(platform).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DISTRDF_OSCAR_DEPLOYMENT", NAME)
    code = cli.main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def analyst(platform: LocalPlatform, reduction) -> OSCARExecutor:
    deployment = Deployment(name=NAME, variables={"DRO_PYTHON": __import__("sys").executable})
    return OSCARExecutor.from_env(
        settings(platform),
        deployment=deployment,
        reduction=reduction,
        progress=False,
        retry_after=20.0,
        shared_paths=SAME_MACHINE,
    )


def oscar_jobs(platform: LocalPlatform, service: str) -> dict:
    return (
        OSCARCluster(platform.oscar_endpoint, user=platform.oscar_user, password=platform.oscar_password)
        .job_listing(service)
        .jobs
    )


@pytest.mark.parametrize("version", ["3.5", "3.6", "3.7+kueue", "4.1"])
def test_whole_cycle_on_each_release(version, dimuon_files, expected, monkeypatch, capsys):
    with LocalPlatform(workers=2, mode="prestarted", headroom=0.25, oscar_version=version) as platform:
        env = ["--env", f"DRO_PYTHON={__import__('sys').executable}"]
        code, out, err = run_cli(monkeypatch, capsys, platform, "deploy", *env)
        assert code == 0, err
        assert set(out.splitlines()) == {f"{NAME}-{role}: created" for role in ROLES}
        s3 = platform.minio_client()
        assert {b.name for b in s3.list_buckets()} == set(layout.buckets(NAME))

        def analyse() -> dict[str, list[str]]:
            functions = {}
            for reduction in (TreeReduction(fan_in=2, inline=False), CoordinatedReduction()):  # every service
                executor = analyst(platform, reduction)
                df = ROOT.RDataFrame("Events", dimuon_files, executor=executor, npartitions=3)
                assert_exact(book(df), expected)
                functions.update(
                    {
                        f"{executor.deployment.service_name(role)}": names
                        for role, names in executor.last_job.functions.items()
                    }
                )
                assert executor.wait_for_bookkeeping()
            return functions

        first = analyse()
        assert set(first) == {f"{NAME}-{role}" for role in ROLES}
        # Before 4.0 an update deletes and re-creates the service (a PUT would break its triggers).
        code, out, err = run_cli(monkeypatch, capsys, platform, "deploy", "--force", *env)
        assert code == 0, err
        what = "updated" if version >= "4.0" else "replaced"
        assert set(out.splitlines()) == {f"{NAME}-{role}: {what}" for role in ROLES}
        oscar = Client(platform.oscar_options())
        for role in ROLES:
            assert oscar.get_service(f"{NAME}-{role}").json()["owner"] == "cluster_admin"
        analyse()
        # The OSCAR jobs that served the first jobs were deleted once finished.
        if version >= "4.0":  # (a re-created service starts with no jobs anyway)
            assert all(names for names in first.values())
            for service, names in first.items():
                assert not set(names) & set(oscar_jobs(platform, service)), service

        code, out, err = run_cli(monkeypatch, capsys, platform, "status")
        assert code == 0, err
        assert f"version {platform.oscar_version.split('+')[0]}" in out.splitlines()[0]
        code, out, err = run_cli(monkeypatch, capsys, platform, "cleanup")
        assert code == 0, err
        assert "0 job(s) removed" in out

        code, out, err = run_cli(monkeypatch, capsys, platform, "undeploy", "--yes")
        assert code == 0, err
        assert not [s for s in oscar.list_services().json() if s["name"].startswith(NAME)]
        assert not {b.name for b in s3.list_buckets()} & set(layout.buckets(NAME))
        # OSCAR 3.5 keeps a deleted service's buckets: undeploy removed them itself.
        removed_buckets = {line for line in out.splitlines() if line.startswith("bucket ")}
        assert bool(removed_buckets) == (version == "3.5")


# -- release-specific behaviours of the emulator ----------------------------------------------


def service(name: str, path: str, **fields) -> dict:
    return {
        "name": name,
        "image": "any",
        "script": "#!/bin/bash\nenv > $TMP_OUTPUT_DIR/env.txt\n",
        "cpu": "0.1",
        "input": [{"storage_provider": "minio.default", "path": path}],
        "output": [{"storage_provider": "minio.default", "path": f"{path.split('/')[0]}/out"}],
        **fields,
    }


def wait_for(s3, bucket: str, key: str, timeout: float = 30.0) -> bytes:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return s3.get_object(bucket, key).read()
        except Exception:  # noqa: BLE001 - not there yet
            time.sleep(0.1)
    raise AssertionError(f"{bucket}/{key} never appeared")


def put(s3, bucket: str, key: str) -> None:
    s3.put_object(bucket, key, io.BytesIO(b"x"), 1)


@pytest.fixture(scope="module", params=["3.5", "3.6.3", "3.7+kueue", "4.0", "4.1"])
def release(request):
    with LocalPlatform(workers=2, mode="cold", oscar_version=request.param) as platform:
        yield platform


def test_input_bucket_that_exists_is_refused_from_3_6(release):
    oscar, s3 = Client(release.oscar_options()), release.minio_client()
    s3.make_bucket("taken")
    # Raw requests: oscar-python raises on the 500 without saying more.
    answer = requests.post(
        f"{release.oscar_endpoint}/system/services",
        json=service("late", "taken/in"),
        auth=(release.oscar_user, release.oscar_password),
        timeout=30,
    )
    names = {s["name"] for s in oscar.list_services().json()}
    if release.oscar_version >= "3.6":
        assert answer.status_code == 500
        assert 'the bucket "taken" already exists' in answer.text
        assert "late" not in names  # rolled back
    else:
        assert answer.status_code == 201
        assert "late" in names
        oscar.remove_service("late")


def test_listing_shape_paging_and_ownerless_services(release):
    """An admin's PUT without an owner leaves the service ownerless; with Kueue (3.7 and later, when the
    operator turns it on) its jobs stay suspended. The listing's shape and paging follow the release, and the project's
    client reads every shape."""
    oscar = Client(release.oscar_options())
    oscar.create_service(service("own", "ownb/in"))
    definition = oscar.get_service("own").json()
    definition.pop("owner")
    oscar.update_service("own", definition)
    owner = oscar.get_service("own").json()["owner"]
    assert owner == ("cluster_admin" if release.oscar_version < "3.6" else "")  # 3.5's PUT changes nothing
    token = oscar.get_service("own").json()["token"]

    for index in range(75):
        answer = requests.post(
            f"{release.oscar_endpoint}/job/own",
            data=json.dumps({"i": index}),
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        assert answer.status_code == 201
    raw = oscar.list_jobs("own").json()
    listing = OSCARCluster(
        release.oscar_endpoint, user=release.oscar_user, password=release.oscar_password
    ).job_listing("own")
    assert listing.complete
    if release.oscar_version >= "3.6.4":
        assert set(raw) <= {"jobs", "next_page"}
        assert len(raw["jobs"]) == 70
        assert raw["next_page"]
        assert list(raw["jobs"]) == sorted(raw["jobs"])  # name order, not recency
    else:
        assert "jobs" not in raw
        assert len(raw) == 75
    assert len(listing.jobs) == 75
    if release.oscar_version.endswith("+kueue"):
        assert listing.busy == 75
        assert {info["status"] for info in listing.jobs.values()} == {"Suspended"}
    else:
        assert "Suspended" not in {info["status"] for info in listing.jobs.values()}
    oscar.remove_service("own")


def test_update_keeps_triggers_only_from_4_0(release):
    oscar, s3 = Client(release.oscar_options()), release.minio_client()
    oscar.create_service(service("trig", "trigb/in"))
    put(s3, "trigb", "in/one.txt")
    first = wait_for(s3, "trigb", "out/env.txt").decode()
    assert ("OSCAR_SERVICE_NAME=trig" in first) == (release.oscar_version >= "4.0")
    s3.remove_object("trigb", "out/env.txt")
    definition = oscar.get_service("trig").json()
    oscar.update_service("trig", {**definition, "memory": "300Mi"})
    put(s3, "trigb", "in/two.txt")
    if release.oscar_version >= "4.0" or release.oscar_version < "3.6":
        wait_for(s3, "trigb", "out/env.txt")
    else:  # the new token never reaches MinIO's webhook: the event is refused
        with pytest.raises(AssertionError, match="never appeared"):
            wait_for(s3, "trigb", "out/env.txt", timeout=3)
    oscar.remove_service("trig")
    assert s3.bucket_exists("trigb") == (release.oscar_version < "3.6")


def test_functions_see_keys_only_in_mounted_files_and_secrets_from_3_6(release):
    oscar, s3 = Client(release.oscar_options()), release.minio_client()
    script = (
        "#!/bin/bash\n(env | grep -c '^SECRET_X=' ;"
        ' grep -c hidden "$DRO_FUNCTION_CONFIG"; cat "$DRO_PROVIDER_SECRETS/accessKey")'
        " > $TMP_OUTPUT_DIR/env.txt\n"
    )
    oscar.create_service(
        service(
            "keys", "keysb/in", script=script, environment={"variables": {}, "secrets": {"SECRET_X": "s"}}
        )
    )
    put(s3, "keysb", "in/a.txt")
    secret_seen, hidden, access_key = wait_for(s3, "keysb", "out/env.txt").decode().split()
    assert secret_seen == ("1" if release.oscar_version >= "3.6" else "0")
    assert int(hidden) == 2  # access_key and secret_key read "hidden" in the function's config
    assert access_key == release.s3_access_key
    oscar.remove_service("keys")


def test_removed_fields_are_dropped_in_4_1(release):
    oscar = Client(release.oscar_options())
    oscar.create_service(service("gone", "goneb/in", replicas=[], rescheduler_threshold=3))
    stored = oscar.get_service("gone").json()
    assert ("rescheduler_threshold" in stored) == (release.oscar_version < "4.1")
    oscar.remove_service("gone")


def test_a_function_without_its_signing_key_fails_the_job_at_once(release, dimuon_files):
    """A deployment whose functions lack the signing key (a secret oscar-cli drops; OSCAR 3.5 never
    delivers secrets) fails the job within seconds, naming the setting."""
    if not release.oscar_version.startswith("4.1"):
        pytest.skip("one release suffices: the marker path does not depend on it")
    deployment = Deployment(name="nokey", variables={"DRO_PYTHON": __import__("sys").executable})
    oscar = Client(release.oscar_options())
    for definition in deployment.services():
        oscar.create_service(definition)
    executor = OSCARExecutor(
        release.oscar_endpoint,
        user=release.oscar_user,
        password=release.oscar_password,
        signing_key=KEY,
        deployment=deployment,
        progress=False,
        shared_paths=SAME_MACHINE,
    )
    start = time.monotonic()
    with pytest.raises(RemoteError, match=rf"could not start.*{ENV_VAR}.*missing"):
        ROOT.RDataFrame("Events", dimuon_files, executor=executor, npartitions=1).Count().GetValue()
    assert time.monotonic() - start < 30
    for definition in deployment.services():
        oscar.remove_service(definition["name"])


def test_storage_endpoint_alone_is_overridden_keeping_the_clusters_keys(release):
    """/system/config often advertises a cluster-internal endpoint: MINIO_ENDPOINT alone replaces it."""
    if not release.oscar_version.startswith("4.1"):
        pytest.skip("one release suffices")
    port = release.s3_endpoint.rsplit(":", 1)[1]
    override = f"http://localhost:{port}"  # another name for the same server
    env = {**settings(release), "MINIO_ENDPOINT": override}
    executor = OSCARExecutor.from_env(
        env, deployment=Deployment(name="over"), auto_deploy=True, progress=False
    )
    storage = executor.storage  # deploys, checks the buckets and that conditional writes hold
    assert storage.config.endpoint == override
    assert storage.config.access_key == release.s3_access_key
    assert not [
        o
        for o in release.minio_client().list_objects("over", recursive=True)
        if not o.object_name.endswith("/")
    ]  # the probe left nothing
    executor.cluster.undeploy(executor.deployment, storage)


def admin(platform) -> OSCARCluster:
    return OSCARCluster(platform.oscar_endpoint, user=platform.oscar_user, password=platform.oscar_password)


def admin_storage(platform, deployment: Deployment):
    executor = OSCARExecutor(
        platform.oscar_endpoint,
        user=platform.oscar_user,
        password=platform.oscar_password,
        signing_key=KEY,
        deployment=deployment,
        progress=False,
    )
    return executor.unchecked_storage()


def test_deploy_refuses_a_bucket_that_exists_before_oscar_can_fail_or_delete_it(release):
    deployment = Deployment(name="clash").with_signing_key(KEY)
    release.minio_client().make_bucket("clash-plans")
    cluster, storage = admin(release), admin_storage(release, deployment)
    if release.oscar_version < "3.6":
        assert set(cluster.deploy(deployment, storage).values()) == {"created"}  # 3.5 only logs it
    else:
        with pytest.raises(OSCARError, match=r"input bucket clash-plans already exists"):
            cluster.deploy(deployment, storage)
    cluster.undeploy(deployment, storage)
    assert not {b.name for b in release.minio_client().list_buckets()} & set(deployment.buckets)


def test_updates_before_4_0_wait_for_running_jobs_and_ownerless_services_are_repaired(release):
    deployment = Deployment(name="upd", memory="1Gi").with_signing_key(KEY)
    cluster, storage = admin(release), admin_storage(release, deployment)
    cluster.deploy(deployment, storage)
    changed = Deployment(name="upd", memory="3Gi").with_signing_key(KEY)
    storage.put_bytes(layout.JobKeys(layout.new_job_id()).manifest, b"{}")  # a job some client waits for
    if release.oscar_version < "4.0":
        with pytest.raises(OSCARError, match="while jobs run"):
            cluster.deploy(changed, storage)
    else:
        outcome = cluster.deploy(changed, storage)
        assert outcome.pop("upd-coordinator") == "unchanged"  # its memory is its own
        assert set(outcome.values()) == {"updated"}
        # An admin's update without an owner (as distrdf-oscar before this release sent) breaks Kueue's admission.
        oscar = Client(release.oscar_options())
        definition = oscar.get_service("upd-mapper").json()
        definition.pop("owner")
        oscar.update_service("upd-mapper", definition)
        with pytest.raises(OSCARError, match=r"upd-mapper have no owner.*deploy --force"):
            cluster.check_deployed(changed)
        cluster.deploy(changed, storage, force=True)
        assert oscar.get_service("upd-mapper").json()["owner"] == "cluster_admin"
        cluster.check_deployed(changed)
    cluster.undeploy(deployment, storage)


def test_kueue_is_off_unless_asked_for_as_the_helm_charts_deploy_it():
    """KUEUE_ENABLE is "false" in every chart from 3.7.0 to 4.1.2; "+kueue" turns it on (3.7 and later)."""
    from distrdf_oscar.platform.embedded.versions import OscarVersion

    assert not OscarVersion.parse("4.1").kueue
    on = OscarVersion.parse("4.1+kueue")
    assert on.kueue
    assert on.label == "v4.1.2+kueue"
    assert on.number == "4.1.2"
    assert OscarVersion.parse(on.label) == on
    with pytest.raises(ValueError, match="no Kueue"):
        OscarVersion.parse("3.6+kueue")


def minio_restarts(platform: LocalPlatform) -> int:
    """How often the platform restarted MinIO (the emulator's own endpoint)."""
    return requests.get(
        f"{platform.oscar_endpoint}/system/local/minio",
        timeout=30,
        auth=(platform.oscar_user, platform.oscar_password),
    ).json()["restarts"]


def test_minio_restarts_on_every_create_and_delete_and_on_updates_adding_a_bucket(release):
    """registerMinIOWebhook/removeMinIOWebhook restart MinIO on create and delete (every release), an
    update once per bucket it adds (3.6 and later; 3.5's update gives up first), a create refused for
    its existing input bucket after the restart (3.6 and later)."""
    oscar = Client(release.oscar_options())
    before = minio_restarts(release)
    oscar.create_service(service("rst", "rstb/in"))
    assert minio_restarts(release) == before + 1
    definition = oscar.get_service("rst").json()
    oscar.update_service("rst", {**definition, "memory": "300Mi"})
    assert minio_restarts(release) == before + 1  # the same buckets
    added = {
        **definition,
        "output": [*definition["output"], {"storage_provider": "minio.default", "path": "rstc/out"}],
    }
    oscar.update_service("rst", added)
    adds = 1 if release.oscar_version >= "3.6" else 0
    assert minio_restarts(release) == before + 1 + adds
    oscar.remove_service("rst")
    assert minio_restarts(release) == before + 2 + adds
    release.minio_client().make_bucket("rstd")
    answer = requests.post(
        f"{release.oscar_endpoint}/system/services",
        json=service("rsd", "rstd/in"),
        auth=(release.oscar_user, release.oscar_password),
        timeout=30,
    )
    assert minio_restarts(release) == before + 3 + adds
    if answer.status_code == 201:  # 3.5 only logs the existing bucket
        oscar.remove_service("rsd")
