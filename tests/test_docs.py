"""The docs agree with each other and with the code: the supported OSCAR releases (the table in
docs/deploy.md against the emulator's), the variables the docs name, the settings table against what
``Settings.from_env`` reads, the client image's ``docker run`` line, and the workflow that publishes
the image the code names by default (.github/workflows/images.yml)."""

from __future__ import annotations

import ast
import itertools
import re
import shlex
import tomllib
from pathlib import Path

import pytest
import yaml

import distrdf_oscar
from distrdf_oscar import check
from distrdf_oscar.client import settings
from distrdf_oscar.platform.deployment import DEFAULT_IMAGE
from distrdf_oscar.platform.embedded.versions import DEFAULT, NEWEST, OLDEST, RELEASES, OscarVersion
from distrdf_oscar.platform.oscar import cli_config

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
DEPLOY = REPO / "docs" / "deploy.md"
DOCS = [README, *sorted((REPO / "docs").glob("*.md")), REPO / "services" / "README.md"]
PACKAGE = REPO / "python" / "distrdf_oscar"
SERVICES = REPO / "services"
DOCKERFILES = sorted(path for path in SERVICES.rglob("*Dockerfile*") if path.is_file())
CLIENT_DOCKERFILE = SERVICES / "client" / "Dockerfile"
WORKFLOW = REPO / ".github" / "workflows" / "images.yml"

VERSION = distrdf_oscar.__version__
FUNCTION_REPOSITORY = DEFAULT_IMAGE.rpartition(":")[0]  # ghcr.io/distrdf-oscar/distrdf-oscar
CLIENT_REPOSITORY = FUNCTION_REPOSITORY + "-client"
REGISTRY = FUNCTION_REPOSITORY.partition("/")[0]

DASH = "\u2013"  # the en dash of the table's patch ranges, "3.6.0-3.6.3"
VARIABLE = r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+"  # OSCAR_ENDPOINT, S3_ACCESS_KEY
NAME = re.compile(rf"(?<![A-Za-z0-9_])\$?({VARIABLE})(?![A-Za-z0-9_])")
# Names in the docs' code that are no one's in this package, each with whose it is, and where in
# the repository it lives when it is there at all.
FOREIGN = {
    "LD_LIBRARY_PATH": None,  # the dynamic linker's (docs/native-core.md: not needed)
    "TTL_JOB": None,  # OSCAR's job retention, which the emulator does not model
    "KEY_A": None,  # the shell variables of an example (docs/deploy.md, several deployments)
    "KEY_B": None,
    "FAST_MODULES": "tests/conftest.py",  # the quick round's modules
    "DRO_BUILD_BENCH": "CMakeLists.txt",  # a CMake option
}
# Settings the client image's line leaves out: paths on the caller's machine (mounted instead, see
# docs/deploy.md) and oidc-agent, which the container does not run.
NOT_PASSED_TO_THE_IMAGE = {settings.KEY_FILE_VARIABLE, cli_config.PATH_VARIABLE, "OSCAR_OIDC_ACCOUNT"}


def section(text: str, heading: str) -> str:
    """The text under the heading ``## heading`` (or deeper), up to the next heading of its level."""
    match = re.search(rf"^(#+) {re.escape(heading)}\n", text, re.MULTILINE)
    assert match, f"no section {heading!r}"
    level = len(match.group(1))
    end = re.search(rf"^#{{1,{level}}} ", text[match.end() :], re.MULTILINE)
    return text[match.end() : match.end() + end.start()] if end else text[match.end() :]


def tables(text: str) -> list[list[list[str]]]:
    """Markdown tables: rows of stripped cells, the header first, without the separator row."""
    found: list[list[list[str]]] = []
    current: list[list[str]] = []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if not all(re.fullmatch(r":?-+:?", cell) for cell in cells):
                current.append(cells)
        elif current:
            found.append(current)
            current = []
    return found


