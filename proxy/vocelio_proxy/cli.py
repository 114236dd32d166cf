"""`vocelio-proxy`: run the proxy against a GatewayConfig file, print the
config JSON Schema, or check a config file. The process entry point.

Every user error is one line on stderr and a non-zero exit status, never a
traceback (`clierrors.guarded`). Settings come from the settings file, then
the `VOCELIO_*` environment (which overrides the file), then the flags."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from vocelio_contract.buildinfo import version_line
from vocelio_contract.config import ConfigError, json_schema, parse_config
from vocelio_contract.logs import setup_logging
from vocelio_proxy.clierrors import OneLineParser, UserError, env_help, guarded, one_line
from vocelio_proxy.lifecycle.app import create_app, serve
from vocelio_proxy.lifecycle.sources import MAX_CONFIG_FILE_BYTES, read_regular_file
from vocelio_proxy.settings import ProxySettings, load_settings

log = logging.getLogger("vocelio.proxy")


def _run(coro: object) -> None:
    try:
        import uvloop

        uvloop.run(coro)  # type: ignore[arg-type]
    except ImportError:  # pragma: no cover - uvloop is a dependency
        asyncio.run(coro)  # type: ignore[arg-type]


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="vocelio-proxy", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="environment variables: see `vocelio-proxy serve --help`")
    parser.add_argument("--version", action="version", version=version_line("vocelio-proxy"))
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("serve", help="serve traffic", formatter_class=argparse.RawDescriptionHelpFormatter,
                         epilog=env_help(ProxySettings, "VOCELIO_", nested=True))
    run.add_argument("--config", type=Path, help="GatewayConfig JSON file (hot-reloaded)")
    run.add_argument("--config-from-api", metavar="NAMESPACE/NAME",
                     help="watch the config ConfigMap through the Kubernetes API instead of a file")
    run.add_argument("--settings", type=Path, help="settings file (YAML)")
    run.add_argument("--host")
    run.add_argument("--port", type=int)
    run.add_argument("--log-level", help="debug, info, warning or error (any case)")
    run.add_argument("--log-format", help="json (default) or text (human-readable, for development)")
    run.add_argument("--no-access-log", action="store_true")
    run.add_argument("--workers", type=_workers_flag,
                     help="gateway processes sharing the port: a number, or auto (the CPUs available)")
    # A worker of a multi-worker pod (lifecycle.worker): started by the supervisor, never by hand.
    run.add_argument("--as-worker", help=argparse.SUPPRESS)
    sub.add_parser("schema", help="print the GatewayConfig JSON Schema")
    check = sub.add_parser("check-config", help="validate a GatewayConfig file")
    check.add_argument("file", type=Path)
    return parser


def _workers_flag(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number or auto") from None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "as_worker", None):
        from vocelio_proxy.lifecycle.worker import WorkerChannel, WorkerRole, die_with_parent

        role = WorkerRole.parse(args.as_worker)
        die_with_parent(role)
        channel = WorkerChannel(role)
        args.channel = channel
        return guarded(f"vocelio-proxy {args.command}", lambda: _command(args), report=channel.failed)
    return guarded(f"vocelio-proxy {args.command}", lambda: _command(args))


def _command(args: argparse.Namespace) -> int:
    if args.command == "schema":
        sys.stdout.write(json_schema())
        return 0
    if args.command == "check-config":
        try:
            cfg = parse_config(read_regular_file(args.file, MAX_CONFIG_FILE_BYTES))
        except ConfigError as exc:
            print(f"{args.file}: invalid: {one_line(str(exc))}", file=sys.stderr)
            return 1
        print(f"{args.file}: ok, version {cfg.version}, {len(cfg.services)} services")
        return 0
    return _serve(args)


def _serve(args: argparse.Namespace) -> int:
    settings = load_settings(args.settings, config_path=args.config, host=args.host, port=args.port,
                             log_level=args.log_level, log_format=args.log_format,
                             access_log=False if args.no_access_log else None, workers=args.workers)
    source = None
    if args.config_from_api:
        namespace, _, name = args.config_from_api.partition("/")
        if not namespace or not name or "/" in name:
            raise UserError(f"--config-from-api: {args.config_from_api!r} is not NAMESPACE/NAME")
        from vocelio_proxy.lifecycle.kube_source import KubeConfigMapSource

        source = KubeConfigMapSource(namespace, name)
    elif settings.config_path is None:
        raise UserError("no config: give --config FILE (or VOCELIO_CONFIG_PATH) or --config-from-api NAMESPACE/NAME")
    setup_logging(settings.log_level, settings.log_format)
    channel = getattr(args, "channel", None)
    if channel is not None:
        from vocelio_proxy.lifecycle.worker import label_logs

        label_logs(channel.role)
    if source is None and settings.config_path is not None and channel is None:
        _warn_when_empty(settings.config_path)
    if channel is None and settings.workers != 1:
        from vocelio_proxy.policy.workers import resolve_workers
        from vocelio_proxy.process.workers import available_cpus

        count = resolve_workers(settings.workers, available_cpus())
        if count > 1:
            return _supervise(args, settings, count)

    async def go() -> None:
        if channel is None:
            await serve(create_app(settings, source), settings)
        else:
            await serve(create_app(settings, source), settings, reuse_port=True, listening=channel.ready)

    _run(go())
    return 0


def _supervise(args: argparse.Namespace, settings: ProxySettings, count: int) -> int:
    """Run `count` workers with the same flags under one supervisor (lifecycle.supervisor)."""
    from vocelio_proxy.lifecycle.supervisor import StartFailure, Supervisor

    argv: list[str] = []
    for flag, value in (("--config", args.config), ("--config-from-api", args.config_from_api),
                        ("--settings", args.settings), ("--host", args.host), ("--log-level", args.log_level),
                        ("--log-format", args.log_format)):
        if value is not None:
            argv += [flag, str(value)]
    if args.no_access_log:
        argv.append("--no-access-log")
    try:
        asyncio.run(Supervisor(settings, argv, count).run())
    except StartFailure as exc:
        raise UserError(str(exc), exc.status) from None
    return 0


def _warn_when_empty(path: Path) -> None:
    """Say loudly, at start-up, that the gateway is about to serve nothing: a missing
    file (the mount may still appear) or a config without services."""
    try:
        services = len(parse_config(read_regular_file(path, MAX_CONFIG_FILE_BYTES)).services)
    except (OSError, ConfigError) as exc:
        message = f"the config {path} cannot be used yet ({one_line(str(exc))}): every path answers 404 or 503 " \
                  "until a valid one appears"
    else:
        if services:
            return
        message = f"the config {path} has no services: every path answers 404 until one is added"
    print(f"vocelio-proxy serve: warning: {message}", file=sys.stderr, flush=True)
    log.warning("starting with no services", extra={"fields": {"config": str(path)}})


if __name__ == "__main__":
    raise SystemExit(main())
