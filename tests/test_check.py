"""``distrdf-oscar check`` against an embedded cluster, as an operator would run it, and against
misconfigured ones: one line naming the fault, its exit code, no traceback. Every fault of
``check.FAULTS`` is met here as a user would meet it."""

from __future__ import annotations

import http.server
import json
import re
import secrets
import socket
import sys
import threading

import pytest
from minio import MinioAdmin
from minio.credentials import StaticProvider

import distrdf_oscar as dro
from distrdf_oscar import check, cli
from distrdf_oscar.client.job import find_jobs
from distrdf_oscar.platform.embedded import Fault

pytestmark = pytest.mark.timeout(600)

QUOTA = ("1", "1Gi")  # the cold cluster's Kueue queue of each OIDC user: less than a mapper's 2Gi


@pytest.fixture(scope="module")
def cluster():
    with dro.LocalCluster(workers=2, mode="warm", startup_delay=0.0) as local:
        yield local


@pytest.fixture(scope="module")
def cold():
    """No warm pool: the test job runs on the file-triggered services (no emulated pod start; the
    tests hold functions back with faults). OSCAR 4.1 with Kueue, and an OIDC analyst, alice, whose
    queue (QUOTA) is too small for the functions. The operator's deployment is deployed."""
    with dro.LocalCluster(
        workers=2,
        mode="cold",
        startup_delay=0.0,
        oscar_version="4.1+kueue",
        oidc_users=("alice",),
        user_quota=QUOTA,
    ) as local:
        local.executor(progress=False).storage  # noqa: B018 (connecting deploys the services)
        yield local