def release(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def code_of(text: str) -> str:
    """The code in Markdown text: fenced blocks and inline spans."""
    fenced = re.findall(r"^```[^\n]*\n(.*?)^```", text, re.MULTILINE | re.DOTALL)
    prose = re.sub(r"^```[^\n]*\n.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)
    return "\n".join([*fenced, *re.findall(r"`([^`\n]+)`", prose)])


def setting_names() -> set[str]:
    """The variables ``Settings.from_env`` reads: settings.py's names, and oscar-cli's file's."""
    tree = ast.parse((PACKAGE / "client" / "settings.py").read_text())
    names = {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and re.fullmatch(VARIABLE, node.value)
    }
    return names | {cli_config.PATH_VARIABLE}


# -- supported releases ------------------------------------------------------------------------


def test_the_supported_release_table_is_the_emulators_releases():
    body = section(DEPLOY.read_text(), "Supported OSCAR releases")
    found = tables(body)
    assert len(found) == 1, "docs/deploy.md, Supported OSCAR releases: one table"
    header, *rows = found[0]
    assert all(len(row) == len(header) for row in rows), "a row of the release table lacks or adds a cell"
    release_tables = [
        table
        for table in tables(DEPLOY.read_text())
        if any(re.fullmatch(r"\d+\.\d+\S*", c) for c in table[0])
    ]
    assert release_tables == found, "docs/deploy.md has one table of releases, in Supported OSCAR releases"
    columns = []  # (oldest, newest) release of each column; a bare "3.7" is every 3.7.x
    for cell in header[1:]:
        match = re.fullmatch(rf"(\d+\.\d+(?:\.\d+)?)(?:{DASH}(\d+\.\d+\.\d+))?", cell)
        assert match, f"release table column {cell!r} is not a release or a range of patch releases"
        oldest = release(match.group(1))
        columns.append((oldest, release(match.group(2)) if match.group(2) else oldest))
    minors = [f"{oldest[0]}.{oldest[1]}" for oldest, _ in columns]
    assert sorted(set(minors), key=release) == sorted(RELEASES, key=release), (
        "the release table's columns are not the emulator's releases (versions.RELEASES)"
    )
    assert minors == sorted(minors, key=release), "the release table's columns are out of order"
    assert (columns[0][0][:2], columns[-1][-1][:2]) == (OLDEST[:2], NEWEST[:2])

    [newest] = [row for row in rows if row[0].startswith("newest patch release")]
    played: dict[str, tuple[int, ...]] = {}
    for (oldest, youngest), cell in zip(columns, newest[1:], strict=True):
        value = release(cell)
        assert OscarVersion.parse(cell).release == value, f"{cell} is not a release LocalCluster accepts"
        assert oldest <= value, f"{cell} lies outside its column"
        assert value[: len(youngest)] <= youngest, f"{cell} lies outside its column"
        minor = f"{value[0]}.{value[1]}"
        played[minor] = max(played.get(minor, value), value)
    assert played == RELEASES, "the release table's newest patch releases are not versions.RELEASES"


def test_every_statement_of_the_supported_range_is_the_tables():
    oldest, newest = min(RELEASES, key=release), max(RELEASES, key=release)
    # The README and deploy.md state the range ("OSCAR 3.5 to 4.1", "an OSCAR cluster of a release
    # from 3.5 to 4.1"); other docs name ranges of releases that behave alike, never the support.
    statement = re.compile(r"OSCAR[^.|]{0,40}?\b(\d+\.\d+) to (\d+\.\d+)\b")
    for path in (README, DEPLOY):
        said = statement.findall(re.sub(r"\s+", " ", path.read_text()))
        assert said, f"{path.relative_to(REPO)} does not state the supported releases"
        assert set(said) == {(oldest, newest)}, (
            f"{path.relative_to(REPO)} states {said}: the supported releases are {oldest} to {newest} "
            "(versions.RELEASES, the table in docs/deploy.md)"
        )
    # Nor is any newer release promised: the emulator models none.
    open_ended = re.compile(r"OSCAR[^.|]{0,40}?\b\d+\.\d+(?:\.\d+)? or later")
    for path in DOCS:
        found = open_ended.search(re.sub(r"\s+", " ", path.read_text()))
        assert not found, f"{path.relative_to(REPO)} says {found.group(0)!r}: {oldest} to {newest}"
    readme = README.read_text()
    assert "docs/deploy.md#supported-oscar-releases" in readme, "the README points to the release table"
    assert f"default {DEFAULT})" in readme, "the README names the emulator's default release"
    # `distrdf-oscar check` refuses what the table does not list.
    assert check.SUPPORTED == (OLDEST, NEWEST)
    assert f"({oldest} to {newest})" in (PACKAGE / "check.py").read_text()


# -- variables ---------------------------------------------------------------------------------


def test_every_name_the_docs_give_in_code_exists_in_the_code():
    source = "\n".join(
        path.read_text()
        for path in [*PACKAGE.rglob("*.py"), *SERVICES.rglob("*"), *WORKFLOW.parent.glob("*.yml")]
        if path.is_file() and path.suffix not in {".md"}
    )
    missing = {}
    for path in DOCS:
        for name in NAME.findall(code_of(path.read_text())):
            if name not in FOREIGN and not re.search(rf"(?<![A-Za-z0-9]){name}(?![A-Za-z0-9_])", source):
                missing.setdefault(name, []).append(str(path.relative_to(REPO)))
    assert not missing, f"the docs name variables the code does not have: {missing}"
    documented = "\n".join(code_of(path.read_text()) for path in DOCS)
    for name, where in FOREIGN.items():
        assert re.search(rf"\b{name}\b", documented), f"FOREIGN lists {name}, which no doc names any more"
        if where:
            assert name in (REPO / where).read_text(), f"{name} is no longer in {where}"


def test_the_settings_table_is_what_from_env_reads():
    body = section(DEPLOY.read_text(), "3. Settings")
    [table] = tables(body)
    assert table[0] == ["variable", "meaning"]
    listed = {name for row in table[1:] for name in re.findall(r"`([A-Z0-9_]+)`", row[0])}
    assert listed == setting_names(), (
        f"docs/deploy.md's settings table lists {sorted(listed - setting_names())} that from_env does "
        f"not read, and lacks {sorted(setting_names() - listed)} that it does"
    )


def test_minio_endpoint_may_be_set_alone_as_the_docs_say():
    env = {
        "OSCAR_ENDPOINT": "https://oscar.example.org",
        "OSCAR_TOKEN": "a-token",
        "DISTRDF_OSCAR_KEY": "0123456789abcdef0123456789abcdef",
        "MINIO_ENDPOINT": "https://minio.example.org",
    }
    alone = settings.Settings.from_env(env)
    assert (alone.storage_endpoint, alone.storage) == ("https://minio.example.org", None)
    with pytest.raises(settings.ConfigurationError, match="MINIO_SECRET_KEY"):
        settings.Settings.from_env({**env, "MINIO_ACCESS_KEY": "ak"})
    row = next(row for row in tables(section(DEPLOY.read_text(), "3. Settings"))[0] if "MINIO" in row[0])
    assert "`MINIO_ENDPOINT` alone" in row[1]
    assert re.search(r"MINIO_ENDPOINT\s+(#\s+)?alone", README.read_text()), "the README says so too"
    for path in [*DOCS, *DOCKERFILES]:  # never "all three or none"
        assert not re.search(r"MINIO_ENDPOINT[^.]{0,80}(go together|must be set together)", path.read_text())


# -- the client image ----------------------------------------------------------------------------


def docker_run_lines() -> list[tuple[Path, str]]:
    """Every ``docker run`` command of the docs and the Dockerfiles' comments, continuations joined."""
    found = []
    for path in [*DOCS, *DOCKERFILES]:
        lines = path.read_text().splitlines()
        if path in DOCKERFILES:
            lines = [re.sub(r"^#\s?", "", line) for line in lines if line.startswith("#")]
        for i, line in enumerate(lines):
            if line.strip().startswith("docker run "):
                command = line.strip()
                while command.endswith("\\"):
                    i += 1
                    command = command[:-1] + " " + lines[i].strip()
                found.append((path, command))
    return found


def test_the_client_images_docker_run_line_runs_as_written():
    lines = docker_run_lines()
    places = {path for path, _ in lines}
    assert {DEPLOY, CLIENT_DOCKERFILE} <= places
    workdir = re.findall(r"^WORKDIR\s+(\S+)", CLIENT_DOCKERFILE.read_text(), re.MULTILINE)[-1]
    wanted = setting_names() - NOT_PASSED_TO_THE_IMAGE
    for path, command in lines:
        where = f"{path.relative_to(REPO)}: {command}"
        assert not re.search(r"[\[\]<>…]|\.\.\.|REGISTRY", command), f"a placeholder in {where}"
        args = shlex.split(command)
        assert args[:3] == ["docker", "run", "--rm"], where
        assert "--network=host" in args or ("--network", "host") in itertools.pairwise(args), where
        assert not {"-p", "--publish"} & set(args), f"host networking discards published ports: {where}"
        volumes = [value for flag, value in itertools.pairwise(args) if flag in ("-v", "--volume")]
        assert any(re.fullmatch(rf"\$(PWD|\(pwd\)):{re.escape(workdir)}/\w+", v) for v in volumes), (
            f"the current folder is not mounted under the image's {workdir}: {where}"
        )
        passed = [value for flag, value in itertools.pairwise(args) if flag in ("-e", "--env")]
        assert all(re.fullmatch(r"[A-Z][A-Z0-9_]*", name) for name in passed), (
            f"-e NAME only, taken from the caller's environment, never a value: {where}"
        )
        assert set(passed) == wanted, (
            f"{where} does not pass {sorted(wanted - set(passed))} / passes {sorted(set(passed) - wanted)}"
        )
        assert args[-1] == f"{CLIENT_REPOSITORY}:{VERSION}", where
    assert len({tuple(shlex.split(command)) for _, command in lines}) == 1, "the docker run lines differ"


def test_image_references_name_the_published_images_at_this_version():
    published = re.compile(rf"{re.escape(REGISTRY)}/[\w.-]+/[\w.-]+(?::[^\s`'\"),]+)?")
    for path in [*DOCS, *DOCKERFILES, WORKFLOW]:
        for reference in published.findall(path.read_text()):
            repository, _, tag = reference.rstrip(".;:").partition(":")
            assert repository in (FUNCTION_REPOSITORY, CLIENT_REPOSITORY), f"{path.name}: {reference}"
            assert tag in ("", VERSION, "<version>"), f"{path.name}: {reference} is not version {VERSION}"
    assert f"{FUNCTION_REPOSITORY}:{VERSION}" == DEFAULT_IMAGE
    default = re.search(r"^ARG FUNCTION_IMAGE=(\S+)$", CLIENT_DOCKERFILE.read_text(), re.MULTILINE)
    assert default, "the client image names its function image in ARG FUNCTION_IMAGE"
    assert default.group(1) == DEFAULT_IMAGE, "the client image builds on the default function image"


# -- the workflow that publishes them -------------------------------------------------------------


def test_the_workflow_builds_every_dockerfile_and_pushes_where_the_code_points():
    workflow = yaml.safe_load(WORKFLOW.read_text())
    env = workflow["env"]

    def resolved(value: object) -> str:
        return re.sub(r"\$\{\{\s*env\.(\w+)\s*\}\}", lambda m: str(env[m.group(1)]), str(value)).strip()

    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as true
    assert "main" in triggers["push"]["branches"], "the workflow runs on pushes to main"
    assert triggers["push"]["tags"], "the workflow runs on tags"
    assert workflow["permissions"]["packages"] == "write"
    steps = [step for job in workflow["jobs"].values() for step in job["steps"]]

    def using(action: str) -> list[dict]:
        return [step for step in steps if step.get("uses", "").startswith(action + "@")]

    [login] = using("docker/login-action")
    assert resolved(login["with"]["registry"]) == REGISTRY
    assert "secrets.GITHUB_TOKEN" in login["with"]["password"]

    [version] = [step for step in steps if step.get("id") == "version"]
    assert "pyproject.toml" in version["run"], "the images are tagged with the package's version"
    assert '["project"]["version"]' in version["run"], "the images are tagged with the package's version"
    assert tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"] == VERSION
    metadata = {step["id"]: step["with"] for step in using("docker/metadata-action")}

    images = {}
    for build in using("docker/build-push-action"):
        options = build["with"]
        assert options["push"] is True, f"the workflow builds {options['file']} without pushing it"
        assert resolved(options["context"]) == ".", "the build context is the repository root"
        match = re.fullmatch(r"\$\{\{\s*steps\.([\w-]+)\.outputs\.tags\s*\}\}", options["tags"].strip())
        assert match, f"{options['file']}: tags from a docker/metadata-action step"
        tags = metadata[match.group(1)]
        assert "${{ steps.version.outputs.version }}" in tags["tags"]
        assert "type=raw,value=latest,enable={{is_default_branch}}" in tags["tags"]
        images[options["file"]] = resolved(tags["images"])
    assert set(images) == {str(path.relative_to(REPO)) for path in DOCKERFILES}, (
        "the workflow does not build every Dockerfile under services/"
    )
    assert images["services/Dockerfile"] == FUNCTION_REPOSITORY, "not where DEFAULT_IMAGE points"
    assert images["services/client/Dockerfile"] == CLIENT_REPOSITORY, "not beside DEFAULT_IMAGE"
    [client] = [
        b for b in using("docker/build-push-action") if b["with"]["file"] == "services/client/Dockerfile"
    ]
    [function] = [b for b in using("docker/build-push-action") if b["with"]["file"] == "services/Dockerfile"]
    assert resolved(client["with"]["build-args"]) == (
        f"FUNCTION_IMAGE={FUNCTION_REPOSITORY}@${{{{ steps.{function['id']}.outputs.digest }}}}"
    )
