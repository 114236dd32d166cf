"""ConfigMap sharding of a serialised GatewayConfig, both directions, with the one
set of limits every side uses: the operator's writer splits (`shard_config`), the
proxy's file source (a mounted ConfigMap folder) and API source (watched
ConfigMaps) join (`join_sharded`), and the Helm chart mounts `MAX_PARTS` part
ConfigMaps (tests/unit/test_sharding.py holds the chart to it). Pure.

Layout: the first ConfigMap always holds `gateway.json` when the config fits;
otherwise it holds `manifest.json` ({"hash", "parts"}) and the parts go to
`<name>-part-<i>` ConfigMaps, each with one key `part` (the parts concatenate
to the exact JSON)."""

from __future__ import annotations

import json
from collections.abc import Callable

from vocelio_contract.config import ConfigError, GatewayConfig, parse_config

#: The API server refuses objects over 1 MiB (etcd's request limit); a part leaves room
#: for the ConfigMap's metadata.
OBJECT_LIMIT_BYTES = 1 << 20
#: Default bytes per ConfigMap (the operator's `shard_bytes`).
PART_BYTES = 900 * 1024
#: Most part ConfigMaps a config may need: the chart's projected volume mounts this many,
#: so a config needing more could never reach a proxy that reads its config from files.
MAX_PARTS = 8


class ConfigTooLarge(ValueError):
    """The config needs more than `MAX_PARTS` ConfigMaps at this part size."""


def shard_config(text: str, config_hash: str, name: str, limit: int = PART_BYTES) -> dict[str, dict[str, str]]:
    """ConfigMap name -> data, for a config of `len(text)` characters. Raises
    `ConfigTooLarge` rather than write parts no proxy would read."""
    if len(text.encode()) <= limit:
        return {name: {"gateway.json": text}}
    parts: list[str] = []
    current: list[str] = []
    size = 0
    for char_chunk in _chunks(text, 4096):
        chunk_bytes = len(char_chunk.encode())
        if size + chunk_bytes > limit and current:
            parts.append("".join(current))
            current, size = [], 0
        current.append(char_chunk)
        size += chunk_bytes
    if current:
        parts.append("".join(current))
    if len(parts) > MAX_PARTS:
        raise ConfigTooLarge(f"the config ({len(text.encode())} bytes) needs {len(parts)} ConfigMaps of "
                             f"{limit} bytes; at most {MAX_PARTS} are read by the proxies")
    out = {name: {"manifest.json": json.dumps({"hash": config_hash, "parts": len(parts)})}}
    for index, part in enumerate(parts):
        out[f"{name}-part-{index}"] = {"part": part}
    return out


def join_sharded(manifest_raw: str | bytes, read_part: Callable[[int], str | bytes]) -> GatewayConfig:
    """Reassemble a config split over ConfigMaps by `shard_config`. A manifest naming
    more than `MAX_PARTS` parts, a missing part, or parts of two versions (a swap in
    progress) are a `ConfigError`: the proxy keeps its last good config."""
    try:
        manifest = json.loads(manifest_raw)
        count = int(manifest["parts"])
        if not 0 < count <= MAX_PARTS:
            raise ValueError(f"the manifest names {count} parts (1 to {MAX_PARTS} allowed)")
        parts = [read_part(i) for i in range(count)]
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"incomplete sharded config: {exc}") from exc
    raw = b"".join(p if isinstance(p, bytes) else p.encode() for p in parts)
    config = parse_config(raw)
    if config.hash != manifest.get("hash"):
        # Parts from two different versions (a swap in progress): wait for the next swap.
        raise ConfigError("config parts do not match the manifest hash")
    return config


def _chunks(text: str, size: int) -> list[str]:
    return [text[i:i + size] for i in range(0, len(text), size)]
