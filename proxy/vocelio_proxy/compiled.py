"""Which hot-path modules run compiled (mypyc), and the guard that keeps a stale build out.

Owns: choosing a compiled build of the hot-path modules (made by `make compile`, see
`scripts/compile_hot_path.py`) and putting its extension modules in front of the pure-Python
ones. A build lives in `_compiled/<key>/` next to this file with a `manifest.json` naming each
compiled module and the SHA-256 of the source it was compiled from. A build is used only when
every one of those sources is byte-identical to the `.py` file beside it now and the build was
made for this interpreter's ABI; otherwise the whole build is ignored (its modules share one
native library and call each other directly, so half a build is never safe) and the pure modules
run. Editing a compiled module therefore switches it back to Python until the next `make
compile`; it can never run stale native code.

`VOCELIO_COMPILED` chooses: `auto` (default: the matching build if there is one, else pure
Python), `off` (always pure; development and the pure test run), `require` (refuse to start
without a matching build; the compiled test run and images).

Called once by `vocelio_proxy/__init__.py`, before any hot-path module is imported; the result
(`STATUS`) is read by the metrics (`vocelio_build_info{compiled}`) and the startup log line. The
import hook is the only process-wide change, made once at import time. Standard library only:
it runs before anything else of the proxy."""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import NamedTuple

MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
ENV = "VOCELIO_COMPILED"
MODES = ("auto", "off", "require")
PACKAGE_DIR = Path(__file__).resolve().parent
BUILDS_DIR = PACKAGE_DIR / "_compiled"


class CompiledBuildError(RuntimeError):
    """`VOCELIO_COMPILED=require` and no usable build (the message says why and what to run)."""


class Status(NamedTuple):
    """What this process runs: `modules` compiled from build `build`, or pure Python and why."""

    mode: str
    build: str | None
    modules: tuple[str, ...]
    reason: str

    @property
    def label(self) -> str:
        """The bounded `compiled` label of `vocelio_build_info`: `pure` or `mypyc-<build>`."""
        return f"mypyc-{self.build}" if self.build else "pure"

    def line(self) -> str:
        """One log line for the operator of the process."""
        if self.build:
            return f"hot path compiled with mypyc (build {self.build}): {len(self.modules)} modules"
        return f"hot path runs as pure Python: {self.reason}"


class Candidate(NamedTuple):
    """A build directory whose manifest matches the sources: module name → extension file."""

    key: str
    files: Mapping[str, Path]
    modules: tuple[str, ...]


def source_path(module: str, package_dir: Path = PACKAGE_DIR) -> Path:
    """`vocelio_proxy.wire.http1.framing` → `<package_dir>/wire/http1/framing.py`."""
    head, *rest = module.split(".")
    if head != package_dir.name or not rest:
        raise ValueError(f"{module} is not a module of {package_dir.name}")
    return package_dir.joinpath(*rest[:-1], rest[-1] + ".py")


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build_key(ext_suffix: str, sources: Mapping[str, str]) -> str:
    """The directory name of a build: a hash of the ABI and every module's source hash."""
    canonical = json.dumps({"ext_suffix": ext_suffix, "modules": dict(sorted(sources.items()))}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def check_build(build_dir: Path, package_dir: Path, ext_suffix: str) -> Candidate | str:
    """The build in `build_dir` if it was compiled from exactly the sources in `package_dir` for
    `ext_suffix`, else the reason it is refused (one sentence naming the first mismatch)."""
    try:
        manifest = json.loads((build_dir / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        return f"build {build_dir.name} has no readable manifest ({exc.__class__.__name__})"
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        return f"build {build_dir.name} has an unknown manifest format"
    if manifest.get("ext_suffix") != ext_suffix:
        return f"build {build_dir.name} is for another Python ({manifest.get('ext_suffix')}, this is {ext_suffix})"
    modules = manifest.get("modules")
    group = manifest.get("group")
    if not isinstance(modules, dict) or not modules or not isinstance(group, str):
        return f"build {build_dir.name} lists no modules"
    files: dict[str, Path] = {}
    for module, digest in sorted(modules.items()):
        try:
            source = source_path(module, package_dir)
            current = sha256_of(source)
        except (OSError, ValueError):
            return f"build {build_dir.name} compiled {module}, whose source is missing here"
        if current != digest:
            rel = source.relative_to(package_dir.parent)
            return f"{rel} changed since build {build_dir.name} was compiled (run `make compile`)"
        extension = build_dir.joinpath(*module.split(".")[:-1], module.rsplit(".", 1)[-1] + ext_suffix)
        if not extension.is_file():
            return f"build {build_dir.name} lacks the extension for {module}"
        files[module] = extension
    library = build_dir / (group + ext_suffix)
    if not library.is_file():
        return f"build {build_dir.name} lacks its shared library {group}"
    files[group] = library
    return Candidate(build_dir.name, files, tuple(sorted(modules)))


def select_build(builds_dir: Path, package_dir: Path, ext_suffix: str) -> Candidate | str:
    """The matching build under `builds_dir` (the one with most modules, then the newest), or why none."""
    try:
        dirs = sorted((d for d in builds_dir.iterdir() if d.is_dir() and not d.name.startswith(".")),
                      key=lambda d: d.stat().st_mtime, reverse=True)
    except OSError:
        dirs = []
    if not dirs:
        return "no compiled build (run `make compile`)"
    reasons: list[str] = []
    found: list[Candidate] = []
    for build_dir in dirs:
        checked = check_build(build_dir, package_dir, ext_suffix)
        if isinstance(checked, str):
            reasons.append(checked)
        else:
            found.append(checked)
    if found:
        return max(found, key=lambda c: len(c.modules))  # max keeps the first (newest) of equals
    return reasons[0]


class _CompiledFinder(importlib.abc.MetaPathFinder):
    """Serves exactly the modules of one checked build from their extension files."""

    def __init__(self, files: Mapping[str, Path]) -> None:
        self._files = dict(files)

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        file = self._files.get(fullname)
        if file is None:
            return None
        loader = importlib.machinery.ExtensionFileLoader(fullname, str(file))
        return importlib.util.spec_from_file_location(fullname, file, loader=loader)


def _ext_suffix() -> str:
    return importlib.machinery.EXTENSION_SUFFIXES[0]


def activate(environ: Mapping[str, str] = os.environ, builds_dir: Path = BUILDS_DIR) -> Status:
    """Choose per `VOCELIO_COMPILED` and, when a build matches, put its finder first on the
    import path. Raises `CompiledBuildError` for `require` without a matching build, and for an
    unknown mode (a typo must not silently mean pure Python)."""
    mode = environ.get(ENV, "auto").strip().lower() or "auto"
    if mode not in MODES:
        raise CompiledBuildError(f"{ENV}={mode!r} is not one of {', '.join(MODES)}")
    if mode == "off":
        return Status(mode, None, (), f"{ENV}=off")
    chosen = select_build(builds_dir, PACKAGE_DIR, _ext_suffix())
    if isinstance(chosen, str):
        if mode == "require":
            raise CompiledBuildError(f"{ENV}=require but {chosen}")
        return Status(mode, None, (), chosen)
    already = sorted(m for m in chosen.modules if m in sys.modules)
    if already:
        # Too late for this process: mixing would run some callers against pure copies.
        reason = f"{already[0]} was imported before the compiled build could be installed"
        if mode == "require":
            raise CompiledBuildError(f"{ENV}=require but {reason}")
        return Status(mode, None, (), reason)
    sys.meta_path.insert(0, _CompiledFinder(chosen.files))
    return Status(mode, chosen.key, chosen.modules, "")
