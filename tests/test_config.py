"""OSCARExecutor.from_env: every missing or malformed setting is named, before anything is contacted."""

from __future__ import annotations

import pytest

from distrdf_oscar import ConfigurationError, OSCARExecutor

GOOD = {"OSCAR_ENDPOINT": "https://oscar.example.org", "OSCAR_USER": "alice", "OSCAR_PASSWORD": "pw-secret-123",
        "DISTRDF_OSCAR_KEY": "0123456789abcdef0123456789abcdef"}


def without(*names):
    return {k: v for k, v in GOOD.items() if k not in names}


@pytest.mark.parametrize("env,message", [
    (without("OSCAR_ENDPOINT"), "OSCAR_ENDPOINT is not set"),
    ({**GOOD, "OSCAR_ENDPOINT": "oscar.example.org"}, "OSCAR_ENDPOINT must start with http:// or https://"),
    (without("OSCAR_PASSWORD"), "set OSCAR_USER and OSCAR_PASSWORD, or OSCAR_TOKEN"),
    (without("OSCAR_USER", "OSCAR_PASSWORD"), "set OSCAR_USER and OSCAR_PASSWORD, or OSCAR_TOKEN"),
    (without("DISTRDF_OSCAR_KEY"), "DISTRDF_OSCAR_KEY (the deployment's signing key) is not set"),
    ({**GOOD, "DISTRDF_OSCAR_KEY": "short"}, "at least 16 characters"),
    ({**GOOD, "OSCAR_SSL_VERIFY": "maybe"}, "OSCAR_SSL_VERIFY must be true or false"),
    ({**GOOD, "MINIO_ENDPOINT": "https://minio.example.org"}, "missing: MINIO_ACCESS_KEY, MINIO_SECRET_KEY"),
])
def test_bad_settings_are_named(env, message):
    with pytest.raises(ConfigurationError) as info:
        OSCARExecutor.from_env(env)
    assert message in str(info.value)
    assert "pw-secret-123" not in str(info.value) and GOOD["DISTRDF_OSCAR_KEY"] not in str(info.value)


def test_all_problems_are_reported_at_once():
    with pytest.raises(ConfigurationError) as info:
        OSCARExecutor.from_env({"OSCAR_SSL_VERIFY": "perhaps"})
    text = str(info.value)
    assert "OSCAR_ENDPOINT" in text and "OSCAR_TOKEN" in text and "DISTRDF_OSCAR_KEY" in text and "OSCAR_SSL_VERIFY" in text


def test_good_settings_build_an_executor_without_contacting_anything():
    executor = OSCARExecutor.from_env(GOOD)
    assert executor.cluster.endpoint == "https://oscar.example.org"
    assert "pw-secret-123" not in repr(executor) and GOOD["DISTRDF_OSCAR_KEY"] not in repr(executor)
    assert GOOD["DISTRDF_OSCAR_KEY"] not in repr(executor.deployment)


def test_token_and_explicit_storage():
    env = {**without("OSCAR_USER", "OSCAR_PASSWORD"), "OSCAR_TOKEN": "tok-abcdef",
           "MINIO_ENDPOINT": "https://minio.example.org", "MINIO_ACCESS_KEY": "ak", "MINIO_SECRET_KEY": "sk-secret"}
    executor = OSCARExecutor.from_env(env)
    assert executor._storage_config.endpoint == "https://minio.example.org"
    assert "sk-secret" not in repr(executor._storage_config)


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
