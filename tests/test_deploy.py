"""Deploying on OSCAR: the generated service files, OSCAR's service contract, the deploy CLI and its errors,
and the committed service scripts running jobs end to end.

Real parts only: one embedded platform for the module, driven by the real oscar-python client and
``distrdf-oscar``'s own entry point; real HTTP and TLS servers for the connection failures.

With scikit-build-core, pybind11, cmake and ninja in the environment (the test extra has them) the
functions run from the wheel the image installs, built from this source tree while the other tests
run (about 30 s of one core); without them, from the installed package.
"""

from __future__ import annotations

import contextlib
import http.server
import importlib.util
import json
import os
import secrets
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
import yaml

import distrdf_oscar
from conftest import SAME_MACHINE
from distrdf_oscar import cli
from distrdf_oscar.platform.deployment import (
    COORDINATOR_MEMORY,
    DEFAULT_CLUSTER_ID,
    MAX_SERVICE_NAME,
    ROLES,
    SECRET_PLACEHOLDER,
    Deployment,
)
from distrdf_oscar.protocol import layout
from distrdf_oscar.protocol.signing import ENV_VAR, MIN_KEY_LENGTH, Signer

REPO = Path(__file__).resolve().parents[1]
SERVICES = REPO / "services"
SCHEMA_PATH = Path(__file__).with_name("oscar_service_schema.json")
KEY = secrets.token_hex(32)  # this module's deployments' signing key
BUILD_TOOLS = ("scikit_build_core", "pybind11", "cmake", "ninja")


# -- fixtures --------------------------------------------------------------------


@pytest.fixture(scope="module")
def wheel_build(tmp_path_factory):
    """Start building the wheel the image installs, in the background, while the other tests run."""
    missing = [m for m in BUILD_TOOLS if importlib.util.find_spec(m) is None]
    if missing:
        yield None, f"build tools missing from this environment: {', '.join(missing)}"
        return
    out = tmp_path_factory.mktemp("wheel")
    # The Dockerfile's build stage runs the same `pip wheel` (isolated there; here the
    # environment's build requirements are used to save downloading ROOT again).
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-cache-dir",
            "--disable-pip-version-check",
            "-w",
            str(out),
            str(REPO),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    yield (proc, out), None
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


PLATFORM = {"workers": 2, "mode": "cold", "headroom": 0.25}  # this module's platform (conftest.py)


@pytest.fixture(scope="module")
def validator():
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is part of the test extra")
    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.fixture
def environment(wheel_build, platform, monkeypatch):  # the build first: it runs while the platform starts
    """The operator's settings for the module's platform; tests change them with ``monkeypatch``."""
    for name in (
        "OSCAR_TOKEN",
        "OSCAR_SSL_VERIFY",
        "MINIO_ENDPOINT",
        "MINIO_ACCESS_KEY",
        "MINIO_SECRET_KEY",
        "DISTRDF_OSCAR_DEPLOYMENT",
    ):
        monkeypatch.delenv(name, raising=False)
    settings = {
        "OSCAR_ENDPOINT": platform.oscar_endpoint,
        "OSCAR_USER": platform.oscar_user,
        "OSCAR_PASSWORD": platform.oscar_password,
        "DISTRDF_OSCAR_KEY": KEY,
    }
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    return monkeypatch


@pytest.fixture
def run(environment, capsys):
    """``distrdf-oscar ARGS`` in this process: (exit code, stdout, stderr)."""

    def run_cli(*args: str) -> tuple[int, str, str]:
        code = cli.main(list(args))
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run_cli


def service_names(oscar) -> set[str]:
    return {s["name"] for s in oscar.list_services().json()}


def outcomes(stdout: str) -> dict[str, str]:
    return dict(line.split(": ", 1) for line in stdout.splitlines())


def read_fdl(path: Path) -> list[tuple[str, dict]]:
    """(cluster id, service) pairs of an FDL file, each script inlined from its path relative to the
    file, as ``oscar-cli apply`` reads it."""
    fdl = yaml.safe_load(path.read_text())
    services = []
    for element in fdl["functions"]["oscar"]:
        for cluster_id, service in element.items():
            service = dict(service, script=(path.parent / service["script"]).read_text())
            services.append((cluster_id, service))
    return services


# -- generated service files ------------------------------------------------------


