"""``distrdf-oscar check`` against an embedded cluster, as an operator would run it, and against
misconfigured ones: one line naming the fault, its exit code, no traceback."""

from __future__ import annotations

import http.server
import json
import socket
import threading

import pytest

import distrdf_oscar as dro
from distrdf_oscar import check, cli

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def cluster():
    with dro.LocalCluster(workers=2, mode="warm", startup_delay=0.0) as local:
        yield local


@pytest.fixture
def environment(cluster, monkeypatch):
    """The cluster's variables (LocalCluster.environment) and nothing else of OSCAR's or MinIO's."""
    for name in ("OSCAR_TOKEN", "OSCAR_SSL_VERIFY", "MINIO_ENDPOINT", "MINIO_ACCESS_KEY", "MINIO_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    for name, value in cluster.environment().items():
        monkeypatch.setenv(name, value)
    return monkeypatch


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
