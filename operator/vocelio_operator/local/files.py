"""The file provider: reads `VocelioService` / `RateTier` manifests from a folder
(static endpoints instead of EndpointSlices), reports every invalid file or
document with file, resource and field, renders the rest with the same renderer
as the operator, and serves as a proxy `ConfigSource` for standalone mode
(`FolderSource`). Also backs `vocelio-gateway validate` and `render`.

Reading is total and bounded: a file is read only if it is a regular file of at
most `max_file_bytes` (never blocking on a FIFO or device), then parsed by
`manifests.parse_stream`. Whatever goes wrong, for whatever reason, becomes a
one-line problem naming the file (and the document, when the stream got that
far): nothing in here raises to its caller but `FolderSource.load`, whose
ConfigError the reload loop reports.

`FolderSource` keeps the last good version of every resource, keyed by
`Kind/namespace/name` (see docs/security/reload.md):
* a document that fails and names a resource with a last good version keeps
  that version (only that one);
* a failure that cannot be attributed (the file cannot be read or parsed, a
  broken document without a readable name, a zero-byte file) keeps the last
  good version of every resource last seen in that file and missing from it now;
* a new version the renderer rejects (a prefix conflict, a reserved path) is
  replaced by its last good version, if it had one;
* a resource disappears only by intent: its file is deleted, or the file reads
  cleanly without it.
A prefix routed to a resource stays with it while the resource still claims
it: in a prefix conflict, resources that claim nothing new (no prefix they were
not already routed, compared by `paths.route_key` as the renderer and the router
compare them, so respelling a prefix `/Admin` or `/%61dmin` claims nothing new)
come first, then by `creationTimestamp` (or the time this
source first saw them), then by namespace and name. So an edit or a newcomer
that collides with an established route is the one rejected."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from vocelio_contract.config import ConfigError, GatewayConfig
from vocelio_contract.paths import DEFAULT_POLICY, PathError, PathPolicy, route_key
from vocelio_operator.local.manifests import (
    DEFAULT_LIMITS,
    AnyResource,
    DocumentResult,
    ManifestError,
    ManifestLimits,
    one_line,
    parse_stream,
)
from vocelio_operator.model.resources import RateTierResource, VocelioServiceResource, is_service
from vocelio_operator.model.schemas import CrdsMissing
from vocelio_operator.translation.rendering import RenderResult, render_config
from vocelio_proxy.lifecycle.sources import UnreadableFile, read_regular_file
from vocelio_proxy.process.supervision import describe_error

log = logging.getLogger("vocelio.files")

MANIFEST_SUFFIXES = (".yaml", ".yml")
_MAX_PROBLEMS_PER_FILE = 20


@dataclass(frozen=True)
class FileResult:
    """One file: its documents, and `problem` when the file (or its stream from some
    document on) could not be read; `transient` when reading may work next time."""

    path: Path
    documents: list[DocumentResult] = field(default_factory=list)
    problem: str | None = None
    empty: bool = False
    transient: bool = False

    def problem_lines(self) -> list[str]:
        failed = [d for d in self.documents if d.problem]
        lines = [f"{self.path} (document {d.index}){d.label}: {d.problem}" for d in failed[:_MAX_PROBLEMS_PER_FILE]]
        if len(failed) > _MAX_PROBLEMS_PER_FILE:  # a file of 100,000 bad documents is one problem, not 100,000
            lines.append(f"{self.path}: {len(failed) - _MAX_PROBLEMS_PER_FILE} more invalid documents")
        if self.problem:
            lines.append(f"{self.path}: {self.problem}")
        return lines


def load_file(path: Path, limits: ManifestLimits = DEFAULT_LIMITS) -> FileResult:
    """Read and parse one manifest file; raises only CrdsMissing (a broken install)."""
    try:
        data = read_regular_file(path, limits.max_file_bytes)
    except UnreadableFile as exc:
        return FileResult(path, problem=one_line(str(exc)), transient=True)
    except ConfigError as exc:
        return FileResult(path, problem=one_line(str(exc)))
    if not data:
        return FileResult(path, empty=True)
    try:
        documents, problem = parse_stream(data, limits)
    except CrdsMissing:
        raise  # a broken install, not this file's problem: the command fails in one line
    except Exception as exc:  # defensive: parse_stream handles every error it knows
        log.error("unexpected error while parsing a resource file", exc_info=exc,
                  extra={"fields": {"file": str(path)}})
        return FileResult(path, problem=f"cannot parse: {describe_error(exc)}")
    return FileResult(path, documents, problem)


# --- folders ------------------------------------------------------------------------------------


@dataclass
class Listing:
    files: list[Path] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    #: Folders that could not be listed: the resources last seen under them are kept.
    unlisted: list[Path] = field(default_factory=list)


def scan_folder(folder: Path) -> Listing:
    """Manifest files under `folder`, sorted. Hidden entries (kubelet's `..data` and
    timestamped folders of a mounted ConfigMap, editor swap files) are skipped;
    symlinked folders are followed once (a loop is not followed again). ManifestError
    when `folder` itself cannot be listed."""
    listing = Listing()
    visited: set[tuple[int, int]] = set()
    stack = [folder]
    while stack:
        current = stack.pop()
        try:
            info = os.stat(current)
            if (info.st_dev, info.st_ino) in visited:
                continue
            visited.add((info.st_dev, info.st_ino))
            with os.scandir(current) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            if current == folder:
                raise ManifestError(f"cannot list the folder: {exc.strerror or exc}") from exc
            listing.problems.append(f"{current}: cannot list: {exc.strerror or exc}")
            listing.unlisted.append(current)
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = Path(entry.path)
            manifest = entry.name.endswith(MANIFEST_SUFFIXES)
            try:
                is_dir = entry.is_dir()  # follows symlinks; False for a loop or a dangling link
            except OSError:
                is_dir = False
            if is_dir:
                if manifest:
                    # e.g. a bind mount of a missing file creates a folder in its place
                    listing.problems.append(f"{path}: is a directory, not a manifest file (its files are read)")
                stack.append(path)
            elif manifest:
                listing.files.append(path)
    listing.files.sort()
    return listing


@dataclass
class LoadedResources:
    services: list[VocelioServiceResource] = field(default_factory=list)
    tiers: list[RateTierResource] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    ignored: int = 0


def _collect(results: list[FileResult]) -> tuple[dict[str, tuple[AnyResource, Path]], list[str]]:
    """Valid resources by key (the first definition wins) and every problem, in file order."""
    found: dict[str, tuple[AnyResource, Path]] = {}
    problems: list[str] = []
    for fr in results:
        problems += fr.problem_lines()
        for doc in fr.documents:
            if doc.resource is None or doc.key is None:
                continue
            if doc.key in found:
                problems.append(f"{fr.path} (document {doc.index}){doc.label}: defined again "
                                f"(first in {found[doc.key][1]}); this copy is ignored")
                continue
            found[doc.key] = (doc.resource, fr.path)
    return found, problems


def _split(resources: Iterable[AnyResource]) -> tuple[list[VocelioServiceResource], list[RateTierResource]]:
    services: list[VocelioServiceResource] = []
    tiers: list[RateTierResource] = []
    for res in resources:
        if is_service(res):
            services.append(res)
        else:
            tiers.append(res)
    return services, tiers


def load_files(paths: list[Path], limits: ManifestLimits = DEFAULT_LIMITS) -> LoadedResources:
    """Stateless: every valid resource in `paths` and every problem (for `validate`, `render`)."""
    found, problems = _collect([load_file(p, limits) for p in paths])
    services, tiers = _split(res for res, _ in found.values())
    return LoadedResources(services, tiers, problems)


def load_folder(folder: Path, limits: ManifestLimits = DEFAULT_LIMITS) -> LoadedResources:
    try:
        listing = scan_folder(folder)
    except ManifestError as exc:
        return LoadedResources(problems=[f"{folder}: {exc}"])
    loaded = load_files(listing.files, limits)
    loaded.problems[:0] = listing.problems
    return loaded


def render_folder(folder: Path, limits: ManifestLimits = DEFAULT_LIMITS,
                  policy: PathPolicy = DEFAULT_POLICY) -> tuple[RenderResult, LoadedResources]:
    return render_loaded(load_folder(folder, limits), policy)


def render_loaded(loaded: LoadedResources,
                  policy: PathPolicy = DEFAULT_POLICY) -> tuple[RenderResult, LoadedResources]:
    return render_config(loaded.services, loaded.tiers, {}, policy), loaded


def _outcome_lines(result: RenderResult) -> list[tuple[str, str]]:
    lines = []
    for key, outcome in result.outcomes.items():
        if not outcome.accepted:
            lines.append((key, f"{key}: {outcome.accepted_reason}: {outcome.accepted_message}"))
        elif not outcome.resolved:
            lines.append((key, f"{key}: {outcome.resolved_reason}: {outcome.resolved_message}"))
    return lines


def rejected_outcomes(result: RenderResult) -> list[str]:
    """The renderer's rejections and unresolved references, one line each."""
    return [line for _, line in _outcome_lines(result)]


