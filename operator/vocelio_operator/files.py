"""The file provider: reads `VocelioService` / `RateTier` manifests from a folder
(static endpoints instead of EndpointSlices), reports every invalid file or
document with file, resource and field, renders the rest with the same renderer
as the operator, and serves as a proxy `ConfigSource` for standalone mode
(`FolderSource`). Also backs `vocelio-gateway validate` and `render`.

Reading is total and bounded. A file is read only if it is a regular file of at
most `max_file_bytes`; it is decoded as strict UTF-8 and parsed as a YAML stream
with duplicate keys refused, collection nesting bounded (`max_yaml_depth`) and
alias expansion bounded per file (`max_yaml_nodes`, which stops "billion
laughs"). Whatever goes wrong, for whatever reason, becomes a one-line problem
naming the file (and the document, when the stream got that far): nothing in
here raises to its caller.

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
not already routed) come first, then by `creationTimestamp` (or the time this
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
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from vocelio_proxy.config import ConfigError, GatewayConfig
from vocelio_proxy.settings import ResourceFileSettings
from vocelio_proxy.sources import UnreadableFile, read_regular_file
from vocelio_proxy.supervision import describe_error

from .rendering import RenderResult, render_config
from .resources import (
    GROUP,
    RateTierResource,
    ResourceError,
    VocelioServiceResource,
    is_service,
    parse_resource,
)
from .schemas import schema_problems

log = logging.getLogger("vocelio.files")

KINDS = ("VocelioService", "RateTier")
MANIFEST_SUFFIXES = (".yaml", ".yml")
_STR = "tag:yaml.org,2002:str"
_MERGE = "tag:yaml.org,2002:merge"
_MAX_PROBLEM_CHARS = 600

AnyResource = VocelioServiceResource | RateTierResource


@dataclass(frozen=True)
class ManifestLimits:
    """The bounds for reading one file (from `ProxySettings.resource_files`)."""

    max_file_bytes: int
    max_yaml_nodes: int
    max_yaml_depth: int

    @classmethod
    def from_settings(cls, settings: ResourceFileSettings) -> ManifestLimits:
        return cls(settings.max_file_bytes, settings.max_yaml_nodes, settings.max_yaml_depth)


DEFAULT_LIMITS = ManifestLimits.from_settings(ResourceFileSettings())


class ManifestError(ValueError):
    """The one exception this module's parsing raises internally; its message is one line."""


class RecursiveAlias(ManifestError):
    """An anchor that contains itself: the document has no finite value."""


def one_line(text: str) -> str:
    """Collapse whitespace (PyYAML and pydantic messages span lines) and bound the length."""
    flat = " ".join(text.split())
    return flat if len(flat) <= _MAX_PROBLEM_CHARS else flat[:_MAX_PROBLEM_CHARS - 1] + "…"


@dataclass(frozen=True)
class DocumentResult:
    """One document of a file: the resource it names (`key`, when readable), the parsed
    resource if valid, or the problem that stops it."""

    index: int
    key: str | None = None
    resource: AnyResource | None = None
    problem: str | None = None
    label: str = ""

    @property
    def failed(self) -> bool:
        return self.problem is not None


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
        lines = [f"{self.path} (document {d.index}){d.label}: {d.problem}" for d in self.documents if d.problem]
        if self.problem:
            lines.append(f"{self.path}: {self.problem}")
        return lines


def resource_key(res: AnyResource) -> str:
    kind = "VocelioService" if is_service(res) else "RateTier"
    return f"{kind}/{res.metadata.namespace}/{res.metadata.name}"


