"""The compiled hot path (`make compile`, `vocelio_proxy.compiled`): a build runs only while every
source it was compiled from is unchanged and it matches this interpreter; otherwise pure Python
runs, and `VOCELIO_COMPILED=require` refuses in one line. In the compiled test run
(`VOCELIO_COMPILED=require`), every module listed in pyproject.toml is the compiled one."""

from __future__ import annotations

import importlib
import importlib.machinery
import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import vocelio_proxy
from vocelio_proxy import compiled

ROOT = Path(__file__).resolve().parents[2]
EXT = importlib.machinery.EXTENSION_SUFFIXES[0]


def listed() -> list[str]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return sorted(data["tool"]["vocelio"]["compiled"]["modules"])


def fake_build(builds: Path, package: Path, sources: dict[str, bytes], ext: str = EXT) -> Path:
    """A build directory as scripts/compile_hot_path.py writes it (empty extension files: only
    the selection is under test here, nothing is loaded)."""
    hashes = {}
    for module, text in sources.items():
        path = compiled.source_path(module, package)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text)
        hashes[module] = compiled.sha256_of(path)
    build = builds / compiled.build_key(ext, hashes)
    for module in sources:
        extension = build.joinpath(*module.split(".")[:-1], module.rsplit(".", 1)[1] + ext)
        extension.parent.mkdir(parents=True, exist_ok=True)
        extension.write_bytes(b"")
    (build / ("g__mypyc" + ext)).write_bytes(b"")
    manifest = {"format": compiled.MANIFEST_FORMAT, "ext_suffix": ext, "group": "g__mypyc", "modules": hashes}
    (build / compiled.MANIFEST).write_text(json.dumps(manifest))
    return build


def test_a_build_matching_its_sources_is_chosen_with_every_module(tmp_path: Path) -> None:
    package = tmp_path / "src" / "vocelio_proxy"
    build = fake_build(tmp_path / "builds", package, {"vocelio_proxy.a": b"x = 1\n", "vocelio_proxy.b.c": b"y = 2\n"})
    chosen = compiled.select_build(tmp_path / "builds", package, EXT)
    assert isinstance(chosen, compiled.Candidate), chosen
    assert chosen.key == build.name
    assert chosen.modules == ("vocelio_proxy.a", "vocelio_proxy.b.c")
    assert chosen.files["vocelio_proxy.b.c"] == build / "vocelio_proxy" / "b" / ("c" + EXT)
    assert chosen.files["g__mypyc"] == build / ("g__mypyc" + EXT)


def test_a_build_is_refused_as_a_whole_when_any_of_its_sources_changed(tmp_path: Path) -> None:
    package = tmp_path / "src" / "vocelio_proxy"
    fake_build(tmp_path / "builds", package, {"vocelio_proxy.a": b"x = 1\n", "vocelio_proxy.b.c": b"y = 2\n"})
    (package / "b" / "c.py").write_bytes(b"y = 3\n")
    refused = compiled.select_build(tmp_path / "builds", package, EXT)
    assert isinstance(refused, str)
    assert "vocelio_proxy/b/c.py changed since build" in refused
    assert "make compile" in refused


def test_a_build_for_another_python_or_missing_a_file_is_refused(tmp_path: Path) -> None:
    package = tmp_path / "src" / "vocelio_proxy"
    other = fake_build(tmp_path / "other", package, {"vocelio_proxy.a": b"x = 1\n"}, ext=".cpython-399-x.so")
    refused = compiled.check_build(other, package, EXT)
    assert isinstance(refused, str)
    assert "another Python" in refused
    build = fake_build(tmp_path / "builds", package, {"vocelio_proxy.a": b"x = 1\n"})
    (build / "vocelio_proxy" / ("a" + EXT)).unlink()
    refused = compiled.check_build(build, package, EXT)
    assert isinstance(refused, str)
    assert "lacks the extension for vocelio_proxy.a" in refused
    assert compiled.select_build(tmp_path / "none", package, EXT) == "no compiled build (run `make compile`)"


def test_the_matching_build_wins_over_stale_ones(tmp_path: Path) -> None:
    package = tmp_path / "src" / "vocelio_proxy"
    fake_build(tmp_path / "builds", package, {"vocelio_proxy.a": b"old\n"})
    current = fake_build(tmp_path / "builds", package, {"vocelio_proxy.a": b"new\n"})
    chosen = compiled.select_build(tmp_path / "builds", package, EXT)
    assert isinstance(chosen, compiled.Candidate)
    assert chosen.key == current.name


