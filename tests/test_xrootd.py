"""Datasets served over XRootD (``root://``): a real ``xrootd`` on loopback (embedded/xrootd.py)."""

from __future__ import annotations

import os

import pytest
import ROOT

import distrdf_oscar as dro
from compare import assert_same_value
from distrdf_oscar.demo.analysis import book_dimuon_spectrum
from distrdf_oscar.platform.embedded.xrootd import XRootDMissing, XRootDServer
from distrdf_oscar.protocol import datasets, layout

pytestmark = pytest.mark.usefixtures("secret_scan")  # conftest.py: these jobs' objects and logs are searched


def _start() -> XRootDServer:
    try:
        return XRootDServer()
    except XRootDMissing as missing:
        if os.environ.get("CI"):
            pytest.fail(str(missing))  # CI installs it: never skip there
        pytest.skip(str(missing))


@pytest.fixture(scope="module")
def server():
    served = _start()
    yield served
    served.close()


@pytest.fixture(scope="module")
def urls(server, dimuon_files):
    return [server.add(path) for path in dimuon_files]


@pytest.fixture(scope="module")
def local_spectrum(dimuon_files):
    return {
        name: result.GetValue()
        for name, result in book_dimuon_spectrum(ROOT.RDataFrame("Events", dimuon_files)).items()
    }


def _job_keys(executor) -> list[str]:
    return [k for k in executor.storage.list("") if layout.job_of_key(k)]


def test_one_process_reads_a_loopback_url_with_the_setting_the_backend_makes(urls, dimuon_files):
    # ROOT alone takes root://127.0.0.1//f.root for the local file /f.root; every distributed
    # dataframe of ours, and every mapper, sets TFile.ForceRemote first (datasets.read_urls_remotely).
    datasets.read_urls_remotely(ROOT)
    assert (
        ROOT.RDataFrame("Events", urls).Count().GetValue()
        == ROOT.RDataFrame("Events", dimuon_files).Count().GetValue()
    )


@pytest.mark.parametrize(
    ("mode", "reduction"),
    [
        ("prestarted", dro.TreeReduction(fan_in=2)),
        ("prestarted", dro.CoordinatedReduction()),
        ("cold", dro.CoordinatedReduction()),
    ],
)
def test_dimuon_analysis_over_xrootd_is_identical(request, urls, local_spectrum, mode, reduction):
    executor = request.getfixturevalue(f"{mode}_cluster").executor(reduction=reduction, progress=False)
    # No shared folder: the functions read nothing from the client's disk.
    executor.shared_paths = ()
    results = book_dimuon_spectrum(ROOT.RDataFrame("Events", urls, executor=executor, npartitions=4))
    for name, result in results.items():
        assert_same_value(result.GetValue(), local_spectrum[name], name)
    assert _job_keys(executor) == []


@pytest.mark.timeout(200)
def test_a_server_that_disappears_fails_the_job_naming_it(prestarted_cluster, dimuon_files):
    vanishing = _start()
    try:
        urls = [vanishing.add(path) for path in dimuon_files]
        executor = prestarted_cluster.executor(progress=False, retry_after=5)
        df = ROOT.RDataFrame("Events", urls, executor=executor, npartitions=3)
        count = df.Filter("nMuon > 1").Count()  # booked while the server was up (the client read it)
        vanishing.stop()
        with pytest.raises(dro.RemoteError) as failed:
            count.GetValue()
        message = str(failed.value)
        assert f"127.0.0.1:{vanishing.port}" in message
        assert _job_keys(executor) == []
    finally:
        vanishing.close()
