"""What build this process runs, for the `vocelio_build_info` gauge of the proxy
and the operator and for `--version`: the package version, the Python version
and the source commit. The commit comes from `VOCELIO_BUILD_COMMIT` (the images
set it at build time); a source checkout without it reports `unknown`. Read by
`vocelio_proxy.process.metrics`, `vocelio_operator.kube.metrics` and both CLIs."""

from __future__ import annotations

import os
import platform
import re

from vocelio_contract import __version__

_COMMIT = re.compile(r"[0-9a-f]{7,40}")


def build_labels(component: str) -> dict[str, str]:
    """The labels of `vocelio_build_info` (all bounded: one value per process)."""
    commit = os.environ.get("VOCELIO_BUILD_COMMIT", "").strip().lower()
    return {
        "component": component,
        "version": __version__,
        "python": platform.python_version(),
        "commit": commit if _COMMIT.fullmatch(commit) else "unknown",
    }


def version_line(prog: str) -> str:
    """The `--version` answer: `vocelio-proxy 0.1.0 (commit abc1234, Python 3.11.2)`."""
    labels = build_labels(prog)
    return f"{prog} {labels['version']} (commit {labels['commit']}, Python {labels['python']})"
