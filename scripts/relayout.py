#!/usr/bin/env python3
"""The source layout of issue #15, as a re-runnable script: moves the modules of
`vocelio_proxy` and `vocelio_operator` into the packages that say which layer
they belong to (and the shared ones into `vocelio_contract`), then rewrites every
reference to an old name across the tree: imports (absolute, relative,
`from pkg import module`, multi-line), dotted names in strings and docs
(import-linter contracts, mypy config, monkeypatch targets), and file paths
(`proxy/vocelio_proxy/server.py`). Symbols that moved out of a module (the
`SYMBOLS` table) are split out of `from old import a, b` statements.

Idempotent: on a tree where some modules were already moved and files written
against the old layout still import the old names (a branch merged after the
move), a second run moves nothing and only rewrites those references. Relative
imports inside the packages become absolute, resolved against the module's
location before the move, so a relative import merged into a moved file still
means what its author meant.

    python scripts/relayout.py            # move and rewrite, then fix import order (ruff)
    python scripts/relayout.py --check    # exit 1 if anything is left to move or rewrite

Run from anywhere inside the repository; uses `git mv` so history follows.
"""

from __future__ import annotations

import argparse
import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Where each top-level package lives on disk.
SOURCE_DIRS = {"vocelio_proxy": "proxy", "vocelio_operator": "operator", "vocelio_contract": "contract"}

