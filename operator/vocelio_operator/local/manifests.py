"""Manifest parsing: the bytes of one resource file to its documents, each a
valid `VocelioService` / `RateTier` or a one-line problem. Pure (no file or
network I/O); called by `files` (the file provider, `validate`, standalone).

Parsing is total and bounded: the bytes are decoded as strict UTF-8 and parsed
as a YAML stream by PyYAML's safe loader with duplicate mapping keys refused,
collection nesting bounded (`max_yaml_depth`) and the number of nodes per file
bounded both as written and with every alias expanded (`max_yaml_nodes`, which
stops "billion laughs" before anything downstream expands it). Whatever goes
wrong, for whatever reason, becomes a problem for the document (when the
stream could be read past it) or for the rest of the stream: `parse_stream`
raises nothing."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from vocelio_operator.model.resources import (
    GROUP,
    RateTierResource,
    ResourceError,
    VocelioServiceResource,
    is_service,
    parse_resource,
)
from vocelio_operator.model.schemas import CrdsMissing, schema_problems
from vocelio_proxy.process.supervision import describe_error
from vocelio_proxy.settings import ResourceFileSettings

log = logging.getLogger("vocelio.files")

KINDS = ("VocelioService", "RateTier")
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


def resource_key(res: AnyResource) -> str:
    kind = "VocelioService" if is_service(res) else "RateTier"
    return f"{kind}/{res.metadata.namespace}/{res.metadata.name}"




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
    except CrdsMissing:
        raise  # a broken install, not this document's problem: never pass documents unchecked
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
