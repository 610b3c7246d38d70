"""An analyst's OIDC access token expires mid-job (an embedded OSCAR whose access tokens live
``LIFETIME`` seconds, and jobs that take longer): with her refresh token the client renews it and
its calls to OSCAR go on; a fixed ``OSCAR_TOKEN`` cannot be renewed, and its refusal names the
expiry and the fix; a revoked or forged refresh token is refused naming it."""

from __future__ import annotations

import re
import sys
import time

import pytest
import requests
import ROOT
import yaml
from oscar_python.client import Client

from conftest import SAME_MACHINE
from distrdf_oscar import OSCARExecutor, TreeReduction, cli
from distrdf_oscar.platform.deployment import Deployment
from distrdf_oscar.platform.embedded.accounts import OidcTokens
from distrdf_oscar.platform.oscar.cli_config import token_claims
from distrdf_oscar.platform.oscar.cluster import OSCARCluster
from distrdf_oscar.platform.oscar.errors import OSCARError

LIFETIME = 6  # seconds an access token is valid; every job here takes longer
PLATFORM = {
    "workers": 2,
    "mode": "prestarted",
    "headroom": 0.25,
    "oidc_users": ("alice",),
    "oidc_token_lifetime": LIFETIME,
}
KEY = "c" * 40
NAME = "ops"
# About 5 s per range of the dataset's 8000 entries: three ranges on two slots outlast a token.
SLOW = "if (rdfentry_ % 16 == 0) gSystem->Sleep(10); return nMuon;"


@pytest.fixture(scope="module")
def admin(platform) -> OSCARCluster:
    """The operator's view, once the operator has deployed ``NAME`` for Alice."""
    operator = OSCARExecutor(
        platform.oscar_endpoint,
        user=platform.oscar_user,
        password=platform.oscar_password,
        signing_key=KEY,
        deployment=Deployment(name=NAME, allowed_users=("alice",), variables={"DRO_PYTHON": sys.executable}),
        auto_deploy=True,
        progress=False,
    )
    _ = operator.storage  # connecting deploys
    return operator.cluster


@pytest.fixture(scope="module")
def expected(dimuon_files):
    df = ROOT.RDataFrame("Events", dimuon_files)
    count, histogram = df.Count(), df.Histo1D(("n", "n", 8, 0, 8), "nMuon")
    return count.GetValue(), [histogram.GetBinContent(i) for i in range(10)]


# What Alice's executors share, however they authenticate.
OPTIONS = {
    "deployment": Deployment(name=NAME),
    "reduction": TreeReduction(fan_in=2),
    "progress": False,
    "retry_after": 20.0,
    "shared_paths": SAME_MACHINE,
}


def slow_job(executor: OSCARExecutor, files: list[str]) -> tuple[int, list[float]]:
    df = ROOT.RDataFrame("Events", files, executor=executor, npartitions=3).Define("slow", SLOW)
    count, histogram = df.Count(), df.Histo1D(("n", "n", 8, 0, 8), "slow")
    return count.GetValue(), [histogram.GetBinContent(i) for i in range(10)]


def expiry(token: str) -> float:
    return float(token_claims(token)["exp"])


def answer_to(platform, token: str) -> int:
    """The status OSCAR answers a request with this access token."""
    headers = {"Authorization": f"Bearer {token}"}
    return requests.get(f"{platform.oscar_endpoint}/system/services", headers=headers, timeout=30).status_code


def left_behind(admin: OSCARCluster, executor: OSCARExecutor) -> dict[str, set[str]]:
    """The OSCAR jobs that served the executor's last job and are still listed, per service."""
    assert executor.last_job is not None
    served = {
        executor.deployment.service_name(role): set(names)
        for role, names in executor.last_job.functions.items()
    }
    assert served
    return {
        service: left
        for service, names in served.items()
        if (left := names & set(admin.job_listing(service).jobs))
    }


