"""The embedded OSCAR-compatible platform, driven through the real oscar-python and minio clients.

Real parts only: a moto S3 server process, the platform's REST API, bash
functions and (warm mode) pre-started Python workers with ROOT imported.
"""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from urllib.parse import unquote_plus

import psutil
import pytest
import requests
import yaml
from minio.commonconfig import CopySource
from minio.error import S3Error
from oscar_python.client import Client

from distrdf_oscar.platform.embedded import LocalPlatform

HAVE_ROOT = importlib.util.find_spec("ROOT") is not None
FINISHED = ("Succeeded", "Failed")


# -- helpers ---------------------------------------------------------------------


def wait_for(predicate, timeout=20.0, interval=0.05, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


def read_object(s3, bucket, key):
    try:
        response = s3.get_object(bucket, key)
    except S3Error:
        return None
    try:
        return response.read()
    finally:
        response.close()
        response.release_conn()


def wait_for_object(s3, bucket, key, timeout=20.0):
    return wait_for(lambda: read_object(s3, bucket, key), timeout, what=f"{bucket}/{key}")


def put(s3, bucket, key, data: bytes):
    s3.put_object(bucket, key, io.BytesIO(data), len(data))


def keys(s3, bucket, prefix=""):
    return sorted(o.object_name for o in s3.list_objects(bucket, prefix=prefix, recursive=True))


def jobs_of(oscar, service):
    body = oscar.list_jobs(service).json()
    return body.get("jobs", body)  # OSCAR 3.6.4 and later, or before


def wait_for_jobs(oscar, service, count, timeout=20.0):
    """Wait until the service has ``count`` finished jobs; return all its jobs, oldest first."""

    def finished():
        jobs = jobs_of(oscar, service)
        done = [j for j in jobs.values() if j["status"] in FINISHED]
        return len(done) >= count and jobs

    jobs = wait_for(finished, timeout, what=f"{count} finished jobs of {service}")
    return sorted(jobs.items(), key=lambda item: item[1]["creation_time"])


def service_def(name, script, inputs=(), outputs=(), **extra):
    return {
        "name": name,
        "image": "local/bash",
        "script": script,
        "input": [{"storage_provider": "minio.default", "path": p} for p in inputs],
        "output": list(outputs),
        **extra,
    }


def max_overlap(intervals):
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    current = best = 0
    for _, step in events:
        current += step
        best = max(best, current)
    return best


def descendants(pid):
    return psutil.Process(pid).children(recursive=True)


# -- fixtures --------------------------------------------------------------------


PLATFORM = {"workers": 2}  # the options of this module's platform (conftest.py)


def auth(platform):
    return (platform.oscar_user, platform.oscar_password)


# -- cluster endpoints -----------------------------------------------------------


def test_info_config_and_health(platform, oscar):
    assert oscar.health_check().text == "Ok"
    assert oscar.get_cluster_info().json()["version"]
    provider = oscar.get_cluster_config().json()["minio_provider"]
    assert provider == {
        "endpoint": f"http://{platform.s3_endpoint}",
        "verify": True,
        "access_key": platform.s3_access_key,
        "secret_key": platform.s3_secret_key,
        "region": "us-east-1",
    }
    assert platform.oscar_endpoint.startswith("http://127.0.0.1:")
    assert platform.s3_endpoint.startswith("127.0.0.1:")
    assert platform.s3_secure is False


def test_service_lifecycle_with_fdl_file(platform, oscar, s3, tmp_path):
    (tmp_path / "script.sh").write_text("echo from-fdl\n")
    fdl = {
        "functions": {
            "oscar": [
                {
                    platform.cluster_id: {
                        "name": "fdl-svc",
                        "image": "local/bash",
                        "cpu": 0.5,
                        "script": "script.sh",
                        "input": [{"storage_provider": "minio", "path": "fdl-bucket/in"}],
                        "output": [{"storage_provider": "minio", "path": "fdl-bucket/deep/out"}],
                        "environment": {"variables": {"A": "1"}, "secrets": {"S": "secret-value"}},
                    }
                }
            ]
        }
    }
    (tmp_path / "fdl.yaml").write_text(yaml.safe_dump(fdl))
    assert oscar.create_service(str(tmp_path / "fdl.yaml")).status_code == 201

    service = oscar.get_service("fdl-svc").json()
    assert len(service["token"]) == 64
    assert service["script"] == "echo from-fdl\n"
    assert service["cpu"] == "0.5"
    assert service["environment"]["secrets"] == {"S": ""}  # OSCAR never shows secret values
    assert service["storage_providers"]["minio"]["default"]["secret_key"] == "hidden"
    assert "fdl-svc" in [s["name"] for s in oscar.list_services().json()]
    # Buckets and folder markers, as OSCAR creates them.
    assert keys(s3, "fdl-bucket") == ["deep/out/", "in/"]

    # Creating it again: oscar-python refuses itself; the API answers 409.
    with pytest.raises(ValueError, match="already present"):
        oscar.create_service(str(tmp_path / "fdl.yaml"))
    direct = requests.post(f"{platform.oscar_endpoint}/system/services", json=service, auth=auth(platform))
    assert direct.status_code == 409

    service["environment"]["variables"]["A"] = "2"
    assert oscar.update_service("fdl-svc", service).status_code == 204
    updated = oscar.get_service("fdl-svc").json()
    assert updated["environment"]["variables"]["A"] == "2"
    assert updated["token"] == service["token"]

    assert oscar.remove_service("fdl-svc").status_code == 204
    with pytest.raises(requests.HTTPError) as err:
        oscar.get_service("fdl-svc")
    assert err.value.response.status_code == 404
    missing = requests.put(f"{platform.oscar_endpoint}/system/services", json=service, auth=auth(platform))
    assert missing.status_code == 404


# -- the function contract -------------------------------------------------------

CONTRACT_SCRIPT = textwrap.dedent(
    """\
    echo "script starts"
    cp "$INPUT_FILE_PATH" "$TMP_OUTPUT_DIR/$(basename "$INPUT_FILE_PATH").out"
    mkdir -p "$TMP_OUTPUT_DIR/sub"
    echo nested > "$TMP_OUTPUT_DIR/sub/nested.txt"
    echo never > "$TMP_OUTPUT_DIR/skip.log"
    python3 - > "$TMP_OUTPUT_DIR/env.json" <<'PY'
    import json, os, yaml
    names = ["INPUT_FILE_PATH", "TMP_INPUT_DIR", "TMP_OUTPUT_DIR", "STORAGE_OBJECT_KEY", "EVENT",
             "JOB_UUID", "OSCAR_SERVICE_NAME", "MY_VARIABLE", "MY_SECRET", "DRO_FUNCTION_CONFIG",
             "DRO_PROVIDER_SECRETS"]
    env = {name: os.environ.get(name) for name in names}
    with open(os.path.join(os.environ["DRO_PROVIDER_SECRETS"], "accessKey")) as handle:
        env["mounted_access_key"] = handle.read()
    with open(os.environ["DRO_FUNCTION_CONFIG"]) as handle:
        env["config"] = yaml.safe_load(handle)
    env["cwd"] = os.getcwd()
    print(json.dumps(env))
    PY
    echo "script ends badly"
    exit 7
    """
)


def test_trigger_runs_function_with_supervisor_contract(platform, oscar, s3):
    outputs = [
        {"storage_provider": "minio.default", "path": "contract/out", "suffix": [".out", ".json"]},
        {"storage_provider": "minio", "path": "contract-flat", "prefix": ["sub/"]},
    ]
    definition = service_def(
        "contract",
        CONTRACT_SCRIPT,
        inputs=["contract/in"],
        outputs=outputs,
        environment={"variables": {"MY_VARIABLE": "plain"}, "secrets": {"MY_SECRET": "hush"}},
    )
    oscar.create_service(definition)
    put(s3, "contract", "in/folder/", b"")  # a folder marker never triggers
    put(s3, "contract", "in/deep/er/data 1.txt", b"payload")

    # The exit code is ignored and the folder marker started nothing.
    [(job_name, info)] = wait_for_jobs(oscar, "contract", 1)
    assert info["status"] == "Succeeded"
    assert read_object(s3, "contract", "out/data 1.txt.out") == b"payload"
    env = json.loads(read_object(s3, "contract", "out/env.json"))
    # A bare-bucket output puts files at their relative name; filters are honoured.
    assert keys(s3, "contract-flat") == ["sub/nested.txt"]
    assert keys(s3, "contract", "out/") == ["out/", "out/data 1.txt.out", "out/env.json"]

    assert env["STORAGE_OBJECT_KEY"] == "in/deep/er/data 1.txt"
    assert env["INPUT_FILE_PATH"] == os.path.join(env["TMP_INPUT_DIR"], "data 1.txt")
    assert env["OSCAR_SERVICE_NAME"] == "contract"
    assert env["JOB_UUID"].startswith("contract-")
    assert env["MY_VARIABLE"] == "plain"
    assert env["MY_SECRET"] == "hush"
    event = json.loads(env["EVENT"])
    record = event["Records"][0]
    assert event["Key"] == "contract/in/deep/er/data 1.txt"
    assert record["eventSource"] == "minio:s3"
    assert record["s3"]["bucket"]["name"] == "contract"
    assert unquote_plus(record["s3"]["object"]["key"]) == "in/deep/er/data 1.txt"
    default = env["config"]["storage_providers"]["minio"]["default"]
    # As OSCAR writes it: the keys are only in the mounted secret files.
    assert (default["access_key"], default["secret_key"]) == ("hidden", "hidden")
    assert env["DRO_PROVIDER_SECRETS"].startswith(platform.tmpdir)
    assert env["mounted_access_key"] == platform.s3_access_key
    assert default["endpoint"] == f"http://{platform.s3_endpoint}"
    assert env["config"]["name"] == "contract"
    assert env["config"]["environment"]["secrets"] == {"MY_SECRET": ""}
    assert env["cwd"].startswith(platform.tmpdir)

    assert env["JOB_UUID"] == job_name
    assert {"creation_time", "start_time", "finish_time"} <= set(info)
    log = oscar.get_job_logs("contract", job_name).text
    assert "script starts" in log
    assert "script ends badly" in log
    assert "code 7" in log
    # The per-invocation directory is gone.
    assert not os.path.exists(env["TMP_INPUT_DIR"])


def test_trigger_semantics():
    # Only OSCAR 3.5 accepts a service whose input bucket exists (and so holds objects already).
    with LocalPlatform(workers=1, oscar_version="3.5") as old:
        _trigger_semantics(Client(old.oscar_options()), old.minio_client())


def _trigger_semantics(oscar, s3):
    s3.make_bucket("semantics")
    put(s3, "semantics", "in/old", b"present before the service")
    oscar.create_service(
        service_def(
            "semantics",
            'cp "$INPUT_FILE_PATH" "$TMP_OUTPUT_DIR/$JOB_UUID"',
            ["semantics/in"],
            [{"storage_provider": "minio", "path": "semantics/out"}],
        )
    )
    put(s3, "semantics", "in/new", b"1")
    wait_for_jobs(oscar, "semantics", 1)
    s3.remove_object("semantics", "in/new")
    put(s3, "semantics", "in/new", b"2")
    wait_for_jobs(oscar, "semantics", 2)
    # A server-side copy is an s3:ObjectCreated event too (OSCAR subscribes to them all).
    s3.copy_object("semantics", "in/copied", CopySource("semantics", "in/new"))
    wait_for_jobs(oscar, "semantics", 3)
    # Events arrive in upload order: once a later upload's job is in, an earlier one's would be too.
    put(s3, "semantics", "in/last", b"3")
    jobs = wait_for_jobs(oscar, "semantics", 4)
    assert len(jobs_of(oscar, "semantics")) == 4  # the pre-existing object never triggered
    assert sorted(read_object(s3, "semantics", f"out/{name}") for name, _ in jobs) == [b"1", b"2", b"2", b"3"]


def test_run_service_and_job_endpoint(platform, oscar, s3):
    script = 'cp "$INPUT_FILE_PATH" "$TMP_OUTPUT_DIR/$JOB_UUID.in"; printf %s "$EVENT" > "$TMP_OUTPUT_DIR/$JOB_UUID.event"'
    oscar.create_service(
        service_def("invoke", script, outputs=[{"storage_provider": "minio", "path": "invoke/out"}])
    )

    # oscar-python base64-encodes a string input; the function gets it decoded as its input file.
    request = json.dumps({"range": [0, 10]})
    response = oscar.run_service("invoke", input=request, async_call=True)
    assert response.status_code == 201
    assert response.text == ""
    [(job, info)] = wait_for_jobs(oscar, "invoke", 1)
    assert info["status"] == "Succeeded"
    assert wait_for_object(s3, "invoke", f"out/{job}.in") == request.encode()
    assert wait_for_object(s3, "invoke", f"out/{job}.event") == base64.b64encode(request.encode())

    # A MinIO event posted to /job is a storage event: here its object is missing, so the job fails.
    token = oscar.get_service("invoke").json()["token"]
    event = {
        "Records": [
            {
                "eventSource": "minio:s3",
                "eventTime": "",
                "s3": {
                    "bucket": {"name": "invoke", "arn": "arn:aws:s3:::invoke"},
                    "object": {"key": "no%2Fsuch"},
                },
            }
        ]
    }
    posted = requests.post(
        f"{platform.oscar_endpoint}/job/invoke",
        data=json.dumps(event),
        headers={"Authorization": f"Bearer {token}"},
    )
    assert posted.status_code == 201
    jobs = dict(wait_for_jobs(oscar, "invoke", 2))
    failed = [name for name, info in jobs.items() if info["status"] == "Failed"]
    assert len(failed) == 1
    assert "no/such" in oscar.get_job_logs("invoke", failed[0]).text

    # remove_all_jobs removes succeeded jobs only; remove_job removes one.
    assert oscar.remove_all_jobs("invoke").status_code == 204
    assert list(jobs_of(oscar, "invoke")) == failed
    assert oscar.remove_job("invoke", failed[0]).status_code == 204
    assert jobs_of(oscar, "invoke") == {}
    with pytest.raises(requests.HTTPError):
        oscar.get_job_logs("invoke", failed[0])


# -- refusals ----------------------------------------------------------------------


def test_authentication_failures(platform, oscar):
    oscar.create_service(service_def("guarded", "true"))
    wrong = Client({**platform.oscar_options(), "password": "not-the-password"})
    with pytest.raises(requests.HTTPError) as err:
        wrong.list_services()
    assert err.value.response.status_code == 401
    assert requests.get(f"{platform.oscar_endpoint}/system/services").status_code == 401
    assert requests.get(f"{platform.oscar_endpoint}/health").status_code == 200

    job_url = f"{platform.oscar_endpoint}/job/guarded"
    assert requests.post(job_url, data="{}").status_code == 401
    assert (
        requests.post(job_url, data="{}", auth=auth(platform)).status_code == 401
    )  # basic auth is not enough
    bad = requests.post(job_url, data="{}", headers={"Authorization": "Bearer " + "0" * 64})
    assert bad.status_code in (401, 403)
    assert requests.post(f"{platform.oscar_endpoint}/job/nobody", data="{}").status_code == 404
    assert jobs_of(oscar, "guarded") == {}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name": "n" * 40}, "at most 39"),
        ({"name": "Upper_Case"}, "lower case"),
        ({"script": None}, "'script' is required"),
        ({"image": ""}, "'image' is required"),
        ({"input": {"path": "b/in"}}, "'input' must be a list"),
        ({"input": [{"storage_provider": "minio"}]}, "input path cannot be empty"),
        ({"input": [{"storage_provider": "s3", "path": "bkt/in"}]}, "not supported"),
        ({"input": [{"storage_provider": "minio", "path": "bkt"}]}, "must name a folder"),
        ({"output": [{"storage_provider": "minio", "path": "B!/x"}]}, "not a valid bucket name"),
        ({"cpu": "lots"}, "'cpu'"),
    ],
)
def test_validation_errors(platform, change, message):
    definition = {**service_def("valid-name", "true", ["bkt/in"]), **change}
    response = requests.post(
        f"{platform.oscar_endpoint}/system/services", json=definition, auth=auth(platform)
    )
    assert response.status_code == 400
    assert message in response.text


