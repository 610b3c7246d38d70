"""The tutorials execute top to bottom (their own cells assert the results against one process),
their real-cluster cells run against an OSCAR REST API, and the client image ships what exists."""

from __future__ import annotations

import re
import secrets
import tomllib
from pathlib import Path

import pytest

from distrdf_oscar import cli

nbformat = pytest.importorskip("nbformat", reason="nbformat is part of the test extra")
nbclient = pytest.importorskip("nbclient", reason="nbclient is part of the test extra")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[1]
TUTORIALS = REPO / "tutorials"
NOTEBOOKS = sorted(TUTORIALS.glob("*.ipynb"))
CLIENT_DOCKERFILE = REPO / "services" / "client" / "Dockerfile"
SETTINGS = (
    "OSCAR_ENDPOINT",
    "OSCAR_USER",
    "OSCAR_PASSWORD",
    "OSCAR_TOKEN",
    "OSCAR_SSL_VERIFY",
    "DISTRDF_OSCAR_KEY",
    "DISTRDF_OSCAR_DEPLOYMENT",
    "MINIO_ENDPOINT",
    "MINIO_ACCESS_KEY",
    "MINIO_SECRET_KEY",
)
EVENTS = 200_000  # enough for a spectrum with every peak, small enough for CI

PLATFORM = {"workers": 2, "mode": "prestarted"}  # the "real cluster" of the cluster cells (conftest.py)


@pytest.fixture(scope="module")
def workplace(tmp_path_factory) -> Path:
    """The client image's layout: tutorials/ beside benchmarks/ and docs/ (the notebooks' ``..``)."""
    root = tmp_path_factory.mktemp("client-home")
    (root / "tutorials").mkdir()
    (root / "benchmarks").symlink_to(REPO / "benchmarks")
    (root / "docs").symlink_to(REPO / "docs")
    return root


@pytest.fixture
def kernel_environment(workplace, monkeypatch):
    """What the notebooks read, and none of a cluster's settings (the kernel inherits this process's)."""
    for name in SETTINGS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TUTORIAL_EVENTS", str(EVENTS))
    monkeypatch.setenv("TUTORIAL_DATA", str(workplace / "data"))
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend draws the figures
    return monkeypatch


def execute(notebook, workplace: Path):
    """Run ``notebook`` in a fresh kernel inside the workplace's tutorials/; cell errors raise."""
    client = nbclient.NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(workplace / "tutorials")}},
    )
    client.execute()
    return notebook


def printed(notebook) -> str:
    return "".join(
        output.get("text", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if output.output_type == "stream"
    )


def images(notebook) -> int:
    return sum(
        "image/png" in output.get("data", {})
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
    )


def test_notebooks_are_stored_valid_and_without_outputs():
    assert {p.name for p in NOTEBOOKS} == {"dimuon-analysis.ipynb", "benchmarks.ipynb"}
    for path in NOTEBOOKS:
        notebook = nbformat.read(path, as_version=4)
        nbformat.validate(notebook)
        for cell in notebook.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [], f"{path.name}: outputs kept"
                assert cell.execution_count is None, f"{path.name}: execution counts kept"


def test_dimuon_tutorial_matches_one_process_and_skips_the_cluster_saying_so(kernel_environment, workplace):
    notebook = execute(nbformat.read(TUTORIALS / "dimuon-analysis.ipynb", as_version=4), workplace)
    text = printed(notebook)
    for label in ("tree reduction", "coordinated [6, 3]", "cold functions"):
        assert f"{label}: same as one process, bin by bin" in text
    assert "refused: coordinated plan [4, 4] does not merge 8 partials exactly once" in text
    assert "entries in the live histogram as partials arrived: [" in text
    assert "Skipping the real-cluster cells: OSCAR_ENDPOINT is not set" in text
    assert images(notebook) == 1
    assert (workplace / "tutorials" / "dimuon_spectrum.png").stat().st_size > 10_000


def test_the_real_cluster_cells_run_against_an_oscar_api(kernel_environment, workplace, platform, capsys):
    """The cells an analyst runs on her cluster, against the embedded platform's OSCAR REST API,
    spoken to only through the settings the client image passes (after the operator's deploy)."""
    settings = {
        "OSCAR_ENDPOINT": platform.oscar_endpoint,
        "OSCAR_USER": platform.oscar_user,
        "OSCAR_PASSWORD": platform.oscar_password,
        "DISTRDF_OSCAR_KEY": secrets.token_hex(32),
    }
    for name, value in settings.items():
        kernel_environment.setenv(name, value)
    assert cli.main(["deploy"]) == 0, capsys.readouterr()
    notebook = nbformat.read(TUTORIALS / "dimuon-analysis.ipynb", as_version=4)
    tagged = [cell for cell in notebook.cells if {"setup", "cluster"} & set(cell.metadata.get("tags", []))]
    assert len(tagged) == 4
    notebook.cells = tagged
    text = printed(execute(notebook, workplace))
    assert "Skipping" not in text
    for reduction in ("TreeReduction(fan_in=4)", "CoordinatedReduction(batches=[6, 3])"):
        assert f"{platform.oscar_endpoint}, {reduction}: same as one process, bin by bin" in text


def test_benchmarks_notebook_runs_the_benchmark_and_plots_it(kernel_environment, workplace):
    kernel_environment.setenv("TUTORIAL_SKIP_COLD", "1")  # cold functions have their own tests
    notebook = execute(nbformat.read(TUTORIALS / "benchmarks.ipynb", as_version=4), workplace)
    text = printed(notebook)
    assert "oscar warm coordinated" in text
    assert "dask" in text
    assert images(notebook) == 2
    assert list((workplace / "tutorials" / "benchmark-results").glob("e2e-*.png"))


def test_client_image_copies_what_exists_and_installs_an_extra_that_exists():
    text = CLIENT_DOCKERFILE.read_text()
    copies = re.findall(r"^COPY\s+(?:--\S+\s+)*(\S+)\s+\S+$", text, re.MULTILINE)
    assert {"tutorials/", "benchmarks/", "docs/benchmarks/"} <= set(copies)
    for source in copies:
        assert (REPO / source).exists(), f"the client image copies {source}, which is not in the tree"
    ignored = [line.rstrip("/") for line in (REPO / ".dockerignore").read_text().split()]
    for source in copies:
        assert not any((source.rstrip("/") + "/").startswith(pattern + "/") for pattern in ignored), (
            f".dockerignore leaves {source} out of the build context"
        )
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    installed = re.findall(r'"distrdf-oscar\[(\w+)\]"', text)
    assert installed == ["client"]
    assert {"jupyterlab", "ipywidgets"} <= {re.split(r"[<>=\[ ]", r)[0] for r in extras["client"]}
    assert "ARG FUNCTION_IMAGE" in text
    assert "FROM ${FUNCTION_IMAGE}" in text
    for name in ("OSCAR_ENDPOINT", "OSCAR_TOKEN", "DISTRDF_OSCAR_KEY"):
        assert name in text
        assert name in (REPO / "docs" / "deploy.md").read_text()