def command_line(monkeypatch, capsys, **variables: str) -> tuple[int, str]:
    """``distrdf-oscar status`` with these OSCAR variables only: (exit code, stderr)."""
    for name in ("OSCAR_USER", "OSCAR_PASSWORD", "OSCAR_TOKEN", "OSCAR_OIDC_ACCOUNT", "OSCAR_REFRESH_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    code = cli.main(["status", "--deployment", NAME])
    return code, capsys.readouterr().err


def test_an_access_token_expiring_mid_job_is_renewed_with_the_refresh_token(
    platform, admin, dimuon_files, expected, tmp_path
):
    # As oscar-cli users have it: a cluster whose credentials are a refresh token.
    config = tmp_path / "config.yaml"
    refresh_token = platform.oidc_options("alice", refresh=True)["refresh_token"]
    cluster = {"endpoint": platform.oscar_endpoint, "oidc_refresh_token": refresh_token, "ssl_verify": True}
    config.write_text(yaml.safe_dump({"oscar": {"local": cluster}, "default": "local"}))
    alice = OSCARExecutor.from_env(
        {"DISTRDF_OSCAR_CLI_CONFIG": str(config), "DISTRDF_OSCAR_KEY": KEY}, **OPTIONS
    )
    assert alice.storage.config.access_key == "alice"  # connected, with the first access token
    first = alice.cluster.client.oidc_token

    started = time.time()
    assert slow_job(alice, dimuon_files) == expected
    assert started < expiry(first) < time.time()  # the token it started with expired meanwhile
    # The client goes on calling OSCAR: it deletes the OSCAR jobs that served the job.
    assert alice.wait_for_bookkeeping()
    assert left_behind(admin, alice) == {}
    # It could because it renewed the token before it expired; OSCAR now refuses the first one.
    renewed = alice.cluster.client.oidc_token
    assert expiry(renewed) > expiry(first)
    assert (answer_to(platform, first), answer_to(platform, renewed)) == (401, 200)


def test_a_fixed_access_token_expiring_mid_job_is_refused_naming_its_expiry(
    platform, admin, dimuon_files, expected, monkeypatch, capsys
):
    token = platform.oidc_options("alice")["oidc_token"]
    alice = OSCARExecutor(platform.oscar_endpoint, token=token, signing_key=KEY, **OPTIONS)
    started = time.time()
    # The job's data goes through Alice's MinIO account, whose keys do not expire ...
    assert slow_job(alice, dimuon_files) == expected
    assert started < expiry(token) < time.time()
    # ... but nothing renews the token: the OSCAR jobs that served her stay ...
    assert not alice.wait_for_bookkeeping()
    left = left_behind(admin, alice)
    assert left
    # ... and the next call is refused, naming the expiry and the fix, on one line.
    with pytest.raises(OSCARError) as refused:
        alice.cluster.services()
    message = str(refused.value)
    assert re.search(
        r"rejected the access token \(401 Unauthorized\) while trying to list services: OSCAR_TOKEN "
        r"expired at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC \(\d+ s ago\): set OSCAR_TOKEN to a new one, or "
        r"let the client renew it: OSCAR_REFRESH_TOKEN, OSCAR_OIDC_ACCOUNT \(oidc-agent\) or an "
        r"oscar-cli cluster with oidc_refresh_token$",
        message,
    ), message
    assert "\n" not in message
    assert token not in message
    # The command line says the same, on one line of its own.
    code, err = command_line(monkeypatch, capsys, OSCAR_ENDPOINT=platform.oscar_endpoint, OSCAR_TOKEN=token)
    assert code == cli.EXIT_OSCAR
    assert re.fullmatch(
        r"distrdf-oscar: error: OSCAR at \S+ rejected the access token .*OSCAR_TOKEN expired at .*\n", err
    ), err
    for service, names in left.items():
        admin.remove_jobs(service, names)


def test_an_access_token_is_renewed_in_the_last_half_of_its_life_while_still_valid(platform, admin):
    refresh_token = platform.oidc_options("alice", refresh=True)["refresh_token"]
    alice = OSCARCluster(platform.oscar_endpoint, refresh_token=refresh_token)
    alice.services()
    first = alice.client.oidc_token
    alice.services()
    assert alice.client.oidc_token == first  # not renewed while it has long to live
    # Renewed once less than half its life is left (for a real token of more than two minutes: one minute).
    time.sleep(max(0.0, expiry(first) - LIFETIME / 2 - time.time()) + 0.5)
    alice.services()
    assert alice.client.oidc_token != first
    assert answer_to(platform, first) == 200  # before it expired


def test_a_revoked_or_forged_refresh_token_is_refused_naming_it(platform, admin, monkeypatch, capsys):
    options = platform.oidc_options("alice", refresh=True)
    refresh_token = options["refresh_token"]
    # oscar-python renews an expired (here: missing) access token itself at the issuer's endpoint.
    assert Client({**options, "oidc_token": ""}).list_services().status_code == 200
    assert f"{NAME}-mapper" in OSCARCluster(platform.oscar_endpoint, refresh_token=refresh_token).services()

    revoked = requests.post(
        options["token_endpoint"].replace("/token", "/revoke"),
        data={"token": refresh_token, "client_id": options["client_id"]},
        timeout=30,
    )
    assert revoked.status_code == 200
    forged = OidcTokens("not the issuer's key", issuer=platform.oidc_issuer).refresh_token("alice")
    for token in (refresh_token, forged):
        with pytest.raises(OSCARError) as refused:
            OSCARCluster(platform.oscar_endpoint, refresh_token=token).services()
        message = str(refused.value)
        assert re.fullmatch(
            rf"could not renew the OIDC access token for {re.escape(platform.oscar_endpoint)} at "
            rf"{re.escape(options['token_endpoint'])} \(answered 400: Token is not active\): the refresh "
            r"token may have expired or been revoked \(`oscar-cli cluster add` a new one, or set "
            r"OSCAR_REFRESH_TOKEN\)",
            message,
        ), message
    code, err = command_line(
        monkeypatch, capsys, OSCAR_ENDPOINT=platform.oscar_endpoint, OSCAR_REFRESH_TOKEN=refresh_token
    )
    assert code == cli.EXIT_OSCAR
    assert re.fullmatch(r"distrdf-oscar: error: could not renew the OIDC access token .*revoked.*\n", err), (
        err
    )
