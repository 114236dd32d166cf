"""The folder source keeps the last good version of each resource: a broken file
or document never removes a route; only deleting the file, or a clean file
without the resource, does. Driven through `FolderSource.load` on real files,
without a gateway."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from vocelio_contract.config import ConfigError, GatewayConfig
from vocelio_operator.local.files import FolderSource


def svc(name: str, rewrite: str = "/", prefix: str | None = None) -> str:
    return f"""apiVersion: gateway.vocelio.ai/v1alpha1
kind: VocelioService
metadata: {{name: {name}}}
spec:
  pathPrefix: {prefix or f"/api/v1/{name}"}
  rewrite: {rewrite}
  backends: [{{staticEndpoints: [{{address: 127.0.0.1, port: 9000}}]}}]
"""


def routes(config: GatewayConfig) -> dict[str, tuple[list[str], str | None]]:
    return {s.name: (s.prefixes, s.rewrite) for s in config.services}


BREAKAGES: dict[str, Callable[[str], str]] = {
    "YAML syntax": lambda text: text + "  : [\n",
    "non-UTF-8 byte": lambda text: text.replace("rewrite", "rew\udcffrite"),
    "apiVersion a number": lambda text: text.replace("gateway.vocelio.ai/v1alpha1", "1"),
    "metadata a list": lambda text: text.replace("metadata: {name: one}", "metadata: [one]"),
    "invalid spec": lambda text: text.replace("pathPrefix: /api/v1/one", "pathPrefix: one"),
    "misspelt name": lambda text: text.replace("{name: one}", "{name: One}"),
    "tabs": lambda text: text.replace("  rewrite", "\trewrite"),
    "duplicate key": lambda text: text + "spec: {}\n",
    "document a scalar": lambda text: "one\n",
    "empty (truncated) file": lambda text: "",
    "reserved path": lambda text: text.replace("pathPrefix: /api/v1/one", "pathPrefix: /metrics"),
}


def write(path: Path, text: str) -> None:
    path.write_bytes(text.encode("utf-8", "surrogateescape"))


@pytest.mark.parametrize("how", sorted(BREAKAGES))
def test_a_broken_file_keeps_its_resources_last_good_version(how: str, tmp_path: Path) -> None:
    source = FolderSource(tmp_path)
    write(tmp_path / "one.yaml", svc("one", rewrite="/v1"))
    write(tmp_path / "two.yaml", svc("two"))
    assert routes(source.load())["one"] == (["/api/v1/one"], "/v1")
    write(tmp_path / "one.yaml", BREAKAGES[how](svc("one", rewrite="/v2")))
    config = source.load()
    assert routes(config)["one"] == (["/api/v1/one"], "/v1")  # the old version, not the new one
    assert "two" in routes(config)
    assert any("one.yaml" in p for p in source.problems), source.problems
    assert len(source.kept) == 1
    assert source.kept[0].startswith("VocelioService/default/one (from ")
    write(tmp_path / "one.yaml", svc("one", rewrite="/v3"))
    assert routes(source.load())["one"] == (["/api/v1/one"], "/v3")
    assert source.problems == []
    assert source.kept == []
    (tmp_path / "one.yaml").unlink()
    assert "one" not in routes(source.load())


def test_one_bad_document_keeps_only_its_own_last_good_version(tmp_path: Path) -> None:
    source = FolderSource(tmp_path)
    write(tmp_path / "many.yaml", "---\n".join([svc("a", "/a1"), svc("b", "/b1"), svc("c", "/c1")]))
    source.load()
    # a changes, b breaks (its name is still readable), c is deleted on purpose
    write(tmp_path / "many.yaml", "---\n".join([svc("a", "/a2"), svc("b", "/b2").replace("/api/v1/b", "b")]))
    config = source.load()
    assert routes(config) == {"a": (["/api/v1/a"], "/a2"), "b": (["/api/v1/b"], "/b1")}
    assert [k.split(" ")[0] for k in source.kept] == ["VocelioService/default/b"]


def test_a_broken_document_that_names_no_resource_keeps_everything_missing_from_its_file(tmp_path: Path) -> None:
    source = FolderSource(tmp_path)
    write(tmp_path / "many.yaml", "---\n".join([svc("a", "/a1"), svc("b", "/b1"), svc("c", "/c1")]))
    source.load()
    # a is fine; the second document lost its metadata: it could be b or c, so both stay
    write(tmp_path / "many.yaml", "---\n".join([svc("a", "/a2"), svc("b", "/b2").replace("metadata: {name: b}",
                                                                                        "metadata: [b]")]))
    config = source.load()
    assert routes(config) == {"a": (["/api/v1/a"], "/a2"), "b": (["/api/v1/b"], "/b1"),
                              "c": (["/api/v1/c"], "/c1")}
    # once the file is clean, c (absent from it) goes: that is intent
    write(tmp_path / "many.yaml", "---\n".join([svc("a", "/a2"), svc("b", "/b2")]))
    assert set(routes(source.load())) == {"a", "b"}


def test_a_stream_error_after_good_documents_applies_them_and_keeps_the_rest(tmp_path: Path) -> None:
    source = FolderSource(tmp_path)
    write(tmp_path / "many.yaml", "---\n".join([svc("a", "/a1"), svc("b", "/b1")]))
    source.load()
    write(tmp_path / "many.yaml", svc("a", "/a2") + "---\nkind: [\n")
    config = source.load()
    assert routes(config) == {"a": (["/api/v1/a"], "/a2"), "b": (["/api/v1/b"], "/b1")}


def test_a_newcomer_cannot_take_an_established_prefix(tmp_path: Path) -> None:
    source = FolderSource(tmp_path)
    write(tmp_path / "z-owner.yaml", svc("zeta", prefix="/api/v1/shared"))
    source.load()
    # "alpha" sorts first, so without first-seen ordering it would win the prefix
    write(tmp_path / "a-newcomer.yaml", svc("alpha", prefix="/api/v1/shared"))
    config = source.load()
    assert list(routes(config)) == ["zeta"]
    assert any("VocelioService/default/alpha: PrefixConflict" in p for p in source.problems)


def test_an_edit_the_renderer_rejects_keeps_the_accepted_version(tmp_path: Path) -> None:
    source = FolderSource(tmp_path)
    write(tmp_path / "a.yaml", svc("a"))
    write(tmp_path / "b.yaml", svc("b"))
    source.load()
    write(tmp_path / "a.yaml", svc("a", prefix="/api/v1/b"))  # collides with b
    config = source.load()
    assert routes(config) == {"a": (["/api/v1/a"], "/"), "b": (["/api/v1/b"], "/")}
    assert any("PrefixConflict" in p for p in source.problems)
    assert source.kept
    assert "rejected (PrefixConflict)" in source.kept[0]


def test_deleting_a_file_removes_its_resources_even_while_another_file_is_broken(tmp_path: Path) -> None:
    source = FolderSource(tmp_path)
    write(tmp_path / "a.yaml", svc("a"))
    write(tmp_path / "b.yaml", svc("b"))
    source.load()
    write(tmp_path / "a.yaml", "{{{")
    (tmp_path / "b.yaml").unlink()
    assert list(routes(source.load())) == ["a"]


def test_nothing_valid_at_all_is_a_config_error_with_the_problems_reported(tmp_path: Path) -> None:
    source = FolderSource(tmp_path)
    write(tmp_path / "a.yaml", "{{{")
    with pytest.raises(ConfigError, match="no valid VocelioService"):
        source.load()
    assert source.problems
    assert "a.yaml" in source.problems[0]


def test_a_folder_that_disappears_is_an_error_not_an_empty_config(tmp_path: Path) -> None:
    folder = tmp_path / "resources"
    folder.mkdir()
    write(folder / "a.yaml", svc("a"))
    source = FolderSource(folder)
    source.load()
    (folder / "a.yaml").unlink()
    folder.rmdir()
    with pytest.raises(ConfigError, match="cannot list the folder"):
        source.load()
    assert source.retry_wanted


def test_a_subfolder_that_cannot_be_listed_keeps_the_resources_last_seen_under_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "team").mkdir()
    write(tmp_path / "team" / "a.yaml", svc("a"))
    write(tmp_path / "b.yaml", svc("b"))
    source = FolderSource(tmp_path)
    source.load()
    real_scandir = os.scandir

    def refusing(path: str) -> Iterator[os.DirEntry[str]]:
        if str(path) == str(tmp_path / "team"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", refusing)
    assert set(routes(source.load())) == {"a", "b"}
    assert any("team: cannot list: Permission denied" in p for p in source.problems)
    assert source.retry_wanted
