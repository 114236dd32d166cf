"""Vocelio Gateway data plane: the aiohttp proxy and the `GatewayConfig` contract it consumes.

Importing the package first chooses between the compiled hot path and pure Python
(`vocelio_proxy.compiled`): it must happen before any hot-path module is imported."""

import sys

from vocelio_proxy.compiled import CompiledBuildError, activate

__version__ = "0.1.0"

try:
    COMPILED = activate()
except CompiledBuildError as exc:
    # One line, no traceback: the process was told to run compiled and cannot.
    print(f"vocelio-proxy: {exc}", file=sys.stderr)
    raise SystemExit(2) from None
