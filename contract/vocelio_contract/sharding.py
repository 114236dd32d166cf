"""Splits a serialised GatewayConfig over ConfigMaps when it would pass the
1 MiB object limit. Pure; used by the config writer, and the proxy's file and
API sources join the parts back (see `vocelio_proxy.lifecycle.sources`).

Layout: the first ConfigMap always holds `gateway.json` when the config fits;
otherwise it holds `manifest.json` ({"hash", "parts"}) and the parts go to
`<name>-part-<i>` ConfigMaps, each with one key `part` (the parts concatenate
to the exact JSON)."""

from __future__ import annotations

import json


def shard_config(text: str, config_hash: str, name: str, limit: int) -> dict[str, dict[str, str]]:
    """ConfigMap name -> data, for a config of `len(text)` characters."""
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
    out = {name: {"manifest.json": json.dumps({"hash": config_hash, "parts": len(parts)})}}
    for index, part in enumerate(parts):
        out[f"{name}-part-{index}"] = {"part": part}
    return out


def _chunks(text: str, size: int) -> list[str]:
    return [text[i:i + size] for i in range(0, len(text), size)]
