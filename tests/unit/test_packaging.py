"""pyproject.toml and requirements.lock agree, and the lock is one pip can install.

`just install` runs `pip install -c requirements.lock -e ".[dev]"`; a plain `pip install .`
reads pyproject.toml alone. Both must name the same versions, and no locked distribution may
ask for a version of another that the lock does not pin (pip would refuse the set, as it did
when unstructured, which asks for filelock<4 and installer<1, was installed --no-deps beside
filelock 4.3.1 and installer 1.1.0). unstructured-inference stays outside both: its declared
torch is why (README, "Installing without just").
"""
from __future__ import annotations

import importlib.metadata as md
import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
# Installed by `just install` with --no-deps, on purpose outside pyproject.toml and the lock.
BARE = {"unstructured-inference", "en-core-web-sm"}
TARGET = {"sys_platform": "linux", "platform_system": "Linux", "os_name": "posix",
          "platform_machine": "x86_64", "python_version": "3.11", "python_full_version": "3.11.14",
          "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": ""}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def lock() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"requirements.lock: {line!r} is not pinned with =="
            pins[canonical(name.split("[")[0])] = version
    return pins


def declared() -> list[Requirement]:
    groups = [PROJECT["dependencies"], *PROJECT["optional-dependencies"].values()]
    return [Requirement(text) for group in groups for text in group]


def test_every_declared_dependency_is_pinned_as_in_the_lock():
    pins = lock()
    problems = []
    for req in declared():
        exact = [s.version for s in req.specifier if s.operator == "=="]
        if len(exact) != 1:
            problems.append(f"{req}: pyproject.toml pins with one ==")
        elif canonical(req.name) not in pins:
            problems.append(f"{req}: not in requirements.lock")
        elif pins[canonical(req.name)] != exact[0]:
            problems.append(f"{req}: requirements.lock has {pins[canonical(req.name)]}")
    assert problems == []


def test_unstructured_is_declared_and_its_torch_bound_part_is_not():
    names = {canonical(r.name) for r in declared()}
    assert "unstructured" in names and lock()["unstructured"] == "0.27.35"
    assert not BARE & names and not BARE & set(lock())
    assert "torch" not in lock()
    justfile = (ROOT / "justfile").read_text()
    assert "--no-deps unstructured-inference==1.6.14 ./packaging/en_core_web_sm" in justfile


def test_locked_distributions_ask_for_nothing_the_lock_does_not_pin():
    """Each locked distribution installed at its locked version: every requirement it declares
    (for Linux, CPython 3.11, the extras the lock's users ask for left out) that names another
    locked distribution is met by that distribution's pin."""
    pins = lock()
    checked, problems = 0, []
    for name, version in sorted(pins.items()):
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue  # the bench extra's tree when it is not installed
        if dist.version != version:
            continue  # metadata of another version says nothing about this pin
        checked += 1
        for text in dist.requires or ():
            req = Requirement(text)
            if req.marker is not None and not req.marker.evaluate(TARGET):
                continue
            wanted = canonical(req.name)
            if wanted in pins and not req.specifier.contains(pins[wanted], prereleases=True):
                problems.append(f"{name}=={version} asks for {req}; the lock has {wanted}=={pins[wanted]}")
    assert problems == []
    # Nearly all of the lock is installed at its pins in the test environment; the check is real.
    assert checked >= 0.9 * len(pins) - 40, f"only {checked} of {len(pins)} locked distributions checked"
