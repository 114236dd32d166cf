"""Reading resource files is total: every class of bad input (bytes, YAML, document
shape, file type, size, alias bombs) becomes a one-line problem for that file or
document, the valid documents next to it still load, and nothing raises. Random
YAML-ish bytes are checked with hypothesis."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vocelio_operator.local import manifests
from vocelio_operator.local.files import load_file, load_files, load_folder, scan_folder
from vocelio_operator.local.manifests import ManifestLimits, parse_stream

GOOD = b"""apiVersion: gateway.vocelio.ai/v1alpha1
kind: VocelioService
metadata: {name: good}
spec:
  pathPrefix: /api/v1/good
  backends: [{staticEndpoints: [{address: 127.0.0.1, port: 9000}]}]
"""


def named(name: str) -> bytes:
    return GOOD.replace(b"good", name.encode())


BOMB = b"a: &a [x,x,x,x,x,x,x,x,x,x]\n" + b"".join(
    b"%c: &%c [" % (98 + i, 98 + i) + b",".join([b"*%c" % (97 + i)] * 10) + b"]\n" for i in range(8))

#: name -> (file bytes, text the problem must contain, key the problem is attributed to or None)
BAD_DOCUMENTS: dict[str, tuple[bytes, str, str | None]] = {
    "apiVersion is a number": (GOOD.replace(b"gateway.vocelio.ai/v1alpha1", b"1"), "apiVersion",
                               "VocelioService/default/good"),
    "apiVersion missing": (GOOD.replace(b"apiVersion: gateway.vocelio.ai/v1alpha1\n", b""), "apiVersion",
                           "VocelioService/default/good"),
    "kind is a list": (GOOD.replace(b"kind: VocelioService", b"kind: [a, b]"), "kind", None),
    "metadata is a list": (GOOD.replace(b"metadata: {name: good}", b"metadata: [good]"), "metadata", None),
    "name is a number": (GOOD.replace(b"{name: good}", b"{name: 12}"), "metadata.name", None),
    "document is a scalar": (b"just words\n", "must be a mapping", None),
    "document is a list": (b"- a\n- b\n", "must be a mapping", None),
    "no apiVersion or kind": (b"a: 1\n", "not a Kubernetes manifest", None),
    "duplicate key": (GOOD + b"spec: {}\n", "duplicate key 'spec'", "VocelioService/default/good"),
    "unknown tag": (GOOD.replace(b"{name: good}", b"!!python/object:os.system {name: good}"), "constructor",
                    "VocelioService/default/good"),
    "impossible date": (GOOD + b"note: 2024-13-45\n", "month must be in 1..12", "VocelioService/default/good"),
    "huge integer": (GOOD.replace(b"port: 9000", b"port: " + b"9" * 5000), "integer",
                     "VocelioService/default/good"),
    "invalid spec": (GOOD.replace(b"pathPrefix: /api/v1/good", b"pathPrefix: nope"), "spec.pathPrefix",
                     "VocelioService/default/good"),
    "unknown field": (GOOD + b"  colour: blue\n", "colour", "VocelioService/default/good"),
    "recursive alias": (b"a: &a [*a]\n", "recursive YAML alias", None),
    "recursive merge": (b"a: &a {<<: *a}\n", "recursive YAML alias", None),
    "namespace is a list": (GOOD.replace(b"{name: good}", b"{name: good, namespace: [x]}"), "metadata", None),
    "unsupported kind": (GOOD.replace(b"kind: VocelioService", b"kind: Gateway"), "unsupported kind",
                         "Gateway/default/good"),
}

#: name -> (file bytes, text of the file-level problem)
BAD_FILES: dict[str, tuple[bytes, str]] = {
    "not UTF-8": (GOOD.replace(b"/api/v1/good", b"/api/v1/g\xffood"), "not UTF-8: byte 0xff at line 5"),
    "Latin-1 text": ("# caf\u00e9\n".encode("latin-1") + GOOD, "not UTF-8"),
    "tab indentation": (b"a:\n\tb: 1\n", "found character '\\t'"),
    "unclosed flow": (b"a: [1, 2\n", "invalid YAML"),
    "NUL byte": (b"a: \x00\n", "unacceptable character"),
    "billion laughs": (BOMB, "once aliases are expanded"),
    "deep nesting": (b"[" * 5000 + b"]" * 5000, "nested deeper than 64 levels"),
    "too many nodes": (b"[" + b"1," * 60_000 + b"1]", "more YAML nodes than the limit of 50000"),
}

LIMITS = ManifestLimits(max_file_bytes=256 * 1024, max_yaml_nodes=50_000, max_yaml_depth=64)


def is_one_line(text: str) -> bool:
    return "\n" not in text and "\r" not in text and 0 < len(text) <= 600


@pytest.mark.parametrize("case", sorted(BAD_DOCUMENTS))
def test_a_bad_document_is_a_one_line_problem_and_its_neighbours_still_load(case: str) -> None:
    data, expected, key = BAD_DOCUMENTS[case]
    stream = named("before") + b"---\n" + data + b"\n---\n" + named("after")
    documents, stream_problem = parse_stream(stream, LIMITS)
    assert stream_problem is None
    loaded = [d.key for d in documents if d.resource is not None]
    assert loaded == ["VocelioService/default/before", "VocelioService/default/after"]
    (bad,) = [d for d in documents if d.failed]
    assert bad.index == 2
    assert bad.problem is not None
    assert expected in bad.problem, bad.problem
    assert is_one_line(bad.problem), bad.problem
    assert bad.key == key


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_a_bad_file_is_a_one_line_problem_naming_the_file(case: str, tmp_path: Path) -> None:
    data, expected = BAD_FILES[case]
    path = tmp_path / "broken.yaml"
    path.write_bytes(data)
    started = time.monotonic()
    result = load_file(path, LIMITS)
    assert time.monotonic() - started < 5.0
    lines = result.problem_lines()
    assert len(lines) == 1, lines
    assert str(path) in lines[0], lines
    assert expected in lines[0], lines
    assert is_one_line(lines[0].split(": ", 1)[1])
    assert not [d for d in result.documents if d.resource is not None]


def test_a_stream_error_keeps_the_documents_before_it_and_names_where_it_stopped(tmp_path: Path) -> None:
    path = tmp_path / "stream.yaml"
    path.write_bytes(named("first") + b"---\nkind: [\n")
    result = load_file(path)
    assert [d.key for d in result.documents] == ["VocelioService/default/first"]
    assert result.problem is not None
    assert result.problem.startswith("document 2: invalid YAML at line 9")


def test_a_file_over_the_size_limit_is_refused_without_being_read(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    path.write_bytes(GOOD + b"#" * (300 * 1024))
    result = load_file(path, LIMITS)
    assert result.problem is not None
    assert "over the limit of 262144 bytes" in result.problem


def test_special_files_are_problems_not_hangs(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)  # opening a FIFO for reading would block until a writer comes
    loop = tmp_path / "loop.yaml"
    loop.symlink_to(loop)
    dangling = tmp_path / "dangling.yaml"
    dangling.symlink_to(tmp_path / "nowhere.yaml")
    (tmp_path / "folder.yaml").mkdir()
    (tmp_path / "folder.yaml" / "inner.yaml").write_bytes(named("inner"))
    started = time.monotonic()
    loaded = load_folder(tmp_path)
    assert time.monotonic() - started < 5.0
    text = "\n".join(loaded.problems)
    assert f"{fifo}: not a regular file" in text
    assert f"{loop}: cannot read: Too many levels of symbolic links" in text
    assert f"{dangling}: cannot read: No such file or directory" in text
    assert f"{tmp_path / 'folder.yaml'}: is a directory" in text
    assert [r.metadata.name for r in loaded.services] == ["inner"]
    assert all(is_one_line(p) for p in loaded.problems)


def test_an_unreadable_file_is_a_transient_problem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Tests run as root, for whom chmod 000 changes nothing: refuse the open instead.
    path = tmp_path / "secret.yaml"
    path.write_bytes(GOOD)
    real_open = os.open

    def refusing(name: object, *args: object, **kw: object) -> int:
        if str(name) == str(path):
            raise PermissionError(13, "Permission denied", str(name))
        return real_open(name, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", refusing)
    result = load_file(path)
    assert result.problem == "cannot read: Permission denied"
    assert result.transient


def test_a_file_deleted_between_listing_and_opening_is_a_problem_for_that_file(tmp_path: Path) -> None:
    (tmp_path / "stays.yaml").write_bytes(named("stays"))
    (tmp_path / "goes.yaml").write_bytes(named("goes"))
    listing = scan_folder(tmp_path)
    (tmp_path / "goes.yaml").unlink()
    loaded = load_files(listing.files)
    assert [r.metadata.name for r in loaded.services] == ["stays"]
    assert loaded.problems == [f"{tmp_path / 'goes.yaml'}: cannot read: No such file or directory"]


def test_hidden_entries_and_a_mounted_configmaps_timestamped_folders_are_not_read_twice(tmp_path: Path) -> None:
    from tests.harness.mount import write_configmap_volume

    write_configmap_volume(tmp_path, {"services.yaml": named("mounted")})
    (tmp_path / ".swap.yaml").write_bytes(b"{{{")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "loop").symlink_to(tmp_path)  # a symlinked folder that loops is followed once
    loaded = load_folder(tmp_path)
    assert loaded.problems == []
    assert [r.metadata.name for r in loaded.services] == ["mounted"]


def test_a_file_of_many_bad_documents_reports_a_bounded_number_of_lines(tmp_path: Path) -> None:
    path = tmp_path / "many.yaml"
    path.write_bytes(b"---\n{}\n" * 5000)
    lines = load_file(path).problem_lines()
    assert len(lines) == 21
    assert lines[-1] == f"{path}: 4980 more invalid documents"


def test_another_apis_manifests_are_ignored_and_empty_documents_skipped() -> None:
    documents, problem = parse_stream(b"---\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: s}\n---\n" + GOOD)
    assert problem is None
    assert [d.key for d in documents] == ["VocelioService/default/good"]


def test_an_unexpected_validator_failure_is_still_a_problem_of_that_document(monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(doc: object) -> list[str]:
        raise KeyError("surprise")

    monkeypatch.setattr(manifests, "schema_problems", explode)
    documents, problem = parse_stream(GOOD)
    assert problem is None
    assert documents[0].problem == "cannot validate: KeyError: 'surprise'"
    assert documents[0].key == "VocelioService/default/good"


YAMLISH = st.lists(st.sampled_from([
    b"apiVersion: gateway.vocelio.ai/v1alpha1\n", b"kind: VocelioService\n", b"kind: RateTier\n",
    b"metadata: {name: x}\n", b"metadata:\n  name: y\n", b"spec:\n", b"  pathPrefix: /a\n", b"---\n",
    b"- ", b"  ", b"\t", b"&a ", b"*a ", b"<<: ", b"{", b"}", b"[", b"]", b",", b":", b"? ", b"!!str ",
    b"!!binary ", b"!!timestamp ", b"!!python/object ", b"'", b'"', b"|\n", b">\n", b"#", b"\n", b"\xff",
    b"\x00", b"\xef\xbb\xbf", b"%YAML 1.1\n", b"1e999", b"2024-02-30", b"0x", b"~", b"null", b"\\u0000",
]), max_size=40).map(b"".join)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(YAMLISH, st.binary(max_size=300)))
def test_random_yamlish_bytes_never_raise_and_every_problem_is_one_line(data: bytes) -> None:
    documents, problem = parse_stream(data, ManifestLimits(4096, 500, 20))
    assert problem is None or is_one_line(problem)
    for doc in documents:
        assert (doc.resource is None) == (doc.problem is not None)
        assert doc.problem is None or is_one_line(doc.problem)


KEYS = st.sampled_from(["apiVersion", "kind", "metadata", "name", "namespace", "spec", "pathPrefix", "backends",
                        "staticEndpoints", "address", "port", "match", "requests", "windowSeconds", "keyBy", "x"])
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=20),
                    st.sampled_from(["gateway.vocelio.ai/v1alpha1", "VocelioService", "RateTier", "/a", "ip"]))
DOCS = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                     st.dictionaries(st.one_of(KEYS, st.integers()), inner,
                                                                     max_size=6)), max_leaves=30)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(DOCS, st.sampled_from(["VocelioService", "RateTier"]))
def test_any_document_shape_is_validated_without_raising(doc: object, kind: str) -> None:
    from vocelio_operator.local.manifests import check_document

    for candidate in (doc, {"apiVersion": "gateway.vocelio.ai/v1alpha1", "kind": kind, "metadata": doc,
                            "spec": doc}):
        result = check_document(1, candidate)
        assert result is None or (result.resource is None) == (result.problem is not None)
        assert result is None or result.problem is None or is_one_line(result.problem)