# old module (or package) -> new module. A package entry moves the whole folder.
MOVES: dict[str, str] = {
    # The contract shared by the operator and the proxy.
    "vocelio_proxy.config": "vocelio_contract.config",
    "vocelio_proxy.paths": "vocelio_contract.paths",
    "vocelio_proxy.logs": "vocelio_contract.logs",
    "vocelio_operator.sharding": "vocelio_contract.sharding",
    # Proxy: wire / transport.
    "vocelio_proxy.http1": "vocelio_proxy.wire.http1",
    "vocelio_proxy.server": "vocelio_proxy.wire.server",
    "vocelio_proxy.upstream": "vocelio_proxy.wire.upstream",
    "vocelio_proxy.tunnel": "vocelio_proxy.wire.tunnel",
    "vocelio_proxy.exchange": "vocelio_proxy.wire.exchange",
    # Proxy: pure policy.
    "vocelio_proxy.routing": "vocelio_proxy.policy.routing",
    "vocelio_proxy.balancing": "vocelio_proxy.policy.balancing",
    "vocelio_proxy.health": "vocelio_proxy.policy.health",
    "vocelio_proxy.breakers": "vocelio_proxy.policy.breakers",
    "vocelio_proxy.retries": "vocelio_proxy.policy.retries",
    "vocelio_proxy.windows": "vocelio_proxy.policy.counting_window",
    "vocelio_proxy.ratelimits": "vocelio_proxy.policy.ratelimits",
    "vocelio_proxy.cors": "vocelio_proxy.policy.cors",
    "vocelio_proxy.upgrades": "vocelio_proxy.policy.upgrades",
    "vocelio_proxy.authority": "vocelio_proxy.policy.authority",
    "vocelio_proxy.forwarding": "vocelio_proxy.policy.forwarded_headers",
    "vocelio_proxy.errors": "vocelio_proxy.policy.error_envelope",
    "vocelio_proxy.readiness": "vocelio_proxy.policy.readiness",
    "vocelio_proxy.compression": "vocelio_proxy.policy.compression",
    # Proxy: authentication, one subpackage of the policy.
    "vocelio_proxy.identity": "vocelio_proxy.policy.auth.identity",
    "vocelio_proxy.tokens": "vocelio_proxy.policy.auth.tokens",
    "vocelio_proxy.apikeys": "vocelio_proxy.policy.auth.apikeys",
    "vocelio_proxy.jwks": "vocelio_proxy.policy.auth.jwks",
    # Proxy: the per-request pipeline.
    "vocelio_proxy.handling": "vocelio_proxy.pipeline.handling",
    "vocelio_proxy.proxying": "vocelio_proxy.pipeline.proxying",
    "vocelio_proxy.edge": "vocelio_proxy.pipeline.edge",
    "vocelio_proxy.responses": "vocelio_proxy.pipeline.responses",
    "vocelio_proxy.endpoints": "vocelio_proxy.pipeline.endpoints",
    # Proxy: the process's shared state and services (below the pipeline).
    "vocelio_proxy.state": "vocelio_proxy.process.state",
    "vocelio_proxy.runtime": "vocelio_proxy.process.routing_state",
    "vocelio_proxy.metrics": "vocelio_proxy.process.metrics",
    "vocelio_proxy.accesslog": "vocelio_proxy.process.accesslog",
    "vocelio_proxy.redis_limiter": "vocelio_proxy.process.redis_limiter",
    "vocelio_proxy.supervision": "vocelio_proxy.process.supervision",
    "vocelio_proxy.sysinfo": "vocelio_proxy.process.sysinfo",
    # Proxy: lifecycle, the composition root (the only reader of AppKeys).
    "vocelio_proxy.app": "vocelio_proxy.lifecycle.app",
    "vocelio_proxy.keys": "vocelio_proxy.lifecycle.appkeys",
    "vocelio_proxy.sources": "vocelio_proxy.lifecycle.sources",
    "vocelio_proxy.kube_source": "vocelio_proxy.lifecycle.kube_source",
    "vocelio_proxy.healthchecks": "vocelio_proxy.lifecycle.healthchecks",
    # Modules that branches merged after the layout add (moved when the script is re-run).
    "vocelio_proxy.tracing": "vocelio_proxy.process.tracing",
    "vocelio_proxy.tracecontext": "vocelio_proxy.policy.tracecontext",
    "vocelio_proxy.buildinfo": "vocelio_contract.buildinfo",
    "vocelio_proxy.process.buildinfo": "vocelio_contract.buildinfo",
    "vocelio_operator.tenancy": "vocelio_operator.translation.tenancy",
    "vocelio_operator.keywatch": "vocelio_operator.kube.keywatch",
    # Operator: model.
    "vocelio_operator.resources": "vocelio_operator.model.resources",
    "vocelio_operator.schemas": "vocelio_operator.model.schemas",
    # Operator: pure translation.
    "vocelio_operator.rendering": "vocelio_operator.translation.rendering",
    "vocelio_operator.status": "vocelio_operator.translation.status",
    "vocelio_operator.discovery": "vocelio_operator.translation.cluster_index",
    # Operator: the Kubernetes edge.
    "vocelio_operator.handlers": "vocelio_operator.kube.handlers",
    "vocelio_operator.reconciler": "vocelio_operator.kube.reconciler",
    "vocelio_operator.writer": "vocelio_operator.kube.writer",
    "vocelio_operator.metrics": "vocelio_operator.kube.metrics",
    # Operator: standalone mode (files instead of the API server, the proxy in-process).
    "vocelio_operator.files": "vocelio_operator.local.files",
    "vocelio_operator.manifests": "vocelio_operator.local.manifests",
    "vocelio_operator.standalone": "vocelio_operator.local.standalone",
    "vocelio_operator.demo": "vocelio_operator.local.demo",
}

# Symbols that left their module (after the move above): (module, name) -> new module.
SYMBOLS: dict[tuple[str, str], str] = {
    ("vocelio_proxy.lifecycle.sources", "join_sharded"): "vocelio_contract.sharding",
    ("vocelio_proxy.pipeline.endpoints", "RESERVED_PATHS"): "vocelio_contract.reserved",
    ("vocelio_proxy.lifecycle.appkeys", "EdgePolicy"): "vocelio_proxy.pipeline.edge",
    ("vocelio_proxy.settings", "normal_log_level"): "vocelio_contract.logs",
    ("vocelio_proxy.policy.auth.apikeys", "ApiKeyRecord"): "vocelio_contract.apikeys",
    ("vocelio_proxy.policy.auth.apikeys", "hash_key"): "vocelio_contract.apikeys",
    ("vocelio_proxy.policy.auth.apikeys", "mint_key"): "vocelio_contract.apikeys",
    ("vocelio_proxy.policy.auth.apikeys", "key_hint"): "vocelio_contract.apikeys",
    ("vocelio_proxy.policy.auth.apikeys", "load_records"): "vocelio_contract.apikeys",
    ("vocelio_proxy.policy.auth.apikeys", "SECRET_LABEL"): "vocelio_contract.apikeys",
    ("vocelio_proxy.policy.auth.apikeys", "secret_manifest"): "vocelio_contract.apikeys",
    ("vocelio_proxy.policy.auth.apikeys", "record_from_secret_data"): "vocelio_contract.apikeys",
}

