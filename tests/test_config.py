"""OSCARExecutor.from_env: every missing or malformed setting is named, before anything is contacted."""

from __future__ import annotations

import re

import pytest

import distrdf_oscar as dro
from distrdf_oscar import ConfigurationError, OSCARExecutor

GOOD = {
    "OSCAR_ENDPOINT": "https://oscar.example.org",
    "OSCAR_USER": "alice",
    "OSCAR_PASSWORD": "pw-secret-123",
    "DISTRDF_OSCAR_KEY": "0123456789abcdef0123456789abcdef",
}


def without(*names):
    return {k: v for k, v in GOOD.items() if k not in names}


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (without("OSCAR_ENDPOINT"), "OSCAR_ENDPOINT is not set"),
        (
            {**GOOD, "OSCAR_ENDPOINT": "oscar.example.org"},
            "OSCAR_ENDPOINT must start with http:// or https://",
        ),
        (without("OSCAR_PASSWORD"), "set OSCAR_USER and OSCAR_PASSWORD, or OSCAR_TOKEN"),
        (without("OSCAR_USER", "OSCAR_PASSWORD"), "set OSCAR_USER and OSCAR_PASSWORD, or OSCAR_TOKEN"),
        (without("DISTRDF_OSCAR_KEY"), "DISTRDF_OSCAR_KEY (the deployment's signing key) is not set"),
        ({**GOOD, "DISTRDF_OSCAR_KEY": "short"}, "at least 16 characters"),
        ({**GOOD, "OSCAR_SSL_VERIFY": "maybe"}, "OSCAR_SSL_VERIFY must be true or false"),
        ({**GOOD, "MINIO_ACCESS_KEY": "ak"}, "missing: MINIO_ENDPOINT, MINIO_SECRET_KEY"),
        (
            {**GOOD, "MINIO_ENDPOINT": "minio.example.org"},
            "MINIO_ENDPOINT must start with http:// or https://",
        ),
    ],
)
def test_bad_settings_are_named(env, message):
    with pytest.raises(ConfigurationError) as info:
        OSCARExecutor.from_env(env)
    assert message in str(info.value)
    assert "pw-secret-123" not in str(info.value)
    assert GOOD["DISTRDF_OSCAR_KEY"] not in str(info.value)


def test_all_problems_are_reported_at_once():
    with pytest.raises(ConfigurationError) as info:
        OSCARExecutor.from_env({"OSCAR_SSL_VERIFY": "perhaps"})
    text = str(info.value)
    assert "OSCAR_ENDPOINT" in text
    assert "OSCAR_TOKEN" in text
    assert "DISTRDF_OSCAR_KEY" in text
    assert "OSCAR_SSL_VERIFY" in text


def test_good_settings_build_an_executor_without_contacting_anything():
    executor = OSCARExecutor.from_env(GOOD)
    assert executor.cluster.endpoint == "https://oscar.example.org"
    assert "pw-secret-123" not in repr(executor)
    assert GOOD["DISTRDF_OSCAR_KEY"] not in repr(executor)
    assert GOOD["DISTRDF_OSCAR_KEY"] not in repr(executor.deployment)


def test_token_and_explicit_storage():
    env = {
        **without("OSCAR_USER", "OSCAR_PASSWORD"),
        "OSCAR_TOKEN": "tok-abcdef",
        "MINIO_ENDPOINT": "https://minio.example.org",
        "MINIO_ACCESS_KEY": "ak",
        "MINIO_SECRET_KEY": "sk-secret",
    }
    executor = OSCARExecutor.from_env(env)
    assert executor.settings.storage.endpoint == "https://minio.example.org"
    assert "sk-secret" not in repr(executor.settings.storage)


def test_disabling_tls_verification_warns():
    with pytest.warns(UserWarning, match="TLS certificate verification is disabled"):
        OSCARExecutor.from_env({**GOOD, "OSCAR_SSL_VERIFY": "false"})


def test_other_executors_still_reach_roots_own_backends():
    """Importing distrdf_oscar leaves ROOT's Dask dispatch (and its error for unknown executors) intact."""
    import ROOT
    from dask.distributed import Client

    import distrdf_oscar  # noqa: F401 - the import installs our dispatch

    with Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=None) as client:
        df = ROOT.RDataFrame(100, executor=client, npartitions=2)
        assert type(df._headnode.backend).__name__ == "DaskBackend"
        assert df.Count().GetValue() == 100
    with pytest.raises(TypeError, match="not a supported connection type"):
        ROOT.RDataFrame(100, executor=object())