def test_an_unknown_mode_is_refused_rather_than_read_as_pure_python() -> None:
    with pytest.raises(compiled.CompiledBuildError, match="not one of auto, off, require"):
        compiled.activate({"VOCELIO_COMPILED": "yes"})
    status = compiled.activate({"VOCELIO_COMPILED": "off"})
    assert status.build is None
    assert status.label == "pure"
    assert "off" in status.line()


def test_every_listed_module_has_a_source_and_is_the_compiled_one_exactly_when_a_build_is_active() -> None:
    modules = listed()
    assert modules, "pyproject.toml lists the compiled modules"
    for module in modules:
        assert compiled.source_path(module).is_file(), module
    status = vocelio_proxy.COMPILED
    if os.environ.get("VOCELIO_COMPILED") == "require":
        assert status.build is not None, status.reason
    files = {m: str(importlib.import_module(m).__file__) for m in modules}
    if status.build is not None:
        # The compiled run: the build holds exactly the listed modules, each loaded from it.
        assert list(status.modules) == modules, "run `make compile`: the build is not of the listed modules"
        build_dir = compiled.BUILDS_DIR / status.build
        for module, file in files.items():
            assert file.endswith(EXT), (module, file)
            assert Path(file).is_relative_to(build_dir), (module, file)
    else:
        assert all(file.endswith(".py") for file in files.values()), files


def _probe(package_root: Path, mode: str, module: str) -> subprocess.CompletedProcess[str]:
    code = ("import vocelio_proxy, importlib; "
            f"m = importlib.import_module({module!r}); "
            "print(vocelio_proxy.COMPILED.label); print(m.__file__); print(vocelio_proxy.COMPILED.line())")
    env = {**os.environ, "VOCELIO_COMPILED": mode,
           "PYTHONPATH": os.pathsep.join([str(package_root), str(ROOT / "contract")])}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)


def test_an_edited_compiled_module_runs_as_python_and_require_refuses_in_one_line(tmp_path: Path) -> None:
    real = compiled.select_build(compiled.BUILDS_DIR, compiled.PACKAGE_DIR, EXT)
    if isinstance(real, str):
        pytest.skip(f"needs a compiled build of these sources (`make compile`): {real}")
    module = listed()[0]
    copy = tmp_path / "vocelio_proxy"
    shutil.copytree(compiled.PACKAGE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    ran = _probe(tmp_path, "require", module)
    assert ran.returncode == 0, ran.stderr
    label, file, _ = ran.stdout.splitlines()
    assert label == f"mypyc-{real.key}"
    assert file.endswith(EXT)

    source = compiled.source_path(module, copy)
    source.write_text(source.read_text() + "\n# an edit after `make compile`\n")
    ran = _probe(tmp_path, "auto", module)
    assert ran.returncode == 0, ran.stderr
    label, file, line = ran.stdout.splitlines()
    assert label == "pure"
    assert file == str(source)
    assert f"{source.relative_to(tmp_path)} changed since build {real.key}" in line
    ran = _probe(tmp_path, "require", module)
    assert ran.returncode == 2
    assert ran.stderr.strip().splitlines() == [
        f"vocelio-proxy: VOCELIO_COMPILED=require but {source.relative_to(tmp_path)} changed since build "
        f"{real.key} was compiled (run `make compile`)"]


def test_no_compiled_function_reuses_an_except_name_for_another_exception_type() -> None:
    """mypy lets `except A as exc:` and `except B as exc:` share a name in one function; mypyc
    gives the name one type, and the other handler then fails with a TypeError at run time (a
    500 instead of the answer). Compiled modules give each exception type its own name."""
    import ast

    clashes = []
    for module in listed():
        tree = ast.parse(compiled.source_path(module).read_text())
        for function in ast.walk(tree):
            if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            types: dict[str, set[str]] = {}
            for node in ast.walk(function):
                if isinstance(node, ast.ExceptHandler) and node.name and node.type is not None:
                    types.setdefault(node.name, set()).add(ast.unparse(node.type))
            clashes += [f"{module}.{function.name}: {name} is {sorted(kinds)}"
                        for name, kinds in types.items() if len(kinds) > 1]
    assert clashes == []


def test_no_proxy_module_decides_on_an_exception_cause() -> None:
    """mypyc ignores the `from` of `raise X from Y`: an exception raised in a compiled
    module has no `__cause__` (and `from None` hides no context). Code that decided on
    `__cause__` would decide differently compiled, and any proxy module may catch what a
    compiled one raised; what a caller needs travels in the exception's own fields
    (`UpstreamError.timed_out`)."""
    import ast

    readers = []
    for source in sorted(compiled.PACKAGE_DIR.rglob("*.py")):
        if compiled.BUILDS_DIR in source.parents:
            continue
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in ("__cause__", "__suppress_context__"):
                readers.append(f"{source.relative_to(ROOT)}:{node.lineno}")
    assert readers == []
