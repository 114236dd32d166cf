"""`make compile`: compile the proxy's hot-path modules with mypyc into a build that cannot go stale.

The modules are listed once, in pyproject.toml (`[tool.vocelio.compiled] modules`). The build goes
to `proxy/vocelio_proxy/_compiled/<key>/` (git-ignored), where `<key>` hashes the interpreter's ABI
and every listed source; its `manifest.json` records each source's SHA-256. The proxy uses a build
only while every recorded source is unchanged (`vocelio_proxy.compiled`), so an edited module runs
as Python until the next `make compile`. A build for the same sources is reused (a no-op in
seconds); older builds are removed. Any module mypyc cannot compile fails the command.

Used by `make compile`, `make test` (the compiled test run) and Dockerfile.proxy's build stage
(`--builds-dir` into the package before the wheel is installed)."""

from __future__ import annotations

import argparse
import importlib.machinery
import json
import os
import shutil
import sys
import sysconfig
import tempfile
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "proxy"))
os.environ.setdefault("VOCELIO_COMPILED", "off")  # the build must not import a build
from vocelio_proxy import compiled  # noqa: E402 - after the path and the mode are set

GROUP = "vocelio_hotpath"  # the shared native library: vocelio_hotpath__mypyc<ext>
# What compiling needs besides the runtime dependencies: mypy (with mypyc) and its dependencies,
# setuptools to drive the C compiler, and the stubs mypy needs to type the sources (types-PyYAML).
# Pinned with hashes by requirements-dev.lock.
TOOLCHAIN = ("mypy", "mypy-extensions", "typing-extensions", "pathspec", "librt", "ast-serialize", "setuptools",
             "types-pyyaml")


def listed_modules(pyproject: Path = ROOT / "pyproject.toml") -> list[str]:
    """The one list of compiled modules (pyproject.toml `[tool.vocelio.compiled] modules`)."""
    data = tomllib.loads(pyproject.read_text())
    modules = data.get("tool", {}).get("vocelio", {}).get("compiled", {}).get("modules")
    if not isinstance(modules, list) or not all(isinstance(m, str) for m in modules) or not modules:
        raise SystemExit("compile: pyproject.toml has no [tool.vocelio.compiled] modules list")
    return sorted(set(modules))


def source_hashes(modules: list[str]) -> dict[str, str]:
    hashes = {}
    for module in modules:
        try:
            hashes[module] = compiled.sha256_of(compiled.source_path(module))
        except (OSError, ValueError) as exc:
            raise SystemExit(f"compile: {module} listed in pyproject.toml has no source: {exc}") from None
    return hashes


def toolchain_requirements(lock: Path = ROOT / "requirements-dev.lock") -> str:
    """The TOOLCHAIN's entries of the hashed dev lock, for `pip install --require-hashes` in an
    image's build stage (the runtime venv never gets them)."""
    wanted = {name.replace("_", "-") for name in TOOLCHAIN}
    blocks: list[str] = []
    keep = False
    for line in lock.read_text().splitlines():
        if line and not line[0].isspace() and not line.startswith("#"):
            keep = line.split("==", 1)[0].strip().lower().replace("_", "-") in wanted
        if keep:
            blocks.append(line)
    found = {b.split("==", 1)[0].lower().replace("_", "-") for b in blocks if not b[0].isspace()}
    if found != wanted:
        raise SystemExit(f"compile: requirements-dev.lock lacks {sorted(wanted - found)}")
    return "\n".join(blocks) + "\n"


def compile_into(modules: list[str], work: Path) -> Path:
    """Run mypyc and the C compiler; returns the directory holding the built extensions."""
    from mypyc.build import mypycify
    from setuptools import setup

    os.environ["MYPYPATH"] = os.pathsep.join([str(ROOT / "contract"), str(ROOT / "proxy")])
    paths = [str(compiled.source_path(m).relative_to(ROOT)) for m in modules]
    out = work / "lib"
    cwd = Path.cwd()
    os.chdir(ROOT)  # mypyc names modules by their path from the mypy_path roots
    try:
        extensions = mypycify(paths, opt_level="3", target_dir=str(work / "c"), group_name=GROUP)
        setup(name="vocelio-hotpath", ext_modules=extensions, script_args=[
            "--quiet", "build_ext", "--build-lib", str(out), "--build-temp", str(work / "tmp"),
            "--parallel", str(os.cpu_count() or 1)])
    finally:
        os.chdir(cwd)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--builds-dir", type=Path, default=compiled.BUILDS_DIR,
                        help="where builds live (default: the package's _compiled/)")
    parser.add_argument("--force", action="store_true", help="rebuild even when a build for these sources exists")
    parser.add_argument("--toolchain-requirements", action="store_true",
                        help="print the hashed lock entries of what compiling needs, and exit")
    args = parser.parse_args()
    if args.toolchain_requirements:
        sys.stdout.write(toolchain_requirements())
        return
    start = time.monotonic()
    modules = listed_modules()
    ext = importlib.machinery.EXTENSION_SUFFIXES[0]
    hashes = source_hashes(modules)
    key = compiled.build_key(ext, hashes)
    target = args.builds_dir / key
    if not args.force and not isinstance(compiled.check_build(target, compiled.PACKAGE_DIR, ext), str):
        print(f"compile: build {key} is up to date ({len(modules)} modules)")
        return
    missing = [what for what, ok in (
        ("a C compiler (gcc)", shutil.which(os.environ.get("CC", "gcc")) or shutil.which("cc")),
        ("the Python headers (Python.h)", (Path(sysconfig.get_paths()["include"]) / "Python.h").is_file())) if not ok]
    if missing:
        raise SystemExit(f"compile: {' and '.join(missing)} missing: run `make system-deps` "
                         "(Debian: apt-get install gcc python3-dev)")
    print(f"compile: mypyc {len(modules)} modules into {target} (about a minute on 2 cores)", flush=True)
    with tempfile.TemporaryDirectory(prefix="vocelio-mypyc-") as tmp:
        built = compile_into(modules, Path(tmp))
        if source_hashes(modules) != hashes:
            raise SystemExit("compile: sources changed during the build; run it again")
        staging = args.builds_dir / f".{key}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        for module in modules:
            rel = Path(*module.split(".")[:-1], module.rsplit(".", 1)[-1] + ext)
            if not (built / rel).is_file():
                raise SystemExit(f"compile: mypyc produced no extension for {module}")
            (staging / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(built / rel, staging / rel)
        shutil.copy2(built / (GROUP + "__mypyc" + ext), staging / (GROUP + "__mypyc" + ext))
        manifest = {"format": compiled.MANIFEST_FORMAT, "ext_suffix": ext, "group": GROUP + "__mypyc",
                    "modules": hashes, "python": sys.version.split()[0]}
        (staging / compiled.MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)  # whole or absent: the manifest is never seen without its files
    for old in args.builds_dir.iterdir():
        if old.is_dir() and old.name != key:
            shutil.rmtree(old, ignore_errors=True)
    checked = compiled.check_build(target, compiled.PACKAGE_DIR, ext)
    if isinstance(checked, str):
        raise SystemExit(f"compile: the new build does not check: {checked}")
    print(f"compile: build {key} ready in {time.monotonic() - start:.0f}s ({len(modules)} modules)")


if __name__ == "__main__":
    main()