def test_function_reads_storage_keys_oscar_hides(tmp_path, monkeypatch):
    """OSCAR >= 3.5 shows the MinIO keys as "hidden" in the function config and mounts them as files."""
    from distrdf_oscar.functions.invocation import storage_config

    config = tmp_path / "function_config.yaml"
    config.write_text(
        "storage_providers:\n  minio:\n    default:\n      endpoint: http://minio.minio:9000\n"
        "      access_key: hidden\n      secret_key: hidden\n      verify: true\n"
    )
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "accessKey").write_text("the-access-key\n")
    (secrets / "secretKey").write_text("the-secret-key\n")
    monkeypatch.setenv("DRO_PROVIDER_SECRETS", str(secrets))
    storage = storage_config("distrdf", str(config))
    assert (storage.access_key, storage.secret_key) == ("the-access-key", "the-secret-key")
    assert storage.endpoint == "http://minio.minio:9000"
    assert storage.verify


@pytest.mark.parametrize(
    ("name", "bucket"), [("ab", None), ("distrdf", "x"), ("distrdf", "Upper"), ("distrdf", "a_b")]
)
def test_bucket_names_follow_s3_rules(name, bucket):
    from distrdf_oscar import Deployment

    refused = bucket or name  # without a bucket of its own, a deployment's bucket is its name
    with pytest.raises(
        ValueError,
        match=rf"^bucket name '{refused}' must be 3-63 lowercase letters, digits, "
        r"'\.' or '-'$",
    ):
        Deployment(name=name, bucket=bucket)


def test_analyst_client_checks_the_deployment_instead_of_changing_it(prestarted_cluster):
    import distrdf_oscar as dro

    _ = prestarted_cluster.executor(progress=False).storage  # the cluster's own key deploys the services
    platform = prestarted_cluster.platform
    missing = dro.OSCARExecutor(
        platform.oscar_endpoint,
        user=platform.oscar_user,
        password=platform.oscar_password,
        signing_key="another-key-0123456789",
        deployment=dro.Deployment(name="nowhere"),
    )
    with pytest.raises(dro.OSCARError, match=r"deployment 'nowhere' is not on .*distrdf-oscar deploy"):
        _ = missing.storage
    other_key = dro.OSCARExecutor(
        platform.oscar_endpoint,
        user=platform.oscar_user,
        password=platform.oscar_password,
        signing_key="another-key-0123456789",
        deployment=prestarted_cluster.deployment(),
    )
    with pytest.raises(dro.OSCARError, match="holds a different signing key"):
        _ = other_key.storage


def test_pool_and_call_settings_are_checked(prestarted_cluster):
    import ROOT

    from distrdf_oscar.platform.deployment import Deployment
    from distrdf_oscar.platform.oscar.cluster import OSCARCluster
    from distrdf_oscar.platform.oscar.errors import OSCARError
    from distrdf_oscar.protocol import layout

    for options, message in (
        ({"pool": "yes"}, "pool must be None (use one when up), True or False, got 'yes'"),
        ({"pool_overflow_after": 0}, "pool_overflow_after must be positive, got 0"),
        ({"ranges_per_call": 0}, "ranges_per_call must be an integer of at least 1, got 0"),
    ):
        with pytest.raises(ConfigurationError, match=re.escape(message)):
            OSCARExecutor.from_env(GOOD, **options)
    # No pool on this cluster: pool=True refuses the job before anything is written.
    executor = prestarted_cluster.executor(pool=True, progress=False)
    with pytest.raises(
        ConfigurationError,
        match=r"no warm pool is up for deployment 'distrdf' \(pool=True\): "
        r"ask the operator to run `distrdf-oscar pool start`",
    ):
        ROOT.RDataFrame(10, executor=executor, npartitions=2).Count().GetValue()
    assert [k for k in executor.storage.list("") if layout.job_of_key(k)] == []
    # An analyst's token cannot start a pool: its workers would hold the deployment's storage keys.
    analyst = OSCARCluster("https://oscar.example.org", token="an-oidc-token")
    with pytest.raises(OSCARError, match="starting a pool takes the operator's credentials"):
        analyst.start_pool(Deployment(), 2, ("access", "secret"))


def test_local_cluster_modes_and_their_pod_start():
    """The file-triggered calls of the OSCAR-like modes pay a pod's start-up unless told otherwise;
    the pre-started speed-up pays none; an unknown mode is named."""
    from distrdf_oscar.platform.embedded.launcher import POD_START_DELAY

    assert POD_START_DELAY > 0
    assert dro.LocalCluster(mode="cold").platform.startup_delay == POD_START_DELAY
    warm = dro.LocalCluster()  # the default: cold file-triggered services beside a warm pool
    assert (warm.mode, warm.platform.mode, warm.platform.startup_delay) == ("warm", "cold", POD_START_DELAY)
    assert dro.LocalCluster(mode="prestarted").platform.startup_delay == 0.0
    assert dro.LocalCluster(mode="cold", startup_delay=0.5).platform.startup_delay == 0.5
    with pytest.raises(ValueError, match=r"mode must be one of warm, cold, prestarted, got 'pool'"):
        dro.LocalCluster(mode="pool")


def test_every_public_name_loads_on_first_use():
    assert sorted(dro.__all__) == sorted(dro._EXPORTS)
    for name in dro.__all__:
        assert getattr(dro, name) is getattr(
            __import__(f"distrdf_oscar.{dro._EXPORTS[name]}", fromlist=[name]), name
        )
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        _ = dro.nope


