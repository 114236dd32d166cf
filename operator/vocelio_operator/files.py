"""The file provider: reads `VocelioService` / `RateTier` manifests from a folder
(static endpoints instead of EndpointSlices), reports every invalid document
with file, resource and field, renders the rest with the same renderer as the
operator, and serves as a proxy `ConfigSource` for standalone mode. Also backs
`vocelio-gateway validate`."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vocelio_proxy.config import ConfigError, GatewayConfig

from .rendering import RenderResult, render_config
from .resources import RateTierResource, ResourceError, VocelioServiceResource, is_service, parse_resource
from .schemas import schema_problems

log = logging.getLogger("vocelio.files")


@dataclass
class LoadedResources:
    services: list[VocelioServiceResource] = field(default_factory=list)
    tiers: list[RateTierResource] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    ignored: int = 0


def _documents(path: Path) -> list[tuple[int, Any]]:
    with path.open() as fh:
        return [(i, doc) for i, doc in enumerate(yaml.safe_load_all(fh), start=1)]


def manifest_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())


def load_folder(folder: Path) -> LoadedResources:
    if not folder.is_dir():
        return LoadedResources(problems=[f"{folder}: not a directory"])
    return load_files(manifest_files(folder))


def load_files(paths: list[Path]) -> LoadedResources:
    out = LoadedResources()
    for path in paths:
        try:
            docs = _documents(path)
        except yaml.YAMLError as exc:
            out.problems.append(f"{path}: invalid YAML: {exc}")
            continue
        for index, doc in docs:
            if doc is None:
                continue
            if not isinstance(doc, dict):
                out.problems.append(f"{path} (document {index}): not a mapping")
                continue
            if doc.get("apiVersion", "").split("/")[0] != "gateway.vocelio.ai":
                out.ignored += 1
                continue
            name = (doc.get("metadata") or {}).get("name", "?")
            problems = schema_problems(doc)
            try:
                res = parse_resource(doc)
            except ResourceError as exc:
                # Schema messages first (as the API server words them), then the
                # cross-field rules for fields the schema did not already flag.
                flagged = {p.split(":", 1)[0] for p in problems}
                problems += [str(p) for p in exc.problems if p.path not in flagged]
            if problems:
                out.problems.append(f"{path} (document {index}) {doc.get('kind')}/{name}: " + "; ".join(problems))
                continue
            if is_service(res):
                out.services.append(res)
            else:
                out.tiers.append(res)
    return out


def render_folder(folder: Path) -> tuple[RenderResult, LoadedResources]:
    return render_loaded(load_folder(folder))


def render_loaded(loaded: LoadedResources) -> tuple[RenderResult, LoadedResources]:
    return render_config(loaded.services, loaded.tiers, {}), loaded


def rejected_outcomes(result: RenderResult) -> list[str]:
    lines = []
    for key, outcome in result.outcomes.items():
        if not outcome.accepted:
            lines.append(f"{key}: {outcome.accepted_reason}: {outcome.accepted_message}")
        elif not outcome.resolved:
            lines.append(f"{key}: {outcome.resolved_reason}: {outcome.resolved_message}")
    return lines


class FolderSource:
    """A proxy `ConfigSource` over a folder of manifests."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.problems: list[str] = []

    def fingerprint(self) -> object:
        stats = []
        for path in manifest_files(self.folder):
            st = os.stat(path)
            stats.append((str(path), st.st_mtime_ns, st.st_size))
        return tuple(stats)

    def load(self) -> GatewayConfig:
        result, loaded = render_folder(self.folder)
        problems = loaded.problems + rejected_outcomes(result)
        if problems != self.problems:
            for line in problems:
                log.error("resource problem", extra={"fields": {"problem": line}})
        self.problems = problems
        if not loaded.services and loaded.problems:
            raise ConfigError("no valid VocelioService in " + str(self.folder) + ": " + "; ".join(loaded.problems))
        return result.config

    def describe(self) -> str:
        return f"folder:{self.folder}"
