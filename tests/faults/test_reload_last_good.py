"""The last good version of a resource keeps serving (#12), through a running
gateway on a folder of manifests: break the file (many ways), the service still
answers 200 with its old config and `/status` names the problem; fix the file,
the new version applies; delete the file, the route 404s."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.harness.app_fixtures import GatewayFactory, UpstreamFactory, poll
from tests.harness.reload_tools import service_yaml, write_atomic
from vocelio_operator.local.files import FolderSource

BREAKAGES: dict[str, Callable[[str], str]] = {
    "YAML syntax error": lambda text: text + "  : [\n",
    "non-UTF-8 byte": lambda text: text.replace("rewrite", "rew\udcffrite"),
    "apiVersion a number": lambda text: text.replace("gateway.vocelio.ai/v1alpha1", "1"),
    "kind a list": lambda text: text.replace("kind: VocelioService", "kind: [VocelioService]"),
    "metadata a list": lambda text: text.replace("metadata:\n  name: one", "metadata: [one]"),
    "spec invalid": lambda text: text.replace("pathPrefix: /api/v1/one", "pathPrefix: one"),
    "document a list": lambda text: "- one\n",
    "duplicate key": lambda text: text + "spec: {}\n",
    "tab indentation": lambda text: text.replace("  rewrite", "\trewrite"),
    "billion laughs": lambda text: text + "x: &a [1,1,1,1,1,1,1,1,1,1]\n" + "".join(
        f"x{i}: &a{i} [" + ",".join([f"*{'a' if i == 0 else f'a{i - 1}'}"] * 10) + "]\n" for i in range(7)),
    "truncated to nothing": lambda text: "",
    "reserved path": lambda text: text.replace("pathPrefix: /api/v1/one", "pathPrefix: /status"),
}


def write(path: Path, text: str) -> None:
    write_atomic(path, text.encode("utf-8", "surrogateescape"))


@pytest.mark.parametrize("how", sorted(BREAKAGES))
async def test_a_broken_file_keeps_serving_the_old_version_until_fixed_and_deletion_removes_it(
        how: str, upstream_factory: UpstreamFactory, gateway_factory: GatewayFactory, tmp_path: Path) -> None:
    up = await upstream_factory()
    write(tmp_path / "one.yaml", service_yaml("one", up.port, rewrite="/v1"))
    write(tmp_path / "other.yaml", service_yaml("other", up.port))
    source = FolderSource(tmp_path)
    gw = await gateway_factory(source=source, config_poll_s=0.05)
    status, _, body = await gw.get("/api/v1/one/x")
    assert status == 200
    assert json.loads(body)["path"] == "/v1/x"
    applied = gw.state.reloads_ok

    write(tmp_path / "one.yaml", BREAKAGES[how](service_yaml("one", up.port, rewrite="/v2")))
    await poll(lambda: any("one.yaml" in p for p in gw.state.source_problems), "the problem is reported")
    status, _, body = await gw.get("/api/v1/one/x")
    assert status == 200
    assert json.loads(body)["path"] == "/v1/x"
    assert (await gw.get("/api/v1/other/x"))[0] == 200
    config = json.loads((await gw.get("/status"))[2])["config"]
    assert any("one.yaml" in p for p in config["source_problems"]), config
    assert [k.split(" ")[0] for k in config["kept_last_good"]] == ["VocelioService/default/one"]
    assert config["watcher"]["restarts"] == 0
    metrics = (await gw.get("/metrics"))[2].decode()
    assert "vocelio_config_resources_kept_last_good 1.0" in metrics

    write(tmp_path / "one.yaml", service_yaml("one", up.port, rewrite="/v3"))
    await poll(lambda: not gw.state.source_problems and gw.state.reloads_ok > applied, "the fix is applied")
    status, _, body = await gw.get("/api/v1/one/x")
    assert status == 200
    assert json.loads(body)["path"] == "/v3/x"
    assert json.loads((await gw.get("/status"))[2])["config"]["kept_last_good"] == []

    (tmp_path / "one.yaml").unlink()
    await poll(lambda: "default/one" not in gw.state.runtime.services, "the route is removed")  # type: ignore[union-attr]
    assert (await gw.get("/api/v1/one/x"))[0] == 404
    assert (await gw.get("/api/v1/other/x"))[0] == 200


async def test_only_the_broken_document_of_a_multi_document_file_keeps_its_old_version(
        upstream_factory: UpstreamFactory, gateway_factory: GatewayFactory, tmp_path: Path) -> None:
    up = await upstream_factory()
    docs = [service_yaml(n, up.port, rewrite=f"/{n}1") for n in ("a", "b", "c")]
    write(tmp_path / "all.yaml", "---\n".join(docs))
    gw = await gateway_factory(source=FolderSource(tmp_path), config_poll_s=0.05)
    # a changes, b breaks (its name is readable), c is removed on purpose
    write(tmp_path / "all.yaml", "---\n".join([
        service_yaml("a", up.port, rewrite="/a2"),
        service_yaml("b", up.port, rewrite="/b2").replace("pathPrefix: /api/v1/b", "pathPrefix: b")]))
    await poll(lambda: gw.state.source_problems, "problem reported")
    assert json.loads((await gw.get("/api/v1/a/x"))[2])["path"] == "/a2/x"
    assert json.loads((await gw.get("/api/v1/b/x"))[2])["path"] == "/b1/x"
    assert (await gw.get("/api/v1/c/x"))[0] == 404
    problem = gw.state.source_problems[0]
    assert "all.yaml (document 2) VocelioService/b: spec.pathPrefix" in problem
    # A bad extra document names no resource of its own: the valid documents apply, the
    # resources of the file that are missing (b) keep their last good version.
    write(tmp_path / "all.yaml", "---\n".join([service_yaml("a", up.port, rewrite="/a3"), "- not a manifest\n"]))
    await poll(lambda: any("document 2" in p and "must be a mapping" in p for p in gw.state.source_problems),
               "the new problem is reported")
    assert json.loads((await gw.get("/api/v1/a/x"))[2])["path"] == "/a3/x"
    assert json.loads((await gw.get("/api/v1/b/x"))[2])["path"] == "/b1/x"
