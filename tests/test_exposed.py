"""Exposed services on the embedded platform: a Deployment of long-lived replicas, as OSCAR makes one
(pkg/backends/resources/expose.go), driven through the real oscar-python client and OSCAR's REST API.

One 4.1 platform is shared (probe timings scaled by ``exposed_time_scale``); other releases get a
short-lived platform of their own for what differs.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time

import pytest
import requests
from oscar_python.client import Client

from distrdf_oscar.platform.embedded import LocalPlatform

SCALE = 0.05  # probe periods and delays, back-off and grace: 1/20 of Kubernetes' and OSCAR's

# A pool worker's skeleton: binds the shared port with SO_REUSEPORT, answers the probes (500 while
# $FAIL_FILE exists), and records its environment in $MARKER_DIR/<pid>.json.
SERVER = r"""
import http.server, json, os, socket
port = int(os.environ["PORT"])
with open(os.path.join(os.environ["MARKER_DIR"], f"{os.getpid()}.json"), "w") as out:
    json.dump(dict(os.environ, CWD=os.getcwd()), out)
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        failing = os.path.exists(os.environ.get("FAIL_FILE", "/nonexistent"))
        self.send_response(500 if failing else 200)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
class Server(http.server.HTTPServer):
    def server_bind(self):
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()
print("serving on", port, flush=True)
Server(("127.0.0.1", port), Handler).serve_forever()
"""
SCRIPT = "#!/bin/sh\nexec python3 -c '{}'\n".format(SERVER.replace("'", "'\"'\"'"))
SUPERVISOR_VARIABLES = (
    "INPUT_FILE_PATH",
    "TMP_INPUT_DIR",
    "TMP_OUTPUT_DIR",
    "STORAGE_OBJECT_KEY",
    "EVENT",
    "JOB_UUID",
    "DRO_PROVIDER_SECRETS",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def definition(name: str, tmp_path, min_scale: int = 1, ports_as_list: bool = True, **expose) -> dict:
    port = free_port()
    markers = tmp_path / name
    markers.mkdir(exist_ok=True)
    return {
        "name": name,
        "image": "local",
        "script": SCRIPT,
        "environment": {
            "variables": {
                "PORT": str(port),
                "MARKER_DIR": str(markers),
                "FAIL_FILE": str(tmp_path / f"{name}.fail"),
            },
            "secrets": {"POOL_SECRET": "s3cr3t-value"},
        },
        "expose": {
            "api_port": [port] if ports_as_list else port,
            "min_scale": min_scale,
            "max_scale": max(min_scale, 1) + 1,
            "cpu_threshold": 80,
            **expose,
        },
    }


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie not yet reaped by the platform counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def wait_for(check, timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def ready_pids(local: LocalPlatform, name: str) -> list[int]:
    return sorted(r["pid"] for r in local.exposed_replicas(name) if r["ready"] and r["pid"])


@pytest.fixture(scope="module")
def local():
    with LocalPlatform(exposed_time_scale=SCALE) as platform:
        yield platform


@pytest.fixture(scope="module")
def oscar(local):
    return Client(local.oscar_options())


def api(local: LocalPlatform, method: str, path: str, **kwargs) -> requests.Response:
    return requests.request(
        method,
        f"{local.oscar_endpoint}{path}",
        auth=(local.oscar_user, local.oscar_password),
        timeout=30,
        **kwargs,
    )


def test_replicas_start_with_an_exposed_pods_environment(local, oscar, tmp_path):
    assert oscar.create_service(definition("pool-env", tmp_path, min_scale=2)).status_code == 201
    pids = wait_for(
        lambda: len(ready_pids(local, "pool-env")) == 2 and ready_pids(local, "pool-env"),
        what="two ready replicas",
    )
    replicas = local.exposed_replicas("pool-env")
    assert len({r["dir"] for r in replicas}) == 2  # a working directory each
    assert all(r["dir"].startswith(local.tmpdir) for r in replicas)
    assert len(pids) == 2
    markers = wait_for(
        lambda: (
            len(list((tmp_path / "pool-env").glob("*.json"))) >= 2
            and list((tmp_path / "pool-env").glob("*.json"))
        ),
        what="the replicas' markers",
    )
    for marker in markers:
        env = json.loads(marker.read_text())
        assert env["POOL_SECRET"] == "s3cr3t-value"  # EnvFrom the service's secret
        assert env["OSCAR_SERVICE_NAME"] == "pool-env"  # 4.0 and later
        assert env["OSCAR_SERVICE_BASE_PATH"] == "/system/services/pool-env/exposed"
        assert os.path.exists(env["DRO_FUNCTION_CONFIG"])  # the mounted config map
        assert not [v for v in SUPERVISOR_VARIABLES if v in env]
        assert env["CWD"].startswith(local.tmpdir)
    assert any("serving on" in line for r in replicas for line in r["tail"])
    status = api(local, "get", "/system/services/pool-env/deployment").json()
    assert status["state"] == "ready"
    assert status["active_instances"] == 2
    assert status["resource_kind"] == "exposed_service"
    shown = oscar.get_service("pool-env").json()
    assert shown["expose"]["min_scale"] == 2
    assert shown["environment"]["secrets"] == {"POOL_SECRET": ""}
    summary = api(local, "get", "/system/services/pool-env", params={"include": "deployment"}).json()
    assert summary["deployment"]["state"] == "ready"


def test_a_killed_replica_is_restarted(local, oscar, tmp_path):
    assert oscar.create_service(definition("pool-kill", tmp_path)).status_code == 201
    [pid] = wait_for(lambda: ready_pids(local, "pool-kill"), what="a ready replica")
    os.kill(pid, signal.SIGKILL)
    new = wait_for(lambda: [p for p in ready_pids(local, "pool-kill") if p != pid], what="the restart")
    assert len(new) == 1
    assert not alive(pid)
    [replica] = local.exposed_replicas("pool-kill")
    assert replica["restarts"] == 1
    assert replica["last_exit_code"] == -signal.SIGKILL


def test_a_replica_failing_its_liveness_probe_is_restarted(local, oscar, tmp_path):
    assert oscar.create_service(definition("pool-probe", tmp_path)).status_code == 201
    [pid] = wait_for(lambda: ready_pids(local, "pool-probe"), what="a ready replica")
    (tmp_path / "pool-probe.fail").touch()
    # Liveness after 60 s x SCALE, then 12 failures 10 s x SCALE apart: killed, restarted.
    wait_for(lambda: local.exposed_replicas("pool-probe")[0]["restarts"] >= 1, timeout=30, what="a restart")
    assert not alive(pid)
    (tmp_path / "pool-probe.fail").unlink()
    wait_for(lambda: ready_pids(local, "pool-probe"), timeout=30, what="ready again")


def test_stop_and_start(local, oscar, tmp_path):
    assert oscar.create_service(definition("pool-stop", tmp_path, min_scale=2)).status_code == 201
    pids = wait_for(
        lambda: len(ready_pids(local, "pool-stop")) == 2 and ready_pids(local, "pool-stop"),
        what="two ready replicas",
    )
    stopped = api(local, "post", "/system/services/pool-stop/stop")
    assert stopped.status_code == 200
    assert stopped.json()["state"] == "stopped"
    wait_for(lambda: not local.exposed_replicas("pool-stop"), what="no replicas")
    assert not any(alive(pid) for pid in pids)
    assert api(local, "get", "/system/services/pool-stop/deployment").json()["state"] == "stopped"
    started = api(local, "post", "/system/services/pool-stop/start")
    assert started.status_code == 200
    wait_for(lambda: len(ready_pids(local, "pool-stop")) == 2, what="two replicas again")
    assert api(local, "post", "/system/services/nothing-here/stop").status_code == 404
    oscar.create_service({"name": "not-exposed", "image": "x", "script": "true"})
    answer = api(local, "post", "/system/services/not-exposed/stop")
    assert answer.status_code == 400
    assert "is not exposed" in answer.text
    assert (
        requests.post(f"{local.oscar_endpoint}/system/services/pool-stop/stop", timeout=10).status_code == 401
    )


def test_update_rolls_the_replicas_and_delete_leaves_nothing(local, oscar, tmp_path):
    service = definition("pool-del", tmp_path)
    assert oscar.create_service(service).status_code == 201
    [pid] = wait_for(lambda: ready_pids(local, "pool-del"), what="a ready replica")
    service["environment"]["variables"]["NEW"] = "1"  # a new pod template: a rollout
    assert oscar.update_service("pool-del", service).status_code == 204
    wait_for(
        lambda: ready_pids(local, "pool-del") and pid not in ready_pids(local, "pool-del") and not alive(pid),
        what="the rollout",
    )
    [new] = ready_pids(local, "pool-del")
    folders = {r["dir"] for r in local.exposed_replicas("pool-del")}
    assert oscar.remove_service("pool-del").status_code == 204
    assert not alive(new)
    assert not any(os.path.exists(folder) for folder in folders)
    assert not os.path.exists(os.path.join(local.tmpdir, "exposed", "pool-del"))


def test_an_ownerless_update_keeps_the_replicas_without_kueue(local, oscar, tmp_path):
    """getDeploymentSpec gives min_scale replicas to any owner while Kueue is off (the Helm chart's
    default), so an admin's PUT without ``owner`` changes nothing that runs."""
    service = definition("pool-owner", tmp_path)
    assert oscar.create_service(service).status_code == 201
    [pid] = wait_for(lambda: ready_pids(local, "pool-owner"), what="a ready replica")
    assert oscar.update_service("pool-owner", service).status_code == 204  # no owner in the body
    assert oscar.get_service("pool-owner").json()["owner"] == ""
    assert ready_pids(local, "pool-owner") == [pid]  # the same pod template: no rollout
    oscar.remove_service("pool-owner")


