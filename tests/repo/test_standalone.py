"""The repository stands alone: nothing it tracks points outside it, the design is in
docs/design.md, and the package builds without warnings and ships its migrations."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OUTSIDE = re.compile(r"\.\./shared\b|(?<![\w/.])shared/(design|clickhouse|fixtures)\b")


def tracked() -> list[Path]:
    out = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    return [ROOT / name for name in out.decode().split("\0") if name]


def test_no_tracked_file_points_outside_the_repository() -> None:
    offenders = []
    for path in tracked():
        if not path.is_file():
            continue
        try:
            text = path.read_text("utf-8")
        except UnicodeDecodeError:
            continue  # images
        for n, line in enumerate(text.splitlines(), 1):
            if OUTSIDE.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert offenders == []


@pytest.mark.parametrize("source", ["README.md", "deploy/README.md"], ids=["readme", "deploy"])
def test_the_design_is_linked_inside_the_repository(source: str) -> None:
    assert (ROOT / "docs" / "design.md").is_file()
    assert "docs/design.md" in (ROOT / source).read_text()


def test_every_python_package_is_packaged() -> None:
    """The build declares every folder with an __init__.py or a .sql/.js file it ships."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    project = config["project"]
    assert isinstance(project["license"], str)  # SPDX expression, not the deprecated table
    find = config["tool"]["setuptools"]["packages"]["find"]
    assert set(find["include"]) >= {"collector*", "aggregator*"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("wheel")
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "-w", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr
    [whl] = out.glob("streamtally-*.whl")
    return whl, built.stdout + built.stderr


def test_the_wheel_ships_the_migrations_and_static_files(wheel: tuple[Path, str]) -> None:
    names = set(zipfile.ZipFile(wheel[0]).namelist())
    migrations = {p.name for p in (ROOT / "aggregator" / "storage" / "migrations").glob("*.sql")}
    assert migrations
    assert {f"aggregator/storage/migrations/{m}" for m in migrations} <= names
    assert "aggregator/api/static/index.html" in names


def test_the_build_prints_no_setuptools_warning(wheel: tuple[Path, str]) -> None:
    log = wheel[1]
    problems = [
        line
        for line in log.splitlines()
        if re.search(r"Deprecat|SetuptoolsWarning|Package would be ignored|_Warning", line)
    ]
    assert problems == []


def test_pip_install_in_a_fresh_venv_works_and_finds_the_migrations(
    tmp_path: Path, wheel: tuple[Path, str]
) -> None:
    venv.create(tmp_path / "v", with_pip=True)
    python = tmp_path / "v" / "bin" / "python"
    done = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", str(wheel[0])],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    probe = (
        "import importlib.resources as r;"
        "print(sorted(p.name for p in"
        " r.files('aggregator.storage').joinpath('migrations').iterdir()"
        " if p.name.endswith('.sql')))"
    )
    listed = subprocess.run(
        [str(python), "-c", probe], capture_output=True, text=True, cwd=tmp_path
    )
    assert "0001_accounts.sql" in listed.stdout, listed.stderr