# --- last good ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Held:
    """A resource version and the file it came from."""

    resource: AnyResource
    path: Path


@dataclass
class Selection:
    """What to render: the current valid resources plus the last good version of broken ones."""

    resources: dict[str, Held]
    kept: dict[str, str]  # key -> why its last good version is served
    problems: list[str]


def _under(path: Path, folders: list[Path]) -> bool:
    return any(path.is_relative_to(f) for f in folders)


def select(results: list[FileResult], good: dict[str, Held], unlisted: list[Path] | None = None) -> Selection:
    """Pure: the resources to render from this read of the files and the last good versions
    (see the module docstring for the rules)."""
    found, problems = _collect(results)
    current = {key: Held(res, path) for key, (res, path) in found.items()}
    kept: dict[str, str] = {}

    def keep(key: str, why: str) -> None:
        if key in good and key not in current and key not in kept:
            kept[key] = why

    for fr in results:
        held_here = [k for k, h in good.items() if h.path == fr.path]
        unattributed = fr.problem is not None
        if fr.empty and held_here:
            unattributed = True
            problems.append(f"{fr.path}: empty file (a write in progress?); its resources keep their last good "
                            "version until it has content or is deleted")
        for doc in fr.documents:
            if not doc.failed:
                continue
            if doc.key is not None and doc.key in good:
                keep(doc.key, f"{fr.path} (document {doc.index}) is invalid")
            else:
                unattributed = True
        if unattributed:
            for key in held_here:
                keep(key, f"{fr.path} has a problem that names no resource")
    for key, held in good.items():
        if unlisted and _under(held.path, unlisted):
            keep(key, f"{held.path.parent} could not be listed")
    resources = dict(current)
    resources.update({key: good[key] for key in kept})
    return Selection(resources, kept, problems)