def test_kueue_refuses_every_exposed_service_and_pool_start_names_the_fix(tmp_path):
    """With KUEUE_ENABLE on, OSCAR checks an exposed service's Workload once, without waiting, in a
    LocalQueue it makes only for OIDC users' services: the admin's create fails (500) and is undone,
    before any MinIO restart; an OIDC user's loses the race. ``pool start`` refuses, naming the fix."""
    from distrdf_oscar.platform.deployment import POOL, Deployment
    from distrdf_oscar.platform.oscar.cluster import OSCARCluster
    from distrdf_oscar.platform.oscar.errors import OSCARError

    with LocalPlatform(oscar_version="4.1+kueue", oidc_users=("alice",), exposed_time_scale=SCALE) as kueue:
        assert api(kueue, "get", "/system/config").json()["config"]["kueue_enable"] is True
        alice = {"Authorization": f"Bearer {kueue.oidc_options('alice')['oidc_token']}"}
        for caller in ({"auth": (kueue.oscar_user, kueue.oscar_password)}, {"headers": alice}):
            response = requests.post(
                f"{kueue.oscar_endpoint}/system/services",
                json=definition("pool-kq", tmp_path),
                timeout=30,
                **caller,
            )
            assert response.status_code == 500
            assert response.text == (
                "Error creating the service: error creating deployment for exposed service "
                "'pool-kq': workload for exposed service 'pool-kq' is NOT admitted"
            )
            assert api(kueue, "get", "/system/services/pool-kq").status_code == 404
            assert api(kueue, "get", "/system/local/exposed/pool-kq").status_code == 404  # no pod left
        assert api(kueue, "get", "/system/local/minio").json()["restarts"] == 0  # refused before the webhook

        cluster = OSCARCluster(kueue.oscar_endpoint, user=kueue.oscar_user, password=kueue.oscar_password)
        deployment = Deployment(name="kueue")
        with pytest.raises(OSCARError, match=r"runs Kueue.*oscar-lq-kueue-pool.*KUEUE_ENABLE=false"):
            cluster.start_pool(deployment, 1, ("key", "secret"))
        assert deployment.service_name(POOL) not in cluster.services()


