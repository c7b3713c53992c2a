"""environment.yml names exactly the dependencies of pyproject.toml (runtime + dev)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]


def parse_environment(text: str) -> dict:
    """Tiny parser for the subset of YAML conda environment files use:
    ``name:``, ``channels:`` and ``dependencies:`` lists, and one nested ``- pip:`` list."""
    env: dict = {"name": None, "channels": [], "conda": [], "pip": []}
    section = None
    in_pip = False
    pip_indent = -1
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].rstrip() if not raw.lstrip().startswith("#") else ""
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        body = line.strip()
        if indent == 0:
            key, _, value = body.partition(":")
            section, in_pip = key.strip(), False
            if section == "name":
                env["name"] = value.strip()
            continue
        if not body.startswith("- "):
            raise ValueError(f"unexpected line in environment.yml: {raw!r}")
        item = body[2:].strip()
        if section == "channels":
            env["channels"].append(item)
        elif section == "dependencies":
            if in_pip and indent > pip_indent:
                env["pip"].append(item)
            elif item == "pip:":
                in_pip, pip_indent = True, indent
            else:
                in_pip = False
                env["conda"].append(item)
    return env


@pytest.fixture(scope="module")
def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


@pytest.fixture(scope="module")
def env() -> dict:
    return parse_environment((ROOT / "environment.yml").read_text())


def _pip_requirements(env: dict) -> dict[str, Requirement]:
    reqs = {}
    for item in env["pip"]:
        if item.startswith("-"):
            continue  # -e ., option lines
        r = Requirement(item)
        assert canonicalize_name(r.name) not in reqs, f"{r.name} listed twice"
        reqs[canonicalize_name(r.name)] = r
    return reqs


def _project_requirements(pyproject: dict) -> dict[str, Requirement]:
    """Runtime and every extra's requirements, without self-references (``attnviz[lab]``)."""
    project = pyproject["project"]
    items = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        items += extra
    reqs = {canonicalize_name(Requirement(i).name): Requirement(i) for i in items}
    reqs.pop(canonicalize_name(project["name"]), None)
    return reqs


def test_parser_reads_nested_pip_list():
    env = parse_environment(
        "name: x\nchannels:\n  - conda-forge\ndependencies:\n  - python=3.11\n  - pip\n"
        "  - pip:\n      - torch==2.14.1  # pinned\n      - -e .\n  - numpy\n"
    )
    assert env == {
        "name": "x",
        "channels": ["conda-forge"],
        "conda": ["python=3.11", "pip", "numpy"],
        "pip": ["torch==2.14.1", "-e ."],
    }


def test_name_python_and_package(env, pyproject):
    assert env["name"] == "attnviz"
    assert "python=3.11" in env["conda"] and "pip" in env["conda"]
    assert "3.11" in SpecifierSet(pyproject["project"]["requires-python"])
    assert any(re.fullmatch(r"-e \.(\[dev\])?", i) for i in env["pip"]), "installs attnviz itself"


def test_dev_extra_installs_every_other_extra(pyproject):
    """`make test` installs `.[dev]`: it must pull in every optional part."""
    extras = pyproject["project"]["optional-dependencies"]
    selves = [Requirement(i) for i in extras["dev"] if Requirement(i).name == "attnviz"]
    included = set().union(*(r.extras for r in selves))
    assert included == set(extras) - {"dev"}


def test_every_pyproject_dependency_is_in_environment(env, pyproject):
    missing = sorted(set(_project_requirements(pyproject)) - set(_pip_requirements(env)))
    assert not missing, f"in pyproject.toml but not in environment.yml: {missing}"


def test_every_environment_dependency_is_in_pyproject(env, pyproject):
    extra = sorted(set(_pip_requirements(env)) - set(_project_requirements(pyproject)))
    assert not extra, f"in environment.yml but not in pyproject.toml: {extra}"


def test_pins_match_constraints_and_pyproject(env, pyproject):
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            r = Requirement(line)
            pins[canonicalize_name(r.name)] = r
    assert {"torch", "torchvision"} <= set(pins)
    reqs, project = _pip_requirements(env), _project_requirements(pyproject)
    for name, pin in pins.items():
        assert str(reqs[name].specifier) == str(pin.specifier), name
        (version,) = [s.version for s in pin.specifier]
        assert version in project[name].specifier, f"pin {name}=={version} outside pyproject"
    for name, req in reqs.items():  # the unpinned ones keep pyproject's ranges
        if name not in pins:
            assert req.specifier == project[name].specifier, name