def test_committed_service_files_are_generated_from_the_definitions(run, tmp_path):
    code, out, _ = run("fdl", "--out", str(tmp_path))
    assert code == 0
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert generated == sorted(Path(p) for p in ["fdl/distrdf.yaml", *(f"scripts/{r}.sh" for r in ROLES)])
    assert sorted(out.split()) == sorted(str(tmp_path / p) for p in generated)
    for relpath in generated:
        committed = SERVICES / relpath
        assert committed.read_text() == (tmp_path / relpath).read_text(), (
            f"services/{relpath} is stale: regenerate with `distrdf-oscar fdl --out services`"
        )
    committed_generated = sorted(
        p.relative_to(SERVICES) for d in ("fdl", "scripts") for p in (SERVICES / d).iterdir()
    )
    assert committed_generated == generated
    for role in ROLES:
        assert os.access(SERVICES / "scripts" / f"{role}.sh", os.X_OK)


# The JSON tags of OSCAR v3.3.0's pkg/types/service.go (git show v3.3.0:pkg/types/service.go in
# grycap/oscar) and of its StorageIOConfig: oscar-cli 1.12 (go.mod: github.com/grycap/oscar/v3 v3.3.0,
# github.com/goccy/go-yaml) decodes FDL files into that type, matching keys exactly (case included)
# and dropping every other key without an error.
OSCAR_CLI_SERVICE_KEYS = {
    "name",
    "cluster_id",
    "memory",
    "cpu",
    "total_memory",
    "total_cpu",
    "enable_gpu",
    "enable_sgx",
    "image_prefetch",
    "synchronous",
    "replicas",
    "delegation",
    "rescheduler_threshold",
    "log_level",
    "image",
    "alpine",
    "token",
    "file_stage_in",
    "input",
    "output",
    "script",
    "image_pull_secrets",
    "expose",
    "annotations",
    "vo",
    "labels",
    "storage_providers",
    "clusters",
    "owner",
    "interlink_node_name",
    "allowed_users",
    "mount",
    "environment",
}
OSCAR_CLI_ENVIRONMENT_KEYS = {"Variables"}  # `Vars map[string]string json:"Variables"`, and no secrets
OSCAR_CLI_STORAGE_IO_KEYS = {"storage_provider", "path", "suffix", "prefix"}


def test_fdl_file_holds_the_deployments_services_with_a_placeholder_for_the_key():
    services = read_fdl(SERVICES / "fdl" / "distrdf.yaml")
    expected = Deployment().with_secrets({ENV_VAR: SECRET_PLACEHOLDER}).services(secrets_as_variables=True)
    assert [cluster for cluster, _ in services] == [DEFAULT_CLUSTER_ID] * len(ROLES)
    for (_, service), wanted in zip(services, expected, strict=True):
        # oscar-cli keeps every key of the file, so the services it applies are the deployment's.
        assert set(service) <= OSCAR_CLI_SERVICE_KEYS
        assert set(service["environment"]) <= OSCAR_CLI_ENVIRONMENT_KEYS
        for item in service["input"] + service["output"]:
            assert set(item) <= OSCAR_CLI_STORAGE_IO_KEYS
        assert service["environment"]["Variables"] == wanted["environment"]["variables"]
        assert {k: v for k, v in service.items() if k != "environment"} == {
            k: v for k, v in wanted.items() if k != "environment"
        }
        assert service["environment"]["Variables"][ENV_VAR] == SECRET_PLACEHOLDER
    # Services applied without replacing the placeholder refuse everything instead of
    # trusting a published key.
    with pytest.raises(
        ValueError, match=rf"^the signing key must be a string of at least {MIN_KEY_LENGTH} characters$"
    ):
        Signer(SECRET_PLACEHOLDER)


def test_oscar_python_accepts_every_service_of_a_generated_fdl_file(run, oscar, tmp_path):
    code, _, _ = run("fdl", "--out", str(tmp_path), "--deployment", "fdlcheck", "--cluster-id", "local")
    assert code == 0
    fdl = tmp_path / "fdl" / "fdlcheck.yaml"
    document = yaml.safe_load(fdl.read_text())
    try:
        # oscar-python's reader keeps only the last service of a file: one file per service.
        for index, element in enumerate(document["functions"]["oscar"]):
            single = fdl.with_name(f"single-{index}.yaml")
            single.write_text(yaml.safe_dump({"functions": {"oscar": [element]}}))
            assert oscar.create_service(str(single)).status_code == 201
        for role in ROLES:
            service = oscar.get_service(f"fdlcheck-{role}").json()
            assert service["script"] == (SERVICES / "scripts" / f"{role}.sh").read_text()
            # "Variables" reached OSCAR's environment.variables (Go's JSON keys match case-insensitively).
            assert service["environment"]["variables"][ENV_VAR] == SECRET_PLACEHOLDER
    finally:
        for role in ROLES:
            with contextlib.suppress(requests.HTTPError):
                oscar.remove_service(f"fdlcheck-{role}")


