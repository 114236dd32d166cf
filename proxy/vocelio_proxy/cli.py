"""`vocelio-proxy`: run the proxy against a GatewayConfig file, print the
config JSON Schema, or check a config file. The process entry point."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from vocelio_contract.config import ConfigError, json_schema, parse_config
from vocelio_contract.logs import setup_logging
from vocelio_proxy.lifecycle.app import create_app, serve
from vocelio_proxy.lifecycle.sources import MAX_CONFIG_FILE_BYTES, read_regular_file
from vocelio_proxy.settings import SettingsError, load_settings


def _run(coro: object) -> None:
    try:
        import uvloop

        uvloop.run(coro)  # type: ignore[arg-type]
    except ImportError:  # pragma: no cover - uvloop is a dependency
        asyncio.run(coro)  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vocelio-proxy", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("serve", help="serve traffic")
    run.add_argument("--config", type=Path, help="GatewayConfig JSON file (hot-reloaded)")
    run.add_argument("--config-from-api", metavar="NAMESPACE/NAME",
                     help="watch the config ConfigMap through the Kubernetes API instead of a file")
    run.add_argument("--settings", type=Path, help="settings file (YAML)")
    run.add_argument("--host")
    run.add_argument("--port", type=int)
    run.add_argument("--log-level")
    run.add_argument("--no-access-log", action="store_true")
    sub.add_parser("schema", help="print the GatewayConfig JSON Schema")
    check = sub.add_parser("check-config", help="validate a GatewayConfig file")
    check.add_argument("file", type=Path)
    args = parser.parse_args(argv)

    if args.command == "schema":
        sys.stdout.write(json_schema())
        return 0
    if args.command == "check-config":
        try:
            cfg = parse_config(read_regular_file(args.file, MAX_CONFIG_FILE_BYTES))
        except ConfigError as exc:
            print(f"{args.file}: invalid: {' '.join(str(exc).split())}", file=sys.stderr)
            return 1
        print(f"{args.file}: ok, version {cfg.version}, {len(cfg.services)} services")
        return 0
    try:
        settings = load_settings(args.settings, config_path=args.config, host=args.host, port=args.port,
                                 log_level=args.log_level, access_log=False if args.no_access_log else None)
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    setup_logging(settings.log_level)

    source = None
    if args.config_from_api:
        from vocelio_proxy.lifecycle.kube_source import KubeConfigMapSource

        namespace, _, name = args.config_from_api.partition("/")
        source = KubeConfigMapSource(namespace, name)

    async def go() -> None:
        await serve(create_app(settings, source), settings)

    _run(go())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
