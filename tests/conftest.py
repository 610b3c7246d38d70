"""Shared fixtures: a small multi-file dimuon dataset, one embedded cluster per mode per session."""

from __future__ import annotations

import pytest

import ROOT

ROOT.gROOT.SetBatch(True)

DATASET_EVENTS = 24_000
DATASET_FILES = 3


@pytest.fixture(scope="session")
def dimuon_files(tmp_path_factory) -> list[str]:
    from distrdf_oscar import dataset

    return dataset.generate(str(tmp_path_factory.mktemp("dimuon")), DATASET_EVENTS, files=DATASET_FILES)


@pytest.fixture(scope="session")
def warm_cluster():
    from distrdf_oscar import LocalCluster

    with LocalCluster(workers=2, mode="warm") as cluster:
        yield cluster


@pytest.fixture(scope="session")
def cold_cluster():
    from distrdf_oscar import LocalCluster

    with LocalCluster(workers=2, mode="cold") as cluster:
        yield cluster


@pytest.fixture(scope="module")
def oscar(platform):
    """oscar-python's client for the ``platform`` fixture of the requesting test module."""
    from oscar_python.client import Client

    return Client(platform.oscar_options())


@pytest.fixture(scope="module")
def s3(platform):
    """A minio client for the ``platform`` fixture of the requesting test module."""
    return platform.minio_client()


@pytest.fixture(params=["warm", "cold"])
def cluster(request):
    return request.getfixturevalue(f"{request.param}_cluster")