# -- OSCAR's service contract ------------------------------------------------------


@pytest.mark.parametrize(
    "deployment",
    [
        Deployment(),
        Deployment(name="a" * (MAX_SERVICE_NAME - len("-coordinator")), bucket="shared.bucket-1"),
        Deployment(
            name="x12",
            image="registry.example.org:5000/dro@sha256:" + "0" * 64,
            memory="1536Mi",
            cpu="500m",
            variables={"OMP_NUM_THREADS": "1"},
            secrets={ENV_VAR: "k" * 64},
        ),
    ],
    ids=["default", "longest-name", "custom"],
)
def test_every_definition_validates_against_oscar_schema(validator, deployment):
    for service in deployment.services():
        errors = [e.message for e in validator.iter_errors(service)]
        assert not errors, f"{service['name']}: {errors}"
        assert len(service["name"]) <= MAX_SERVICE_NAME


def test_the_pool_is_an_exposed_service_as_each_release_spells_it(validator):
    deployment = Deployment(secrets={ENV_VAR: "k" * 64})
    newest = deployment.pool_service(3, ("AKIAPOOL", "pool-secret"), (4, 1, 2))
    assert not [e.message for e in validator.iter_errors(newest)]
    assert newest["expose"] == {
        "min_scale": 3,
        "max_scale": 3,
        "cpu_threshold": 80,
        "api_port": [8080],
        "health_path": "/health",
    }
    assert newest["input"] == []  # nothing triggers it: it takes work from the queue
    # Exposed pods get secrets but no mounted MinIO keys (job.go only): the keys are secrets.
    assert newest["environment"]["secrets"]["DRO_STORAGE_SECRET_KEY"] == "pool-secret"
    assert "pool-secret" not in json.dumps(newest["environment"]["variables"])
    assert (
        deployment.pool_service(2, ("a", "b"), (4, 0, 0))["expose"]["api_port"] == 8080
    )  # a number before 4.1
    assert "health_path" not in deployment.pool_service(2, ("a", "b"), (3, 5, 3))["expose"]  # 3.6 added it
    with pytest.raises(ValueError, match="a pool needs at least one worker, got 0"):
        deployment.pool_service(0, ("a", "b"), (4, 1, 2))


def test_deployment_names_that_would_break_oscar_limits_are_refused():
    longest = MAX_SERVICE_NAME - len("-coordinator")  # the longest role's service name fills OSCAR's limit
    rule = (
        rf"must be lowercase letters, digits and '-', at most {longest} characters "
        rf"\(service names stay within OSCAR's {MAX_SERVICE_NAME}\)$"
    )
    too_long = "a" * (longest + 1)
    with pytest.raises(ValueError, match=rf"^deployment name '{too_long}' {rule}"):
        Deployment(name=too_long)
    with pytest.raises(ValueError, match=rf"^deployment name 'Analysis' {rule}"):
        Deployment(name="Analysis")
    Deployment(name="a" * longest)  # the limit itself is allowed


def valid_definition(name="contract-ok") -> dict:
    return {
        "name": name,
        "image": "registry.example.org/img:1",
        "script": "#!/bin/sh\ntrue\n",
        "cpu": "0.5",
        "memory": "512Mi",
        "input": [{"storage_provider": "minio.default", "path": "contract/in"}],
        "output": [{"storage_provider": "minio", "path": "contract/out", "suffix": [".root"]}],
        "environment": {"variables": {"A": "1"}, "secrets": {"S": "s" * 20}},
    }


def without(field):
    return lambda d: {k: v for k, v in d.items() if k != field}


def changed(**fields):
    return lambda d: {**d, **fields}