def point_at(monkeypatch: pytest.MonkeyPatch, cluster: dro.LocalCluster) -> pytest.MonkeyPatch:
    """The cluster's variables (LocalCluster.environment) and nothing else of OSCAR's or MinIO's."""
    for name in ("OSCAR_TOKEN", "OSCAR_SSL_VERIFY", "MINIO_ENDPOINT", "MINIO_ACCESS_KEY", "MINIO_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    for name, value in cluster.environment().items():
        monkeypatch.setenv(name, value)
    return monkeypatch


@pytest.fixture
def environment(cluster, monkeypatch):
    return point_at(monkeypatch, cluster)


@pytest.fixture
def cold_environment(cold, monkeypatch):
    return point_at(monkeypatch, cold)


def run_check(capsys, *args: str) -> tuple[int, str, str]:
    code = cli.main(["check", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def assert_fault(result: tuple[int, str, str], fault: str, says: str) -> None:
    code, _, err = result
    assert code == check.FAULTS[fault], err
    assert err.startswith(f"distrdf-oscar check: {fault}: "), err
    assert says in err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err


def test_a_working_cluster_passes_every_step_and_runs_a_tiny_job(environment, capsys):
    code, out, err = run_check(capsys)
    assert code == 0, err
    steps = [line.split(":", 1)[0] for line in out.splitlines() if line.startswith("ok ")]
    assert steps == [
        "ok   settings",
        "ok   OSCAR",
        "ok   storage",
        "ok   services",
        "ok   conditional writes",
        "ok   quota",
        "ok   warm pool",
        "ok   test job",
    ]
    assert "2 live worker(s)" in out
    assert "RDataFrame(1000).Sum exact" in out
    assert "on the warm pool" in out
    assert out.splitlines()[-1] == "every check passed"


def test_missing_settings_are_named(environment, capsys):
    environment.delenv("DISTRDF_OSCAR_KEY")
    assert_fault(run_check(capsys), "settings", "DISTRDF_OSCAR_KEY (the deployment's signing key) is not set")


def test_an_unreachable_oscar_is_named(environment, capsys):
    environment.setenv("OSCAR_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    assert_fault(run_check(capsys), "oscar", "cannot reach OSCAR at http://127.0.0.1:")


def test_refused_credentials_are_named(environment, capsys):
    environment.setenv("OSCAR_PASSWORD", "not-the-password")
    assert_fault(run_check(capsys), "credentials", "401 Unauthorized")


class _OldOscar(http.server.BaseHTTPRequestHandler):
    """An HTTP server answering /system/info as an OSCAR release this client does not support."""

    def do_GET(self):
        body = json.dumps({"version": "v3.4.1"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_an_unsupported_release_is_named(environment, capsys):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _OldOscar)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        environment.setenv("OSCAR_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
        assert_fault(run_check(capsys), "release", "OSCAR v3.4.1 at http://127.0.0.1:")
    finally:
        server.shutdown()
        server.server_close()


def test_a_storage_this_client_cannot_reach_is_named(environment, capsys):
    environment.setenv("MINIO_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    assert_fault(run_check(capsys), "storage", "set MINIO_ENDPOINT to an address of that MinIO")


def test_a_deployment_that_is_not_there_is_named(environment, capsys):
    environment.setenv("DISTRDF_OSCAR_DEPLOYMENT", "nothere")
    assert_fault(run_check(capsys), "services", "deployment 'nothere' is not on")


def test_a_deployment_of_another_key_is_named(environment, capsys):
    environment.setenv("DISTRDF_OSCAR_KEY", "x" * 40)
    assert_fault(run_check(capsys), "services", "holds a different signing key")


def storage_user(cluster, name: str, actions: list[str]) -> tuple[str, str]:
    """Keys of a new MinIO user whose one policy, ``name``, allows ``actions`` on every bucket: what
    a storage administrator hands out with ``mc admin user add`` and ``mc admin policy attach``
    (here MinIO's admin API through minio-py, with the platform's root keys)."""
    platform = cluster.platform
    admin = MinioAdmin(
        endpoint=platform.s3_endpoint,
        credentials=StaticProvider(platform.s3_access_key, platform.s3_secret_key),
        secure=False,
    )
    secret = secrets.token_hex(16)
    admin.policy_add(
        name,
        policy={
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": actions, "Resource": ["arn:aws:s3:::*"]}],
        },
    )
    admin.user_add(name, secret)
    admin.policy_set(name, user=name)
    return name, secret


def use_storage_keys(environment, cluster, keys: tuple[str, str]) -> None:
    environment.setenv("MINIO_ENDPOINT", f"http://{cluster.platform.s3_endpoint}")
    environment.setenv("MINIO_ACCESS_KEY", keys[0])
    environment.setenv("MINIO_SECRET_KEY", keys[1])


def test_storage_keys_that_cannot_even_list_the_buckets_are_named(cluster, environment, capsys):
    """MinIO's canned ``readonly`` policy (GetBucketLocation, GetObject; the embedded MinIO has no
    canned policies, so it is added as MinIO defines it): the services are there, but these keys
    may not look at their buckets. The keys are at fault, not the deployment."""
    keys = storage_user(cluster, "readonly", ["s3:GetBucketLocation", "s3:GetObject"])
    use_storage_keys(environment, cluster, keys)
    result = run_check(capsys)
    assert_fault(result, "storage", "failed: AccessDenied: the storage refuses the keys MINIO_ACCESS_KEY")
    assert "ok   services" not in result[1]
    assert "may list, read and write the deployment's buckets (distrdf, " in result[2]


def test_storage_that_refuses_this_clients_writes_is_named(cluster, environment, capsys):
    """Keys that may list and read the deployment's buckets, not write them (a dataset reader's
    policy): the probe of conditional writes, the first write, is refused, even where this process
    already knows from an earlier check that the storage honours them."""
    keys = storage_user(cluster, "dataset-reader", ["s3:GetBucketLocation", "s3:ListBucket", "s3:GetObject"])
    use_storage_keys(environment, cluster, keys)
    result = run_check(capsys)
    assert_fault(
        result,
        "conditional writes",
        "failed: AccessDenied: the storage refuses this client's writes with the keys MINIO_ACCESS_KEY",
    )
    assert "ok   services" in result[1]
    assert "storage upload of s3://distrdf/" in result[2]


def test_the_environment_points_every_command_at_the_cluster(environment, capsys):
    assert cli.main(["status"]) == 0
    out = capsys.readouterr().out
    assert "deployment 'distrdf'" in out
    assert cli.main(["pool", "status", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["workers"]) == 2


def test_a_cluster_of_oscar_cli_reaches_every_command(cluster, environment, capsys, tmp_path):
    """An analyst's oscar-cli configuration names the cluster; no OSCAR_* variable is set."""
    env = cluster.environment()
    (tmp_path / "config.yaml").write_text(
        "oscar:\n"
        "  local:\n"
        f"    endpoint: {env['OSCAR_ENDPOINT']}\n"
        f"    auth_user: {env['OSCAR_USER']}\n"
        f"    auth_password: {env['OSCAR_PASSWORD']}\n"
        "    ssl_verify: true\n"
        "default: local\n"
    )
    environment.setenv("DISTRDF_OSCAR_CLI_CONFIG", str(tmp_path / "config.yaml"))
    for name in ("OSCAR_ENDPOINT", "OSCAR_USER", "OSCAR_PASSWORD"):
        environment.delenv(name)
    assert cli.main(["status", "--cluster", "local"]) == 0
    assert f"OSCAR {env['OSCAR_ENDPOINT']}" in capsys.readouterr().out
    assert cli.main(["pool", "status", "--json"]) == 0  # its default cluster, unnamed
    assert len(json.loads(capsys.readouterr().out)["workers"]) == 2
    executor = dro.OSCARExecutor.from_cluster("local")
    assert executor.cluster.endpoint == env["OSCAR_ENDPOINT"]
    assert len(executor.pool_workers()) == 2


# -- on the cold cluster: quota, job and start (last: its held functions keep their slots) -------


def test_a_quota_that_can_never_admit_the_functions_is_named(cold, cold_environment, capsys):
    """Alice, an OIDC analyst, deploys services of her own: Kueue admits their jobs from her queue
    (1 CPU, 1Gi), and a mapper asks for 2Gi. The check says so before any job is submitted."""
    env = cold_environment
    for name in ("OSCAR_USER", "OSCAR_PASSWORD"):
        env.delenv(name)
    env.setenv("OSCAR_TOKEN", cold.platform.oidc_options("alice")["oidc_token"])
    env.setenv("DISTRDF_OSCAR_KEY", secrets.token_hex(20))
    env.setenv("DISTRDF_OSCAR_DEPLOYMENT", "alices")
    assert cli.main(["deploy"]) == 0, capsys.readouterr().err
    capsys.readouterr()
    result = run_check(capsys)
    _, out, err = result
    assert_fault(result, "quota", "cannot run under your Kueue quota on http://")
    assert "(1 CPUs, 1Gi): the mapper needs 1 CPUs and 2Gi, so it would never be admitted" in err
    assert "ok   conditional writes" in out
    executor = dro.OSCARExecutor.from_env(progress=False)
    assert find_jobs(executor.storage) == {}  # nothing was submitted


def test_a_test_job_whose_functions_are_killed_is_named(cold, cold_environment, capsys):
    """An operator deployed functions with too little memory (``--memory 64Mi``): each is
    OOM-killed as it imports ROOT, as Kubernetes would, every retry too, and the test job fails
    naming the task it lost. (The platform watches each function's memory, see memory.py.)"""
    cold_environment.setenv("DISTRDF_OSCAR_DEPLOYMENT", "small")
    assert cli.main(["deploy", "--memory", "64Mi", "--env", f"DRO_PYTHON={sys.executable}"]) == 0
    capsys.readouterr()
    result = run_check(capsys)
    assert_fault(result, "job", "the test job failed: job ")
    assert "ok   warm pool: none up" in result[1]
    for says in ("produced nothing", "after 4 attempt(s)", "Its function was killed"):
        assert says in result[2]


def test_a_test_job_that_does_not_start_in_time_is_named(cold, cold_environment, capsys):
    """Every function held back a minute before it starts (as by a first pull of the image), and
    ``--start-timeout 5``: nothing started in time, and the check cancels its test job."""
    cold.platform.inject(Fault.delay(seconds=60.0, times=20))
    try:
        result = run_check(capsys, "--start-timeout", "5")
        (delay,) = cold.platform.faults()
    finally:
        cold.platform.clear_faults()
    assert_fault(result, "start", "no function of the test job started within 5 s (job ")
    assert "ok   test job" not in result[1]
    assert delay.fired >= 1  # functions were invoked, and held
    job_id = re.search(r"\(job (\S+), now cancelled\)", result[2])
    assert job_id, result[2]
    assert job_id.group(1) not in find_jobs(cold.executor(progress=False).unchecked_storage())
