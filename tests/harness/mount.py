"""Writes files the way kubelet updates a mounted ConfigMap volume: a new
timestamped folder, then an atomic rename of the `..data` symlink, with each
key a symlink through `..data`. Used by hot-reload and operator tests."""

from __future__ import annotations

import os
import time
from pathlib import Path


def write_configmap_volume(folder: Path, files: dict[str, bytes]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    stamp = folder / f"..{time.strftime('%Y_%m_%d_%H_%M_%S')}.{time.monotonic_ns()}"
    stamp.mkdir()
    for name, data in files.items():
        (stamp / name).write_bytes(data)
    tmp = folder / "..data_tmp"
    if tmp.is_symlink():
        tmp.unlink()
    os.symlink(stamp.name, tmp)
    previous = os.readlink(folder / "..data") if (folder / "..data").is_symlink() else None
    os.rename(tmp, folder / "..data")
    for name in files:
        link = folder / name
        if not link.is_symlink():
            os.symlink(f"..data/{name}", link)
    if previous:
        for child in (folder / previous).iterdir():
            child.unlink()
        (folder / previous).rmdir()