def test_validation_error_through_oscar_python(oscar):
    with pytest.raises(requests.HTTPError) as err:
        oscar.create_service(service_def("x" * 40, "true"))
    assert err.value.response.status_code == 400


# -- scheduling ------------------------------------------------------------------

TIMED_SCRIPT = 'start=$(date +%s.%N); sleep 1; echo "$start $(date +%s.%N)" > "$TMP_OUTPUT_DIR/$JOB_UUID"'


def test_cpu_requests_cap_concurrency(oscar, s3):
    for name, cpu in (("whole", "1"), ("half", "0.5")):
        oscar.create_service(
            service_def(
                name,
                TIMED_SCRIPT,
                [f"{name}/in"],
                [{"storage_provider": "minio", "path": f"{name}/out"}],
                cpu=cpu,
            )
        )
    observed = {}
    for name in ("whole", "half"):
        for index in range(4):
            put(s3, name, f"in/{index}", b"x")
        jobs = wait_for_jobs(oscar, name, 4, timeout=30)
        intervals = []
        for job, _ in jobs:
            start, end = map(float, wait_for_object(s3, name, f"out/{job}").split())
            intervals.append((start, end))
        observed[name] = max_overlap(intervals)
    # Two CPU slots: two 1-CPU functions at a time, four of 0.5 CPU.
    assert observed["whole"] == 2
    assert 2 < observed["half"] <= 4