# --- YAML ---------------------------------------------------------------------------------------


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader with bounded nesting and duplicate mapping keys refused
    (YAML requires unique keys; a second `spec:` silently replacing the first hides edits)."""

    def __init__(self, text: str, max_depth: int, max_nodes: int) -> None:
        super().__init__(text)
        self._max_depth = max_depth
        self._max_nodes = max_nodes
        self._depth = 0
        self._composed = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        self._depth += 1
        self._composed += 1
        try:
            if self._composed > self._max_nodes:  # stop early: composing is the slow part
                raise ManifestError(f"more YAML nodes than the limit of {self._max_nodes}")
            if self._depth > self._max_depth:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise ManifestError(f"nested deeper than {self._max_depth} levels at line {mark.line + 1}")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: Node, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, MappingNode):
            seen: set[Any] = set()
            for key_node, _ in node.value:
                if key_node.tag == _MERGE or not isinstance(key_node, ScalarNode):
                    continue
                key = self.construct_object(key_node)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping", node.start_mark, f"found duplicate key {key!r}",
                        key_node.start_mark)
                seen.add(key)
        return super().construct_mapping(node, deep=deep)  # type: ignore[arg-type]


def _children(node: Node) -> Iterable[Node]:
    if isinstance(node, SequenceNode):
        return node.value  # type: ignore[no-any-return]
    if isinstance(node, MappingNode):
        return [n for pair in node.value for n in pair]
    return ()


def expanded_size(root: Node, budget: int) -> int:
    """Nodes in `root` with every alias expanded, computed without expanding (memoised on
    node identity); ManifestError when over `budget` or when an anchor contains itself."""
    sizes: dict[int, int] = {}
    active: set[int] = set()  # the current path from the root: an edge back into it is a cycle
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        nid = id(node)
        if finished:
            active.discard(nid)
            total = 1 + sum(sizes[id(child)] for child in _children(node))
            if total > budget:
                raise ManifestError(f"more YAML nodes than the limit of {budget} once aliases are expanded")
            sizes[nid] = total
            continue
        if nid in sizes:
            continue
        active.add(nid)
        stack.append((node, True))
        for child in _children(node):
            if id(child) in active:
                raise RecursiveAlias(f"recursive YAML alias at line {child.start_mark.line + 1}")
            if id(child) not in sizes:
                stack.append((child, False))
    return sizes[id(root)]


def _yaml_problem(exc: BaseException) -> str:
    if isinstance(exc, ManifestError):
        return str(exc)
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        what = exc.problem or exc.context or "invalid YAML"
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        return one_line(f"invalid YAML{where}: {what}")
    if isinstance(exc, yaml.YAMLError):
        return one_line(f"invalid YAML: {exc}")
    if isinstance(exc, RecursionError):
        return "invalid YAML: nested too deeply"
    return one_line(f"invalid YAML: {describe_error(exc)}")


def _scalar(node: Node | None) -> str | None:
    return node.value if isinstance(node, ScalarNode) and node.tag == _STR else None


def _mapping_get(node: Node, name: str) -> Node | None:
    if isinstance(node, MappingNode):
        for key_node, value_node in node.value:
            if _scalar(key_node) == name:
                return value_node  # type: ignore[no-any-return]
    return None


def _key(kind: object, name: object, namespace: object) -> str | None:
    if not (isinstance(kind, str) and kind and isinstance(name, str) and name):
        return None
    if namespace is None:
        namespace = "default"
    return f"{kind}/{namespace}/{name}" if isinstance(namespace, str) and namespace else None


def _key_of_node(node: Node) -> str | None:
    """Who a document that failed to construct claims to be, read from the YAML nodes."""
    metadata = _mapping_get(node, "metadata")
    if metadata is None:
        return None
    namespace_node = _mapping_get(metadata, "namespace")
    namespace = _scalar(namespace_node) if namespace_node is not None else None
    if namespace_node is not None and namespace is None:
        return None
    return _key(_scalar(_mapping_get(node, "kind")), _scalar(_mapping_get(metadata, "name")), namespace)


def _key_of_doc(doc: dict[Any, Any]) -> str | None:
    metadata = doc.get("metadata")
    if not isinstance(metadata, dict):
        return None
    return _key(doc.get("kind"), metadata.get("name"), metadata.get("namespace"))


def _label(key: str | None) -> str:
    if key is None:
        return ""
    kind, _, name = key.split("/", 2)
    return f" {kind}/{name}"


def _type_name(value: object) -> str:
    return {list: "a list", str: "a string", int: "a number", float: "a number", bool: "a boolean"}.get(
        type(value), type(value).__name__)


def check_document(index: int, doc: object) -> DocumentResult | None:
    """Validate one constructed document; None for an empty document or another API's manifest."""
    if doc is None:
        return None
    if not isinstance(doc, dict):
        return DocumentResult(index, problem=f"a manifest must be a mapping, not {_type_name(doc)}")
    api, kind = doc.get("apiVersion"), doc.get("kind")
    ours = (isinstance(api, str) and api.split("/")[0] == GROUP) or (isinstance(kind, str) and kind in KINDS)
    if not ours:
        if isinstance(api, str) and api and isinstance(kind, str) and kind:
            return None  # another API's manifest (a Secret, a kustomization): not ours to judge
        return DocumentResult(index, problem="not a Kubernetes manifest: apiVersion and kind must be strings")
    key = _key_of_doc(doc)
    label = _label(key) or f" {kind if isinstance(kind, str) else '?'}/?"
    try:
        problems = schema_problems(doc)
        try:
            res = parse_resource(doc)
        except ResourceError as exc:
            # Schema messages first (as the API server words them), then the
            # cross-field rules for fields the schema did not already flag.
            flagged = {p.split(":", 1)[0] for p in problems}
            problems += [str(p) for p in exc.problems if p.path not in flagged]
    except Exception as exc:  # a validator tripping on an odd value: still this document's problem
        log.warning("validator failed on a document", exc_info=exc)
        problems = [f"cannot validate: {describe_error(exc)}"]
    if problems:
        return DocumentResult(index, key, problem=one_line("; ".join(problems)), label=label)
    return DocumentResult(index, resource_key(res), res, label=_label(resource_key(res)))