# New packages and what each owns (their __init__ docstrings).
PACKAGES: dict[str, str] = {
    "vocelio_contract": "The contract shared by the operator and the proxy: the `GatewayConfig` model, the\n"
    "canonical path and route-key rules, ConfigMap sharding with its one part limit, the API-key\n"
    "record format and the gateway's reserved paths. Pure; neither side's code is imported here.",
    "vocelio_proxy.wire": "Wire and transport: the sans-I/O HTTP/1.1 core (`http1`), the asyncio server around\n"
    "it, the upstream connection pool and client, and upgrade tunnels. Knows bytes and\n"
    "connections, not routes or callers.",
    "vocelio_proxy.policy": "Pure policy: routing, balancing, health, breakers, retries, rate-limit arithmetic,\n"
    "authentication (`auth`), CORS, upgrades, forwarded headers and the error envelope. No I/O;\n"
    "time comes from an injected clock.",
    "vocelio_proxy.policy.auth": "Authentication and authorization: who a caller is (`identity`), JWTs (`tokens`),\n"
    "their verification keys (`jwks`) and API keys (`apikeys`).",
    "vocelio_proxy.pipeline": "The per-request pipeline: early refusals, the gateway's own endpoints, the edge\n"
    "policy (authenticate, authorize, rate-limit) and the proxy handler. Built by the composition\n"
    "root with the collaborators it needs; never reads the application.",
    "vocelio_proxy.process": "The process's shared state and services, below the pipeline: the live routing\n"
    "state, the mutable gateway state, metrics, the access log, the Redis limiter and supervised loops.",
    "vocelio_proxy.lifecycle": "Lifecycle and composition: the application factory (the only reader of AppKeys),\n"
    "config sources and the reload loop, and background tasks.",
    "vocelio_operator.model": "The operator's input model: typed custom resources and offline CRD schema checks.",
    "vocelio_operator.translation": "Pure translation: resources and discovered endpoints to one `GatewayConfig`\n"
    "(`rendering`), per-resource status conditions (`status`) and the cluster index (`cluster_index`).\n"
    "Golden-tested (tests/golden).",
    "vocelio_operator.kube": "The Kubernetes edge: kopf handlers, the reconcile loop, the API writer and metrics.",
    "vocelio_operator.local": "Standalone mode: resource files instead of the API server, the proxy in-process,\n"
    "demo backends. The one operator package that composes with the proxy.",
}

TEXT_SUFFIXES = {".py", ".toml", ".md", ".txt", ".cfg", ".ini", ".yaml", ".yml", ".sh", ".tpl", ".json", ".pyi"}
TEXT_NAMES = {"Makefile", "Dockerfile.proxy", "Dockerfile.operator", ".dockerignore"}
SELF = Path(__file__).resolve()
#: A file holding this line is left as written.
KEEP_MARKER = "relayout: leave this file as written"

_DOTTED = re.compile(r"(?<![\w.])(vocelio_proxy|vocelio_operator)((?:\.\w+)+)")
_PATH = re.compile(r"(?<![\w./-])(?:(proxy|operator)/)?(vocelio_proxy|vocelio_operator)/((?:\w+/)*\w+)(\.py)?")