REJECTED = [
    ("name too long", changed(name="n" * 40), "at most 39"),
    ("uppercase name", changed(name="Contract"), "lower case"),
    ("name with underscore", changed(name="con_tract"), "lower case"),
    ("missing name", without("name"), "'name' is required"),
    ("missing image", without("image"), "'image' is required"),
    ("empty image", changed(image=""), "'image' is required"),
    ("missing script", without("script"), "'script' is required"),
    (
        "input path without folder",
        changed(input=[{"storage_provider": "minio", "path": "contract"}]),
        "must name a folder",
    ),
    (
        "input path empty",
        changed(input=[{"storage_provider": "minio", "path": "/"}]),
        "input path cannot be empty",
    ),
    ("input from s3", changed(input=[{"storage_provider": "s3", "path": "contract/in"}]), "not supported"),
    (
        "bad bucket",
        changed(output=[{"storage_provider": "minio", "path": "Bad_Bucket/x"}]),
        "not a valid bucket name",
    ),
    (
        "suffix not a list",
        changed(output=[{"storage_provider": "minio", "path": "contract/o", "suffix": ".root"}]),
        "suffix must be a list",
    ),
    ("bad cpu", changed(cpu="lots"), "'cpu'"),
    ("zero cpu", changed(cpu="0"), "'cpu'"),
    ("negative cpu", changed(cpu="-1"), "'cpu'"),
    ("numeric cpu", changed(cpu=1), "'cpu' must be a string"),
    ("bad memory", changed(memory="2GB"), "'memory'"),
    ("numeric variable", changed(environment={"variables": {"N": 1}}), "environment.variables.N"),
    (
        "bad variable name",
        changed(environment={"variables": {"1N": "x"}}),
        "not a valid environment variable",
    ),
    ("secrets not a map", changed(environment={"secrets": ["S"]}), "environment.secrets must be a map"),
    ("string boolean", changed(file_stage_in="yes"), "'file_stage_in' must be true or false"),
]


@pytest.mark.parametrize(
    ("change", "message"), [(c, m) for _, c, m in REJECTED], ids=[i for i, _, _ in REJECTED]
)
def test_platform_rejects_what_oscar_rejects(validator, platform, oscar, change, message):
    definition = change(valid_definition("contract-bad"))
    assert not validator.is_valid(definition), "the schema accepts it"
    before = service_names(oscar)
    if "name" in definition:
        with pytest.raises(requests.HTTPError) as err:
            oscar.create_service(definition)
        response = err.value.response
    else:  # oscar-python cannot even send a definition without a name
        response = requests.post(
            f"{platform.oscar_endpoint}/system/services",
            json=definition,
            auth=(platform.oscar_user, platform.oscar_password),
            timeout=30,
        )
    assert response.status_code == 400
    assert message in response.text
    assert service_names(oscar) == before


ACCEPTED = [
    ("as is", changed()),
    ("millicores", changed(cpu="250m")),
    (
        "defaults",
        lambda d: {k: v for k, v in d.items() if k not in ("cpu", "memory", "output", "environment")},
    ),
    ("quantity suffixes", changed(cpu="1.5", memory="2e9")),
    (
        "output to a bare bucket",
        changed(output=[{"storage_provider": "minio.default", "path": "contract-out"}]),
    ),
    (
        "nested folders and filters",
        changed(
            input=[
                {
                    "storage_provider": "minio",
                    "path": "/contract/a/b/",
                    "prefix": ["x"],
                    "suffix": [".json", ".root"],
                }
            ]
        ),
    ),
    (
        "other fields",
        changed(
            log_level="debug",
            visibility="public",
            alpine=False,
            labels={"team": "hep"},
            annotations={"a": "b"},
            file_stage_in=True,
        ),
    ),
]


@pytest.mark.parametrize("change", [c for _, c in ACCEPTED], ids=[i for i, _ in ACCEPTED])
def test_platform_accepts_what_oscar_accepts_and_reads_back_a_valid_definition(validator, oscar, change):
    definition = change(valid_definition())
    assert validator.is_valid(definition), [e.message for e in validator.iter_errors(definition)]
    assert oscar.create_service(definition).status_code == 201
    try:
        stored = oscar.get_service(definition["name"]).json()
        assert not [e.message for e in validator.iter_errors(stored)]
        assert oscar.update_service(definition["name"], stored).status_code == 204
    finally:
        oscar.remove_service(definition["name"])


# -- deploy, status, undeploy ------------------------------------------------------