def _prefix_keys(res: VocelioServiceResource, policy: PathPolicy) -> frozenset[str]:
    """The route keys a service claims (a prefix the policy refuses keeps its text, marked:
    it never equals a key, and the renderer rejects the resource anyway)."""
    keys = set()
    for prefix in [res.spec.path_prefix, *res.spec.aliases]:
        try:
            keys.add(route_key(prefix, policy))
        except PathError:
            keys.add(f"\0{prefix}")
    return frozenset(keys)


class FolderSource:
    """A proxy `ConfigSource` over a folder of manifests, keeping the last good version of
    each resource. `load` runs in a worker thread, one call at a time (the reload loop)."""

    def __init__(self, folder: Path, limits: ManifestLimits = DEFAULT_LIMITS,
                 wall: Callable[[], float] | None = None, policy: PathPolicy = DEFAULT_POLICY) -> None:
        self.folder = folder
        self.limits = limits
        #: The path policy prefixes are judged by: the proxy's own in standalone mode.
        self.policy = policy
        self.problems: list[str] = []
        self.kept: list[str] = []
        self.retry_wanted = False
        #: What the last successful load served (the banner and demo backends read it).
        self.loaded = LoadedResources()
        self._good: dict[str, Held] = {}
        self._routed: dict[str, frozenset[str]] = {}  # service key -> route keys it was routed last
        self._first_seen: dict[str, str] = {}
        self._wall = wall or (lambda: dt.datetime.now(dt.UTC).timestamp())

    def fingerprint(self) -> object:
        try:
            listing = scan_folder(self.folder)
        except ManifestError as exc:
            return ("unlistable", str(exc))
        stats: list[object] = [tuple(listing.problems)]
        for path in listing.files:
            try:
                st = os.stat(path)
            except OSError as exc:
                stats.append((str(path), "error", exc.errno))
                continue
            stats.append((str(path), st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size))
        return tuple(stats)

    def _ordered(self, key: str, res: AnyResource) -> AnyResource:
        """`res` with the renderer's conflict order in `creationTimestamp` (see the module doc)."""
        if not is_service(res):
            return res
        incumbent = _prefix_keys(res, self.policy) <= self._routed.get(key, frozenset())
        stamp = f"{0 if incumbent else 1}-{res.metadata.creation_timestamp or self._first_seen[key]}"
        return dataclasses.replace(res, metadata=res.metadata.model_copy(update={"creation_timestamp": stamp}))

    def _render(self, resources: dict[str, Held]) -> RenderResult:
        services, tiers = _split(self._ordered(key, held.resource) for key, held in resources.items())
        return render_config(services, tiers, {}, self.policy)

    def _report(self, problems: list[str], kept: list[str]) -> None:
        new = [p for p in problems if p not in self.problems]
        for line in new:
            log.error("resource problem", extra={"fields": {"problem": line}})
        for line in kept:
            if line not in self.kept:
                log.warning("serving the last good version of a resource", extra={"fields": {"resource": line}})
        if self.problems and not problems:
            log.info("resource problems resolved", extra={"fields": {"folder": str(self.folder)}})
        self.problems = problems
        self.kept = kept

    def load(self) -> GatewayConfig:
        try:
            listing = scan_folder(self.folder)
        except ManifestError as exc:
            self.retry_wanted = True
            self._report([f"{self.folder}: {exc}"], self.kept)
            raise ConfigError(f"{self.folder}: {exc}") from exc
        results = [load_file(path, self.limits) for path in listing.files]
        self.retry_wanted = any(fr.transient for fr in results) or bool(listing.unlisted)
        chosen = select(results, self._good, listing.unlisted)
        problems = listing.problems + chosen.problems
        resources = dict(chosen.resources)
        kept = dict(chosen.kept)
        now = dt.datetime.fromtimestamp(self._wall(), dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        for key in resources:
            self._first_seen.setdefault(key, now)
        result = self._render(resources)
        # A new version the renderer rejects gives way to its last good version, if it had one.
        swapped = False
        for key, outcome in result.outcomes.items():
            good = self._good.get(key)
            if not outcome.accepted and good is not None and good.resource != resources[key].resource:
                problems.append(f"{resources[key].path}: {key}: {outcome.accepted_reason}: "
                                f"{outcome.accepted_message}")
                resources[key] = good
                kept[key] = f"its new version was rejected ({outcome.accepted_reason})"
                swapped = True
        if swapped:
            result = self._render(resources)
        problems += [f"{resources[key].path}: {line}" for key, line in _outcome_lines(result)]
        kept_lines = [f"{key} (from {self._good[key].path}): {why}" for key, why in sorted(kept.items())]
        self._report(problems, kept_lines)
        services, tiers = _split(h.resource for h in resources.values())
        if not services and problems:
            raise ConfigError(f"no valid VocelioService in {self.folder} ({len(problems)} problems, "
                              "see source_problems)")
        accepted = {key for key, outcome in result.outcomes.items() if outcome.accepted}
        self._good = {key: held if key in accepted else self._good.get(key, held)
                      for key, held in resources.items() if key in accepted or key in self._good}
        self._routed = {key: _prefix_keys(held.resource, self.policy) for key, held in resources.items()
                        if key in accepted and is_service(held.resource)}
        self._first_seen = {key: stamp for key, stamp in self._first_seen.items() if key in resources}
        self.loaded = LoadedResources(services, tiers, problems)
        return result.config

    def describe(self) -> str:
        return f"folder:{self.folder}"