def map_module(name: str) -> str:
    """The new name of a module (or of anything inside it: `a.b.attr`)."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        head = ".".join(parts[:cut])
        if head in MOVES:
            return ".".join([MOVES[head], *parts[cut:]])
    return name


def origin_module(new: str) -> str:
    """The module a file had before the move (for resolving its relative imports)."""
    parts = new.split(".")
    reverse = {v: k for k, v in MOVES.items()}
    for cut in range(len(parts), 0, -1):
        head = ".".join(parts[:cut])
        if head in reverse:
            return ".".join([reverse[head], *parts[cut:]])
    return new


def module_path(module: str) -> Path:
    """The file (or package folder) of a module name."""
    root, *rest = module.split(".")
    base = ROOT / SOURCE_DIRS[root] / root
    target = base.joinpath(*rest) if rest else base
    return target if target.is_dir() else target.with_suffix(".py")


def is_package(module: str) -> bool:
    root, *rest = module.split(".")
    return (ROOT / SOURCE_DIRS[root] / root).joinpath(*rest).is_dir()


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], check=True, capture_output=True, text=True).stdout


def ensure_package(module: str, changes: list[str], check: bool) -> None:
    root, *rest = module.split(".")
    folder = (ROOT / SOURCE_DIRS[root] / root).joinpath(*rest)
    init = folder / "__init__.py"
    if init.exists():
        return
    changes.append(f"create {init.relative_to(ROOT)}")
    if check:
        return
    folder.mkdir(parents=True, exist_ok=True)
    doc = PACKAGES.get(module, f"The `{module}` package.")
    init.write_text(f'"""{doc}"""\n')
    git("add", str(init.relative_to(ROOT)))


def move_modules(changes: list[str], check: bool) -> None:
    for package in sorted(PACKAGES, key=len):
        ensure_package(package, changes, check)
    for old, new in MOVES.items():
        root, *rest = old.split(".")
        old_base = (ROOT / SOURCE_DIRS[root] / root).joinpath(*rest)
        old_path = old_base if old_base.is_dir() else old_base.with_suffix(".py")
        if not old_path.exists():
            continue
        nroot, *nrest = new.split(".")
        new_base = (ROOT / SOURCE_DIRS[nroot] / nroot).joinpath(*nrest)
        new_path = new_base if old_path.is_dir() else new_base.with_suffix(".py")
        if new_path.exists():
            if old_path.is_dir():
                # A merged branch added files to the old folder: move them one by one.
                for file in sorted(p for p in old_path.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
                    dest = new_path / file.relative_to(old_path)
                    if dest.exists():
                        print(f"relayout: both {file.relative_to(ROOT)} and {dest.relative_to(ROOT)} exist; "
                              "merge them by hand", file=sys.stderr)
                        continue
                    changes.append(f"git mv {file.relative_to(ROOT)} {dest.relative_to(ROOT)}")
                    if not check:
                        dest.parent.mkdir(parents=True, exist_ok=True)
                        git("mv", str(file.relative_to(ROOT)), str(dest.relative_to(ROOT)))
                continue
            print(f"relayout: both {old_path.relative_to(ROOT)} and {new_path.relative_to(ROOT)} exist; "
                  "merge them by hand", file=sys.stderr)
            continue
        changes.append(f"git mv {old_path.relative_to(ROOT)} {new_path.relative_to(ROOT)}")
        if not check:
            new_path.parent.mkdir(parents=True, exist_ok=True)
            git("mv", str(old_path.relative_to(ROOT)), str(new_path.relative_to(ROOT)))
            if old_path.is_dir() and not any(p.is_file() and "__pycache__" not in p.parts
                                             for p in old_path.rglob("*")):
                shutil.rmtree(old_path)  # only byte-code caches were left behind


def file_module(path: Path) -> str | None:
    """The dotted module name of a source file inside one of the packages, else None."""
    rel = path.relative_to(ROOT)
    if len(rel.parts) < 2 or rel.parts[0] not in SOURCE_DIRS.values() or rel.parts[1] not in SOURCE_DIRS:
        return None
    parts = list(rel.with_suffix("").parts[1:])
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


_DEFINED: dict[str, set[str]] = {}


def defines(module: str, name: str) -> bool:
    """Whether a module of this tree defines `name` at top level (a symbol move has landed)."""
    if module not in _DEFINED:
        names: set[str] = set()
        try:
            path = module_path(module)
            tree = ast.parse(path.read_text()) if path.is_file() else ast.Module(body=[], type_ignores=[])
        except (KeyError, SyntaxError, OSError):
            tree = ast.Module(body=[], type_ignores=[])
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Assign):
                names.update(t.id for t in node.targets if isinstance(t, ast.Name))
            elif isinstance(node, (ast.AnnAssign, ast.AugAssign)) and isinstance(node.target, ast.Name):
                names.add(node.target.id)
        _DEFINED[module] = names
    return name in _DEFINED[module]


def _resolve(node: ast.ImportFrom, origin: str, is_init: bool) -> str:
    if node.level == 0:
        return node.module or ""
    package = origin.split(".") if is_init else origin.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _alias(name: str, asname: str | None) -> str:
    return f"{name} as {asname}" if asname else name


def _render(module: str, names: list[str], indent: str) -> str:
    line = f"{indent}from {module} import {', '.join(names)}"
    if len(line) <= 120:
        return line
    inner = "".join(f"{indent}    {n},\n" for n in names)
    return f"{indent}from {module} import (\n{inner}{indent})"


def rewrite_import(node: ast.ImportFrom, origin: str, is_init: bool, indent: str) -> str | None:
    """The replacement text of one `from ... import` statement, or None to keep it."""
    source = _resolve(node, origin, is_init)
    if not source.startswith(tuple(SOURCE_DIRS)):
        return None
    target = map_module(source)
    groups: dict[str, list[str]] = {}
    for alias in node.names:
        submodule = map_module(f"{source}.{alias.name}")
        if alias.name != "*" and submodule != f"{source}.{alias.name}" and (
            is_package(source) or submodule.rsplit(".", 1)[0] != target
        ):
            # `from pkg import module` where the module moved.
            parent, _, leaf = submodule.rpartition(".")
            asname = alias.asname or (alias.name if leaf != alias.name else None)
            groups.setdefault(parent, []).append(_alias(leaf, asname))
            continue
        owner = SYMBOLS.get((target, alias.name), target)
        if owner != target and not defines(owner, alias.name):
            owner = target  # not moved yet on this tree
        groups.setdefault(owner, []).append(_alias(alias.name, alias.asname))
    if node.level == 0 and list(groups) == [source]:
        return None
    return "\n".join(_render(module, names, indent) for module, names in groups.items())


def rewrite_python_imports(path: Path, text: str) -> str:
    try:
        tree = ast.parse(text)
    except SyntaxError:
        print(f"relayout: cannot parse {path.relative_to(ROOT)}; only names and paths rewritten", file=sys.stderr)
        return text
    module = file_module(path)
    origin = origin_module(module) if module else ""
    is_init = path.name == "__init__.py"
    lines = text.splitlines(keepends=True)
    edits: list[tuple[int, int, str]] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom) or node.end_lineno is None:
            continue
        if node.level and not module:
            continue
        first = lines[node.lineno - 1]
        if first[: node.col_offset].strip():
            continue  # `x; from a import b` on one line: leave to the text pass
        indent = first[: node.col_offset]
        new = rewrite_import(node, origin, is_init, indent)
        if new is None:
            continue
        tail = lines[node.end_lineno - 1]
        end_col = len(tail.encode()[: node.end_col_offset].decode(errors="ignore"))
        rest = tail[end_col:]
        edits.append((node.lineno - 1, node.end_lineno, new + rest if rest.strip() else new + "\n"))
    for start, end, new in sorted(edits, reverse=True):
        lines[start:end] = [new]
    return "".join(lines)


_CONFLICT = re.compile(r"^<<<<<<< [^\n]*\n(.*?)(?:^\|\|\|\|\|\|\| [^\n]*\n.*?)?^=======\n(.*?)^>>>>>>> [^\n]*\n",
                       re.S | re.M)
_IMPORT_LINE = re.compile(r"^(?:\s*(?:from|import)\s.*|\s+\w+(?:\s+as\s+\w+)?,|\)|\s*#.*|\s*)$")


def _only_imports(text: str) -> bool:
    """Import statements, the names of a parenthesised import (each ending in a comma),
    comments and blank lines: nothing else."""
    return all(_IMPORT_LINE.match(line) for line in text.splitlines())


def resolve_import_conflicts(text: str) -> tuple[str, int]:
    """Merge-conflict hunks made only of import lines (one side rewrote the imports, the
    other added some) become both sides; the rewrite pass and ruff then put them in the
    layout's names and order and drop what is unused. Other hunks stay for a human."""
    resolved = 0

    def union(match: re.Match[str]) -> str:
        nonlocal resolved
        ours, theirs = match.group(1), match.group(2)
        if not (_only_imports(ours) and _only_imports(theirs)):
            return match.group(0)
        resolved += 1
        return ours + theirs

    return _CONFLICT.sub(union, text), resolved