def parse_stream(data: bytes, limits: ManifestLimits = DEFAULT_LIMITS) -> tuple[list[DocumentResult], str | None]:
    """The documents of a YAML stream, and the problem that stopped the stream early (the
    documents after it are unknown), if any. Raises nothing (but cancellation-type
    BaseExceptions)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        return [], f"not UTF-8: byte 0x{data[exc.start]:02x} at line {line} (offset {exc.start})"
    out: list[DocumentResult] = []
    budget = limits.max_yaml_nodes
    index = 0
    try:
        loader = _BoundedLoader(text, limits.max_yaml_depth, limits.max_yaml_nodes)  # checks for unprintable characters
    except Exception as exc:
        return out, _yaml_problem(exc)
    try:
        while True:
            index += 1
            try:
                if not loader.check_node():
                    return out, None
                node = loader.get_node()
                if node is None:
                    return out, None
            except Exception as exc:  # scanner, parser, composer, depth: the rest of the stream is unknown
                return out, (f"document {index}: " if index > 1 else "") + _yaml_problem(exc)
            try:
                budget -= expanded_size(node, budget)
            except RecursiveAlias as exc:  # the document was read whole: only it is spoiled
                key = _key_of_node(node)
                out.append(DocumentResult(index, key, problem=str(exc), label=_label(key)))
                continue
            except ManifestError as exc:  # the file's node budget is spent: stop reading it
                return out, f"document {index}: {exc}"
            try:
                doc = loader.construct_document(node)
            except Exception as exc:  # a bad tag, timestamp, number or duplicate key: this document only
                loader.constructed_objects = {}
                loader.recursive_objects = {}
                loader.state_generators = []
                loader.deep_construct = False
                key = _key_of_node(node)
                problem = _yaml_problem(exc)
                if not isinstance(exc, yaml.MarkedYAMLError):  # a bad value; say where its document starts
                    problem = f"{problem} (in the document starting at line {node.start_mark.line + 1})"
                out.append(DocumentResult(index, key, problem=problem, label=_label(key)))
                continue
            result = check_document(index, doc)
            if result is not None:
                out.append(result)
    finally:
        loader.dispose()


def load_file(path: Path, limits: ManifestLimits = DEFAULT_LIMITS) -> FileResult:
    """Read and parse one manifest file; never raises."""
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


def manifest_files(folder: Path) -> list[Path]:
    return scan_folder(folder).files


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


def render_folder(folder: Path, limits: ManifestLimits = DEFAULT_LIMITS) -> tuple[RenderResult, LoadedResources]:
    return render_loaded(load_folder(folder, limits))


def render_loaded(loaded: LoadedResources) -> tuple[RenderResult, LoadedResources]:
    return render_config(loaded.services, loaded.tiers, {}), loaded


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


def _prefixes(res: VocelioServiceResource) -> frozenset[str]:
    return frozenset(p.rstrip("/") or "/" for p in [res.spec.path_prefix, *res.spec.aliases])


class FolderSource:
    """A proxy `ConfigSource` over a folder of manifests, keeping the last good version of
    each resource. `load` runs in a worker thread, one call at a time (the reload loop)."""

    def __init__(self, folder: Path, limits: ManifestLimits = DEFAULT_LIMITS,
                 wall: Callable[[], float] | None = None) -> None:
        self.folder = folder
        self.limits = limits
        self.problems: list[str] = []
        self.kept: list[str] = []
        self.retry_wanted = False
        #: What the last successful load served (the banner and demo backends read it).
        self.loaded = LoadedResources()
        self._good: dict[str, Held] = {}
        self._routed: dict[str, frozenset[str]] = {}  # service key -> prefixes it was routed last
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
        incumbent = _prefixes(res) <= self._routed.get(key, frozenset())
        stamp = f"{0 if incumbent else 1}-{res.metadata.creation_timestamp or self._first_seen[key]}"
        return dataclasses.replace(res, metadata=res.metadata.model_copy(update={"creation_timestamp": stamp}))

    def _render(self, resources: dict[str, Held]) -> RenderResult:
        services, tiers = _split(self._ordered(key, held.resource) for key, held in resources.items())
        return render_config(services, tiers, {})

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
        self._routed = {key: _prefixes(held.resource) for key, held in resources.items()
                        if key in accepted and is_service(held.resource)}
        self._first_seen = {key: stamp for key, stamp in self._first_seen.items() if key in resources}
        self.loaded = LoadedResources(services, tiers, problems)
        return result.config

    def describe(self) -> str:
        return f"folder:{self.folder}"