def test_deploy_is_idempotent_updates_in_place_and_undeploy_asks_first(run, oscar, s3):
    code, out, err = run("deploy", "--deployment", "dep1")
    assert code == 0, err
    assert outcomes(out) == {f"dep1-{role}": "created" for role in ROLES}
    first = {role: oscar.get_service(f"dep1-{role}").json() for role in ROLES}
    for role, service in first.items():
        assert service["script"] == (SERVICES / "scripts" / f"{role}.sh").read_text()
        assert service["environment"]["secrets"] == {ENV_VAR: ""}  # set, and never shown
        assert service["input"][0]["path"] == layout.input_path("dep1", ROLES[role][0])
    assert all(s3.bucket_exists(bucket) for bucket in layout.buckets("dep1"))

    code, out, _ = run("deploy", "--deployment", "dep1")
    assert code == 0
    assert outcomes(out) == {f"dep1-{role}": "unchanged" for role in ROLES}

    code, out, _ = run("deploy", "--deployment", "dep1", "--memory", "3Gi", "--image", "example.org/dro:test")
    assert code == 0
    assert outcomes(out) == {f"dep1-{role}": "updated" for role in ROLES}
    for role in ROLES:
        service = oscar.get_service(f"dep1-{role}").json()
        memory = COORDINATOR_MEMORY if role == "coordinator" else "3Gi"  # the coordinator needs little
        assert (service["memory"], service["image"]) == (memory, "example.org/dro:test")
        assert service["token"] == first[role]["token"]  # updated in place, not re-created

    code, out, _ = run("deploy", "--deployment", "dep1", "--memory", "3Gi", "--image", "example.org/dro:test")
    assert outcomes(out) == {f"dep1-{role}": "unchanged" for role in ROLES}
    code, out, _ = run(
        "deploy", "--deployment", "dep1", "--memory", "3Gi", "--image", "example.org/dro:test", "--force"
    )
    assert outcomes(out) == {f"dep1-{role}": "updated" for role in ROLES}

    code, out, err = run("undeploy", "--deployment", "dep1")
    assert code != 0
    assert "buckets (dep1, dep1-tree-partials, dep1-plans, dep1-batches)" in err
    assert "--yes" in err
    assert {f"dep1-{role}" for role in ROLES} <= service_names(oscar)

    code, out, err = run("undeploy", "--deployment", "dep1", "--yes")
    assert code == 0
    assert outcomes(out) == {f"dep1-{role}": "removed" for role in ROLES}
    assert not {f"dep1-{role}" for role in ROLES} & service_names(oscar)


def test_deployments_side_by_side_and_status(run, oscar):
    for name in ("left", "right"):
        code, out, _ = run("deploy", "--deployment", name, "--cpu", "0.5")
        assert code == 0
        assert set(outcomes(out).values()) == {"created"}
    code, out, _ = run("status", "--deployment", "left")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("OSCAR http://127.0.0.1:")
    assert "deployment 'left'" in lines[0]
    for role, line in zip(ROLES, lines[1:], strict=True):
        memory = COORDINATOR_MEMORY if role == "coordinator" else "2Gi"
        assert line.startswith(f"left-{role}: image {Deployment().image}, cpu 0.5, memory {memory}; ")
        assert line.endswith("jobs: succeeded 0, failed 0, pending 0, running 0, suspended 0")
    assert "right" not in out

    code, out, _ = run("undeploy", "--deployment", "left", "--yes")
    assert code == 0
    code, out, _ = run("status", "--deployment", "left")
    assert code == 1
    assert [line.split(": ")[1] for line in out.splitlines()[1:]] == ["not deployed"] * len(ROLES)
    assert {f"right-{role}" for role in ROLES} <= service_names(oscar)
    assert run("undeploy", "--deployment", "right", "--yes")[0] == 0