def _dotted(match: re.Match[str]) -> str:
    return map_module(match.group(0))


def _path(match: re.Match[str]) -> str:
    top, root, rest, suffix = match.groups()
    old = ".".join([root, *rest.split("/")])
    new = map_module(old)
    if new == old:
        return match.group(0)
    nroot, *nrest = new.split(".")
    text = "/".join([nroot, *nrest])
    if top:
        text = f"{SOURCE_DIRS[nroot]}/{text}"
    return text + (suffix or "")


def rewrite_text(path: Path, text: str) -> str:
    if path.suffix == ".py":
        text = rewrite_python_imports(path, text)
    text = _DOTTED.sub(_dotted, text)
    return _PATH.sub(_path, text)


def tracked_files() -> list[Path]:
    # Unmerged paths are listed once per stage: each file once.
    names = dict.fromkeys(git("ls-files", "-co", "--exclude-standard").splitlines())
    out = []
    for name in names:
        path = ROOT / name
        if path.resolve() == SELF or not path.is_file() or path.is_symlink():
            continue
        if path.suffix in TEXT_SUFFIXES or path.name in TEXT_NAMES:
            out.append(path)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="report what is left to do; change nothing")
    parser.add_argument("--no-ruff", action="store_true", help="do not sort the rewritten imports")
    parser.add_argument("--resolve-import-conflicts", action="store_true",
                        help="after merging a branch: hunks that only hold imports become both sides, rewritten")
    args = parser.parse_args()
    changes: list[str] = []
    unioned: list[Path] = []
    if args.resolve_import_conflicts and not args.check:
        for path in tracked_files():
            if path.suffix != ".py":
                continue
            text = path.read_text(errors="surrogateescape")
            if "<<<<<<< " not in text:
                continue
            new_text, count = resolve_import_conflicts(text)
            if count:
                path.write_text(new_text, errors="surrogateescape")
                unioned.append(path)
                left = "; conflicts remain" if "<<<<<<< " in new_text else ""
                changes.append(f"resolved {count} import conflict(s) in {path.relative_to(ROOT)}{left}")
    move_modules(changes, args.check)
    rewritten: list[Path] = []
    for path in tracked_files():
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        if KEEP_MARKER in text:
            continue  # a file about the old names (the script's own test)
        new = rewrite_text(path, text)
        if new != text:
            rewritten.append(path)
            changes.append(f"rewrite {path.relative_to(ROOT)}")
            if not args.check:
                path.write_text(new)
    python = [str(p) for p in rewritten if p.suffix == ".py"]
    if python and not args.check and not args.no_ruff:
        ruff = Path(sys.executable).parent / "ruff"
        command = [str(ruff) if ruff.exists() else "ruff", "check", "--quiet", "--select", "I", "--fix", *python]
        subprocess.run(command, cwd=ROOT, check=False)
    settled = [str(p) for p in unioned if "<<<<<<< " not in p.read_text(errors="surrogateescape")]
    if settled and not args.no_ruff:
        # Both sides' imports: drop the ones the merged code no longer uses, then sort.
        ruff = Path(sys.executable).parent / "ruff"
        command = [str(ruff) if ruff.exists() else "ruff", "check", "--quiet", "--select", "F401,I", "--fix", *settled]
        subprocess.run(command, cwd=ROOT, check=False)
    for change in changes:
        print(change)
    if args.check:
        return 1 if changes else 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