def test_validation_in_4_1(local, oscar, tmp_path):
    # oscar-python raises on an error status: the refusals are read from the REST API itself.
    bad = api(local, "post", "/system/services", json=definition("pool-int", tmp_path, ports_as_list=False))
    assert bad.status_code == 400
    assert "api_port" in bad.text
    inverted = definition("pool-inv", tmp_path, min_scale=3)
    inverted["expose"]["max_scale"] = 2
    answer = api(local, "post", "/system/services", json=inverted)
    assert answer.status_code == 500
    assert "maxReplicas" in answer.text
    assert api(local, "get", "/system/services/pool-inv").status_code == 404  # rolled back
    bare = definition("pool-bare", tmp_path)
    bare["expose"] = {"api_port": bare["expose"]["api_port"]}  # min_scale 0: no HPA
    assert api(local, "post", "/system/services", json=bare).status_code == 500
    assert api(local, "get", "/system/services/pool-bare").status_code == 404


def test_releases_before_4_1(tmp_path):
    with LocalPlatform(oscar_version="4.0", exposed_time_scale=SCALE) as old:
        client = Client(old.oscar_options())
        listed = api(old, "post", "/system/services", json=definition("pool-list", tmp_path))
        assert listed.status_code == 400  # a single port up to 4.0
        assert client.create_service(definition("pool40", tmp_path, ports_as_list=False)).status_code == 201
        wait_for(lambda: ready_pids(old, "pool40"), what="a ready replica")
        assert api(old, "post", "/system/services/pool40/stop").status_code == 404  # no such route
        assert api(old, "get", "/system/services/pool40/deployment").json()["state"] == "ready"
    with LocalPlatform(oscar_version="3.6", exposed_time_scale=SCALE) as old:
        client = Client(old.oscar_options())
        assert api(old, "get", "/system/services/x/deployment").status_code == 404
        inverted = definition("pool36", tmp_path, min_scale=1, ports_as_list=False)
        inverted["expose"]["max_scale"] = 0
        assert api(old, "post", "/system/services", json=inverted).status_code == 500
        # 3.6 does not roll back: the service and its Deployment (without HPA) stay.
        assert api(old, "get", "/system/services/pool36").status_code == 200
        assert api(old, "post", "/system/services", json=inverted).status_code == 409
        wait_for(lambda: ready_pids(old, "pool36"), what="the half-made service's replica")
        env = client.get_service("pool36").json()["environment"]
        assert env["secrets"] == {"POOL_SECRET": ""}