# -- clusters as oscar-cli users have them ----------------------------------------------------------


def oscar_cli_file(tmp_path, text: str, name: str = "config.yaml") -> dict[str, str]:
    """An oscar-cli configuration file, and the environment that points at it (and at nothing else)."""
    path = tmp_path / name
    path.write_text(text)
    return {"DISTRDF_OSCAR_CLI_CONFIG": str(path), "DISTRDF_OSCAR_KEY": GOOD["DISTRDF_OSCAR_KEY"]}


CLI_CONFIG = """
oscar:
  lab:
    endpoint: https://oscar.lab.example.org
    auth_user: oscar
    auth_password: lab-password
    ssl_verify: false
    memory: 256Mi
    log_level: INFO
  egi:
    endpoint: https://oscar.egi.example.org
    oidc_account_name: egi
    ssl_verify: true
default: lab
"""


def test_the_default_cluster_of_oscar_cli_is_used_when_no_endpoint_is_set(tmp_path):
    from distrdf_oscar.client.settings import Settings

    settings = Settings.from_env(oscar_cli_file(tmp_path, CLI_CONFIG))
    assert (settings.endpoint, settings.user, settings.password) == (
        "https://oscar.lab.example.org",
        "oscar",
        "lab-password",
    )
    assert settings.ssl_verify is False
    assert "lab-password" not in repr(settings)


def test_a_named_cluster_and_the_environment_over_it(tmp_path):
    from distrdf_oscar.client.settings import Settings

    env = oscar_cli_file(tmp_path, CLI_CONFIG)
    egi = Settings.from_env(env, cluster="egi")
    assert (egi.endpoint, egi.oidc_account, egi.user, egi.token) == (
        "https://oscar.egi.example.org",
        "egi",
        None,
        None,
    )
    # The environment wins; its credentials never go to the file's endpoint, nor the file's to its own.
    overridden = Settings.from_env({**env, "OSCAR_TOKEN": "tok-abc"}, cluster="lab")
    assert (overridden.endpoint, overridden.token, overridden.user) == (
        "https://oscar.lab.example.org",
        "tok-abc",
        None,
    )
    # The lab's password is never sent to another endpoint: that one needs its own credentials.
    with pytest.raises(ConfigurationError, match="set OSCAR_USER and OSCAR_PASSWORD, or OSCAR_TOKEN"):
        Settings.from_env({**env, "OSCAR_ENDPOINT": "https://other.example.org"}, cluster="lab")
    # An explicit OSCAR_ENDPOINT without --cluster: the file is not read at all.
    plain = Settings.from_env({**env, **GOOD})
    assert plain.endpoint == GOOD["OSCAR_ENDPOINT"]


def test_oscar_cli_json_files_and_their_faults_are_named(tmp_path):
    from distrdf_oscar.client.settings import Settings

    json_env = oscar_cli_file(
        tmp_path,
        '{"oscar": {"j": {"endpoint": "https://j.example.org", "auth_user": "u", "auth_password": "p", '
        '"ssl_verify": true}}, "default": "j"}',
        name="config.json",
    )
    assert Settings.from_env(json_env).endpoint == "https://j.example.org"
    env = oscar_cli_file(tmp_path, CLI_CONFIG)
    with pytest.raises(
        ConfigurationError, match=r"cluster 'nope' is not in oscar-cli's configuration .* \(it has egi, lab\)"
    ):
        Settings.from_env(env, cluster="nope")
    with pytest.raises(ConfigurationError, match="no oscar-cli configuration at"):
        Settings.from_env({**env, "DISTRDF_OSCAR_CLI_CONFIG": str(tmp_path / "absent.yaml")}, cluster="lab")
    bad = oscar_cli_file(tmp_path, "oscar:\n  x:\n    endpoint: https://x.example.org\n", name="bad.yaml")
    with pytest.raises(ConfigurationError, match=r"cluster 'x' in .* has no credentials"):
        Settings.from_env(bad, cluster="x")


def test_the_signing_key_from_an_owner_only_file(tmp_path):
    import os

    from distrdf_oscar.client.settings import Settings

    key_file = tmp_path / "distrdf.key"
    key_file.write_text("k" * 40 + "\n")
    env = {**without("DISTRDF_OSCAR_KEY"), "DISTRDF_OSCAR_KEY_FILE": str(key_file)}
    os.chmod(key_file, 0o644)
    with pytest.raises(ConfigurationError, match=r"distrdf\.key is readable by others: chmod 600 it"):
        Settings.from_env(env)
    os.chmod(key_file, 0o600)
    assert Settings.from_env(env).signing_key == "k" * 40
    with pytest.raises(ConfigurationError, match="nor readable from"):
        Settings.from_env({**env, "DISTRDF_OSCAR_KEY_FILE": str(tmp_path / "none.key")})