# -- shutdown ------------------------------------------------------------------------


def test_stop_leaves_no_process_and_no_directory(tmp_path):
    local = LocalPlatform(workers=1, startup_delay=0.3, workdir=str(tmp_path)).start()
    oscar = Client(local.oscar_options())
    oscar.create_service(service_def("sleeper", "sleep 60 & wait"))
    oscar.run_service("sleeper", async_call=True)

    def running():
        return [i for i in jobs_of(oscar, "sleeper").values() if i["status"] == "Running"]

    [info] = wait_for(running, what="a running job")
    assert _seconds(info["start_time"]) - _seconds(info["creation_time"]) >= 0.3  # the start-up delay

    def function_started():
        children = descendants(local.pid)
        return children if "sleep" in {p.name() for p in children} else None

    children = wait_for(function_started, what="the function's process")
    assert len(children) >= 3  # moto_server, bash, sleep
    tmpdir, platform_process = local.tmpdir, psutil.Process(local.pid)
    port = int(local.oscar_endpoint.rsplit(":", 1)[1])

    local.stop()
    _, alive = psutil.wait_procs([*children, platform_process], timeout=10)
    assert alive == []
    assert not os.path.exists(tmpdir)
    assert os.listdir(tmp_path) == []
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/health", timeout=2)
    local.stop()  # idempotent


