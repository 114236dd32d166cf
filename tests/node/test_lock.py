"""The lock files pin every dependency the project declares, each with hashes,
so CI (`make test`) and the images install exactly what was locked; the
runtime lock (the images) carries no development tools. A pyproject change
without `make lock` fails here, naming what is missing."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^([A-Za-z0-9._-]+)==([^\s;\\]+)")


def pins(lock: str) -> dict[str, tuple[str, int]]:
    """name -> (version, number of hashes) of every pin in a lock file."""
    found: dict[str, tuple[str, int]] = {}
    name = ""
    for line in (ROOT / lock).read_text().splitlines():
        match = PIN.match(line)
        if match:
            name = canonicalize_name(match.group(1))
            found[name] = (match.group(2), 0)
        elif line.strip().startswith("--hash=sha256:") and name:
            version, count = found[name]
            found[name] = (version, count + 1)
    return found


def declared(extra: str | None) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    reqs = [*project["project"]["dependencies"], *project["build-system"]["requires"]]
    if extra:
        reqs += project["project"]["optional-dependencies"][extra]
    return [Requirement(r) for r in reqs]


def unmet(lock: str, extra: str | None) -> list[str]:
    locked = pins(lock)
    problems = []
    for req in declared(extra):
        name = canonicalize_name(req.name)
        if name not in locked:
            problems.append(f"{req} is not pinned")
        elif not req.specifier.contains(locked[name][0], prereleases=True):
            problems.append(f"{req} but {lock} pins {locked[name][0]}")
    return problems


def test_the_runtime_lock_pins_every_runtime_dependency_and_the_build_backend() -> None:
    assert unmet("requirements.lock", None) == [], "run `make lock`"


def test_the_development_lock_pins_every_dependency_of_the_dev_extra() -> None:
    assert unmet("requirements-dev.lock", "dev") == [], "run `make lock`"


def test_every_pin_carries_hashes() -> None:
    for lock in ("requirements.lock", "requirements-dev.lock"):
        locked = pins(lock)
        assert len(locked) > 20, f"{lock} looks truncated"
        assert [n for n, (_, hashes) in locked.items() if hashes == 0] == [], f"{lock}: pins without a hash"


def test_the_runtime_lock_carries_no_development_tools() -> None:
    runtime = {canonicalize_name(r.name) for r in declared(None)}
    dev_only = {canonicalize_name(r.name) for r in declared("dev")} - runtime
    assert dev_only & set(pins("requirements.lock")) == set()


def test_both_locks_agree_on_every_shared_pin() -> None:
    runtime, dev = pins("requirements.lock"), pins("requirements-dev.lock")
    assert {n: v for n, (v, _) in runtime.items() if dev.get(n, (v, 0))[0] != v} == {}