# -- connection and credential failures ---------------------------------------------


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _NotOscar(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(404)
        self.end_headers()
        self.wfile.write(b"not an OSCAR cluster")

    def log_message(self, *args):
        pass


class _QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        pass  # failed handshakes are the point


@pytest.fixture(scope="module")
def self_signed_server(tmp_path_factory):
    """An HTTPS server on loopback with a freshly made self-signed certificate."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a self-signed certificate")
    directory = tmp_path_factory.mktemp("tls")
    key, cert = directory / "key.pem", directory / "cert.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = _QuietServer(("127.0.0.1", 0), _NotOscar)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


WRONG_PASSWORD = "wrong-" + secrets.token_hex(8)
BOGUS_TOKEN = "bogus-token-" + secrets.token_hex(8)


def failure_settings(case, platform, self_signed_server) -> dict[str, str | None]:
    plain_http_port = platform.oscar_endpoint.rsplit(":", 1)[1]
    return {
        "wrong password": {"OSCAR_PASSWORD": WRONG_PASSWORD},
        "wrong token": {"OSCAR_USER": None, "OSCAR_PASSWORD": None, "OSCAR_TOKEN": BOGUS_TOKEN},
        "unreachable": {"OSCAR_ENDPOINT": f"http://127.0.0.1:{closed_port()}"},
        "https to plain http": {"OSCAR_ENDPOINT": f"https://127.0.0.1:{plain_http_port}"},
        "self-signed certificate": {"OSCAR_ENDPOINT": self_signed_server},
    }[case]


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("wrong password", ["rejected user 'oscar' and its password (401", "OSCAR_PASSWORD"]),
        ("wrong token", ["rejected the access token (401", "OSCAR_TOKEN is invalid or has expired"]),
        ("unreachable", ["cannot reach OSCAR at http://127.0.0.1:", "connection refused", "OSCAR_ENDPOINT"]),
        ("https to plain http", ["TLS with https://127.0.0.1:", "handshake failed", "serves HTTPS"]),
        (
            "self-signed certificate",
            [
                "TLS with https://127.0.0.1:",
                "certificate is not trusted",
                "self",
                "REQUESTS_CA_BUNDLE",
                "OSCAR_SSL_VERIFY=false",
            ],
        ),
    ],
)
def test_deploy_failures_are_named_and_create_nothing(
    run, environment, platform, oscar, s3, self_signed_server, case, expected
):
    services_before, buckets_before = service_names(oscar), {b.name for b in s3.list_buckets()}
    for name, value in failure_settings(case, platform, self_signed_server).items():
        if value is None:
            environment.delenv(name)
        else:
            environment.setenv(name, value)
    code, out, err = run("deploy", "--deployment", "failing")
    assert code != 0
    assert out == ""
    assert err.startswith("distrdf-oscar: error: ")
    for fragment in expected:
        assert fragment in err, f"{fragment!r} not in {err!r}"
    for secret in (WRONG_PASSWORD, BOGUS_TOKEN, platform.oscar_password, KEY):
        assert secret not in err
    assert service_names(oscar) == services_before
    assert {b.name for b in s3.list_buckets()} == buckets_before


def test_a_definition_oscar_refuses_is_reported_and_creates_nothing(run, oscar):
    # A two-letter deployment would name a two-letter bucket, which S3 does not allow.
    before = service_names(oscar)
    code, out, err = run("deploy", "--deployment", "ab")
    assert code != 0
    assert out == ""
    assert "bucket" in err
    assert KEY not in err
    assert service_names(oscar) == before


def test_tls_failure_is_about_trust_not_the_server(run, environment, self_signed_server):
    # Opting out of verification gets past TLS (with a warning), to a server that is not OSCAR.
    environment.setenv("OSCAR_ENDPOINT", self_signed_server)
    environment.setenv("OSCAR_SSL_VERIFY", "false")
    with pytest.warns(UserWarning, match="verification is disabled"):
        code, _, err = run("status", "--deployment", "failing")
    assert code != 0
    assert "answered 404" in err
    assert "TLS" not in err


# -- the committed scripts run a job --------------------------------------------------


@pytest.fixture(scope="module")
def service_site(wheel_build, tmp_path_factory):
    """Where the functions import distrdf_oscar from: the freshly built wheel, installed into a scratch
    directory beside a link to ROOT (as in the image's site-packages), or else this installed package."""
    build, reason = wheel_build
    if build is None:
        return None, reason
    proc, out = build
    log, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, f"building the wheel failed:\n{log[-3000:]}"
    (wheel,) = out.glob("distrdf_oscar-*.whl")
    site = tmp_path_factory.mktemp("site")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-index",
            "--no-compile",
            "--disable-pip-version-check",
            "--target",
            str(site),
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    root_package = Path(importlib.util.find_spec("ROOT").origin).parent
    (site / "ROOT").symlink_to(root_package, target_is_directory=True)
    return site, f"wheel {wheel.name}"


def test_wheel_holds_what_the_services_run(service_site):
    site, origin = service_site
    if site is None:
        pytest.skip(origin)
    for module in (
        "_core.cpython-311-x86_64-linux-gnu.so",
        "functions/__main__.py",
        "functions/mapper.py",
        "platform/deployment.py",
        "protocol/contract.py",
    ):
        assert (site / "distrdf_oscar" / module).is_file()


def test_committed_scripts_run_a_job_end_to_end(run, environment, oscar, dimuon_files, service_site):
    import ROOT

    from compare import assert_same_hist

    site, origin = service_site
    # The functions import the package from the installed wheel when there is one; run the
    # way the image runs them: with python3 from PATH (DRO_PYTHON unset), in a scratch directory.
    env = ["--env", f"PYTHONPATH={site}"] if site else []
    code, out, err = run("deploy", "--deployment", "smoke", *env)
    assert code == 0, err
    for role in ROLES:
        deployed = oscar.get_service(f"smoke-{role}").json()
        assert deployed["script"] == (SERVICES / "scripts" / f"{role}.sh").read_text()
        assert "DRO_PYTHON" not in deployed["environment"]["variables"]

    environment.setenv("DISTRDF_OSCAR_DEPLOYMENT", "smoke")

    def book(df):  # a light graph: cold functions pay its JIT
        return df.Histo1D(("muons", "muons", 8, 0, 8), "nMuon"), df.Count()

    reference = book(ROOT.RDataFrame("Events", dimuon_files))
    served: dict[str, list[str]] = {}  # role -> the OSCAR jobs that ran it
    # Tree (reducer functions): mappers and reducers. Coordinated: mappers, the coordinator and a batch
    # reducer (for the first of two batches: the coordinator merges the last one itself).
    for reduction, npartitions in (
        (distrdf_oscar.TreeReduction(fan_in=2, inline=False), 2),
        (distrdf_oscar.CoordinatedReduction([2, 2]), 3),
    ):
        executor = distrdf_oscar.OSCARExecutor.from_env(
            reduction=reduction,
            auto_deploy=False,
            progress=False,
            shared_paths=SAME_MACHINE,
            ranges_per_call=1,
        )
        histogram, count = book(
            ROOT.RDataFrame("Events", dimuon_files, executor=executor, npartitions=npartitions)
        )
        assert_same_hist(histogram.GetValue(), reference[0].GetValue())
        assert count.GetValue() == reference[1].GetValue()
        for role, names in executor.last_job.functions.items():
            served.setdefault(role, []).extend(names)
    assert set(served) == set(ROLES)
    assert all(name.startswith(f"smoke-{role}-") for role, names in served.items() for name in names)

    # The last function of a job finishes just after the client has the result.
    def settled():
        jobs = [j for role in ROLES for j in oscar.list_jobs(f"smoke-{role}").json()["jobs"].values()]
        return all(j["status"] in ("Succeeded", "Failed") for j in jobs)

    deadline = time.monotonic() + 30
    while not settled() and time.monotonic() < deadline:
        time.sleep(0.2)
    code, out, _ = run("status", "--deployment", "smoke")
    assert code == 0
    for role, line in zip(ROLES, out.splitlines()[1:], strict=True):
        assert line.startswith(f"smoke-{role}:")
        # Finished OSCAR jobs are deleted by their clients; only those still finishing stay listed.
        succeeded = int(line.split("succeeded ")[1].split(",")[0])
        assert succeeded <= len(served[role]), line
    if site and not os.environ.get("PYTHONDONTWRITEBYTECODE"):
        # Proof that the functions imported the wheel's copy: only they compiled its modules.
        for module in ("mapper", "tree_reducer", "coordinator", "batch_reducer"):
            assert list((site / "distrdf_oscar" / "services" / "__pycache__").glob(f"{module}.*.pyc")), origin
    assert run("undeploy", "--deployment", "smoke", "--yes")[0] == 0


def test_cleanup_removes_only_abandoned_jobs_unless_one_is_named(run, platform):
    from distrdf_oscar.client.executor import OSCARExecutor
    from distrdf_oscar.protocol import layout
    from distrdf_oscar.protocol.messages import Lease

    code, _, err = run("deploy", "--deployment", "orphans")
    assert code == 0, err
    storage = OSCARExecutor.from_env(
        deployment=cli._deployment(
            cli.argparse.Namespace(deployment="orphans", image=None, memory=None, cpu=None, env=None)
        )
    ).storage
    # A job whose client was killed (its lease, of 1 s, lapsed) and one whose client still waits.
    orphan, waited_for = layout.JobKeys(layout.new_job_id()), layout.JobKeys(layout.new_job_id())
    for keys, ttl in ((orphan, 1.0), (waited_for, 600.0)):
        storage.put_bytes(keys.lease, Lease(keys.job_id, ttl).to_json())
        for key in (keys.manifest, keys.plan, keys.partial(0, 1)):  # no trigger: it would start a function
            storage.put_bytes(key, b"{}")
    time.sleep(2.5)  # the orphan's lease lapses (LastModified has a resolution of one second)

    code, out, _ = run("cleanup", "--deployment", "orphans", "--dry-run")
    assert code == 0
    assert f"{orphan.job_id}: 4 objects, 0 min old, lease renewed" in out
    assert "lapsed, ttl 1 s): would be removed (dry run)" in out
    assert f"{waited_for.job_id}: 4 objects" in out
    assert "alive, ttl 600 s): kept" in out
    assert "1 job(s) to remove; 1 left alone" in out
    code, out, _ = run("cleanup", "--deployment", "orphans", "--older-than", "1h")
    assert code == 0
    assert "0 job(s) removed; 2 left alone" in out
    code, out, err = run("cleanup", "--deployment", "orphans", "--older-than", "soon")
    assert code == 2
    assert "--older-than takes a number with a unit" in err
    code, out, _ = run("cleanup", "--deployment", "orphans")
    assert code == 0
    assert f"{orphan.job_id}: 4 objects" in out
    assert "1 job(s) removed; 1 left alone" in out
    assert {layout.job_of_key(k) for k in storage.list("") if layout.job_of_key(k)} == {waited_for.job_id}
    code, out, err = run("cleanup", "--deployment", "orphans", "--job", waited_for.job_id)
    assert code == 0
    assert f"warning: {waited_for.job_id} is alive: its client will fail when it is removed" in err
    assert f"{waited_for.job_id}: 4 objects" in out
    assert "removed 3 objects" in out  # and the manifest, deleted first
    assert [k for k in storage.list("") if layout.job_of_key(k)] == []
    code, out, err = run("cleanup", "--deployment", "orphans", "--job", waited_for.job_id)
    assert code == cli.EXIT_FOUND_PROBLEM  # no such job (any more): said on stderr, not a success
    assert f"job {waited_for.job_id} has no objects" in err
    assert run("undeploy", "--deployment", "orphans", "--yes")[0] == 0


# -- the command line as a new user meets it -------------------------------------------------------


def test_help_and_version_are_fast_and_never_import_root():
    """Run as a user runs it, in a fresh interpreter: no ROOT import, so no notice from ROOT's wheel."""
    for args, expected in ((["--help"], "usage: distrdf-oscar"), (["--version"], "distrdf-oscar ")):
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "distrdf_oscar.cli", *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(expected)
        imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if "|" in line}
        assert "ROOT" not in imported
        assert "cppyy" not in imported
        assert "alpha stage" not in done.stderr
        assert time.monotonic() - started < 30  # a hang, not a speed check
    assert (
        "``"
        not in subprocess.run(
            [sys.executable, "-m", "distrdf_oscar.cli", "--help"], capture_output=True, text=True, check=True
        ).stdout
    )


def test_expected_failures_are_one_line_with_their_exit_code(run, monkeypatch):
    monkeypatch.delenv("OSCAR_ENDPOINT")
    code, out, err = run("status")
    assert (code, out) == (cli.EXIT_USAGE, "")
    assert err.splitlines() == [err.strip()]
    assert "OSCAR_ENDPOINT is not set" in err
    monkeypatch.setenv("OSCAR_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    code, out, err = run("status")
    assert code == cli.EXIT_OSCAR
    assert err.startswith("distrdf-oscar: error: cannot reach OSCAR at http://127.0.0.1:")
    assert "Traceback" not in err


def test_an_unreachable_storage_endpoint_is_named_with_its_exit_code(run, monkeypatch):
    assert run("deploy", "--deployment", "nostore")[0] == 0
    monkeypatch.setenv("MINIO_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    for args in (("pool", "status"), ("cleanup", "--dry-run"), ("upload", __file__)):
        code, _, err = run(*args, "--deployment", "nostore")
        assert code == cli.EXIT_STORAGE, (args, err)
        assert err.startswith("distrdf-oscar: error: cannot reach the object storage at http://127.0.0.1:")
        assert len(err.splitlines()) == 1
    monkeypatch.delenv("MINIO_ENDPOINT")
    assert run("undeploy", "--deployment", "nostore", "--yes")[0] == 0


def test_status_needs_no_signing_key_and_speaks_json(run, monkeypatch):
    assert run("deploy", "--deployment", "jsonish")[0] == 0
    monkeypatch.delenv("DISTRDF_OSCAR_KEY")  # read-only: an analyst without the key may look
    code, out, err = run("status", "--deployment", "jsonish", "--json")
    assert code == 0, err
    status = json.loads(out)
    assert status["deployment"] == "jsonish"
    assert set(status["services"]) == {f"jsonish-{role}" for role in ROLES}
    assert all(row["jobs"]["Succeeded"] == 0 for row in status["services"].values())
    monkeypatch.setenv("DISTRDF_OSCAR_KEY", KEY)
    code, out, err = run("pool", "status", "--deployment", "jsonish", "--json")
    assert code == 0, err
    assert json.loads(out) == {"pool": "jsonish-pool", "workers": []}
    assert run("undeploy", "--deployment", "jsonish", "--yes")[0] == 0