def test_platform_stops_when_its_parent_dies(tmp_path):
    parent_code = textwrap.dedent(
        """\
        import json, sys, time
        import psutil
        from distrdf_oscar.platform.embedded import LocalPlatform
        local = LocalPlatform(workers=1, workdir=sys.argv[1]).start()
        pids = [local.pid] + [p.pid for p in psutil.Process(local.pid).children(recursive=True)]
        print(json.dumps({"pids": pids, "tmpdir": local.tmpdir}), flush=True)
        time.sleep(120)
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    parent = subprocess.Popen(
        [sys.executable, "-c", parent_code, str(tmp_path)], stdout=subprocess.PIPE, env=env
    )
    try:
        state = json.loads(parent.stdout.readline())
        processes = [psutil.Process(pid) for pid in state["pids"]]
        assert len(processes) >= 2  # the platform and moto_server
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        parent.stdout.close()
    _, alive = psutil.wait_procs(processes, timeout=15)
    assert alive == []
    assert not os.path.exists(state["tmpdir"])


def _seconds(stamp):
    from datetime import datetime

    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").timestamp()


# -- pre-started workers --------------------------------------------------------------------

WARM_ENTRY = textwrap.dedent(
    """\
    import json, os, signal, sys

    def main():
        preloaded = "ROOT" in sys.modules
        import ROOT
        ROOT.gInterpreter.ProcessLine('printf("hello from C++\\\\n");')
        print("hello from Python")
        key = os.environ.get("STORAGE_OBJECT_KEY", "")
        result = {"pid": os.getpid(), "preloaded": preloaded, "cwd": os.getcwd(), "key": key,
                  "job": os.environ["JOB_UUID"]}
        with open(os.path.join(os.environ["TMP_OUTPUT_DIR"], os.environ["JOB_UUID"]), "w") as handle:
            json.dump(result, handle)
        if key.endswith("raise"):
            raise RuntimeError("entry point failure")
        if key.endswith("crash"):
            os.kill(os.getpid(), signal.SIGKILL)
    """
)


@pytest.fixture(scope="module")
def prestarted(tmp_path_factory):
    if not HAVE_ROOT:
        pytest.skip("ROOT is not installed")
    code_dir = tmp_path_factory.mktemp("warm-code")
    (code_dir / "dro_warm_entry.py").write_text(WARM_ENTRY)
    with LocalPlatform(workers=1, mode="prestarted") as local:
        yield local, str(code_dir)


def _warm_call(oscar, s3, service, key, count):
    # One input bucket per service: OSCAR 3.6 and later refuse a second service in a bucket.
    put(s3, f"warm-{service}", f"in/{key}", b"x")
    jobs = wait_for_jobs(oscar, service, count, timeout=60)
    name, info = jobs[-1]
    result = read_object(s3, "warm", f"out/{name}")
    return info, (json.loads(result) if result else None), oscar.get_job_logs(service, name).text


def test_prestarted_workers_run_entry_points_in_process(prestarted):
    local, code_dir = prestarted
    oscar, s3 = Client(local.oscar_options()), local.minio_client()
    variables = {"DRO_ENTRYPOINT": "dro_warm_entry:main", "PYTHONPATH": code_dir}
    outputs = [{"storage_provider": "minio", "path": "warm/out"}]
    cold_script = "python3 -c 'import dro_warm_entry; dro_warm_entry.main()'"
    oscar.create_service(
        service_def("entry", cold_script, ["warm-entry/in"], outputs, environment={"variables": variables})
    )

    info, first, log = _warm_call(oscar, s3, "entry", "one", 1)
    assert info["status"] == "Succeeded"
    assert first["preloaded"] is True
    assert "hello from C++" in log
    assert "hello from Python" in log
    assert "in pre-started worker" in log
    assert first["cwd"].startswith(local.tmpdir)

    info, second, log = _warm_call(oscar, s3, "entry", "two-raise", 2)
    assert info["status"] == "Succeeded"  # an exception is logged and ignored, like an exit code
    assert "RuntimeError: entry point failure" in log
    assert second["pid"] == first["pid"]
    assert second["preloaded"] is True

    info, _, log = _warm_call(oscar, s3, "entry", "three-crash", 3)
    assert info["status"] == "Failed"
    assert psutil.pid_exists(first["pid"]) is False

    def served_by_new_worker():
        _, result, log = _warm_call(
            oscar, s3, "entry", f"again-{time.monotonic()}", len(jobs_of(oscar, "entry")) + 1
        )
        return result if "in pre-started worker" in log else None

    replacement = wait_for(
        served_by_new_worker, timeout=60, interval=0.5, what="a replacement pre-started worker"
    )
    assert replacement["pid"] != first["pid"]
    assert replacement["preloaded"] is True

    # Without DRO_ENTRYPOINT a service runs its script cold, even in prestarted mode.
    oscar.create_service(
        service_def(
            "plain",
            cold_script,
            ["warm-plain/in"],
            outputs,
            environment={"variables": {"PYTHONPATH": code_dir}},
            memory="1Gi",  # a cold process importing ROOT exceeds OSCAR's default of 256Mi
        )
    )
    info, cold, log = _warm_call(oscar, s3, "plain", "one", 1)
    assert info["status"] == "Succeeded"
    assert cold["preloaded"] is False
    assert "Running the script with /bin/sh (cold start" in log
    assert cold["pid"] != replacement["pid"]


def test_a_function_over_its_memory_limit_is_killed_without_output(oscar, s3):
    """OSCAR sets ``memory`` as the container's limit: over it, the kernel kills the function."""
    script = (
        'python3 -c "import time; block = bytearray(200 * 1024 * 1024); time.sleep(3)"\n'
        'echo survived > "$TMP_OUTPUT_DIR/out.txt"\n'
    )
    oscar.create_service(
        service_def(
            "hungry",
            script,
            ["hungry/in"],
            [{"storage_provider": "minio", "path": "hungry/out"}],
            memory="64Mi",
        )
    )
    put(s3, "hungry", "in/a", b"x")
    [(name, info)] = wait_for_jobs(oscar, "hungry", 1)
    assert info["status"] == "Failed"
    assert keys(s3, "hungry", "out/") == ["out/"]  # nothing uploaded, no marker of any kind
    assert "OOMKilled" in oscar.get_job_logs("hungry", name).text
    oscar.remove_service("hungry")
