"""`vocelio-gateway`: the control-plane CLI. `standalone` runs the quickstart
gateway from a folder of manifests, `validate` checks manifests offline with the
renderer's rules, `render` prints the GatewayConfig a folder produces.

Errors are one line each on stderr, never a traceback: `validate` prints one
line per problem (file, document, resource, field) and exits 1 when there is
any; every other user error (a missing file, a bad settings file or
environment value, a bad flag, a busy port) is one line and a non-zero exit
status through the one top-level handler, `vocelio_proxy.clierrors.guarded`.
Settings come from the settings file, then the environment (`VOCELIO_*`,
`VOCELIO_OPERATOR_*`), which overrides it, then the flags."""

from __future__ import annotations

import argparse
import datetime as dt
import errno
import socket
import sys
from pathlib import Path
from typing import Any

import yaml

from vocelio_contract.buildinfo import version_line
from vocelio_contract.logs import setup_logging
from vocelio_operator.local.files import load_files, rejected_outcomes, render_loaded, scan_folder
from vocelio_operator.local.manifests import ManifestError, ManifestLimits, one_line
from vocelio_operator.model.schemas import CrdsMissing, crd_manifests
from vocelio_operator.settings import OperatorSettings
from vocelio_proxy.clierrors import OneLineParser, UserError, env_help, guarded
from vocelio_proxy.settings import ProxySettings, load_settings

_RAW = argparse.RawDescriptionHelpFormatter


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="vocelio-gateway", description=__doc__, formatter_class=_RAW,
                                     epilog="environment variables: see `vocelio-gateway standalone --help` "
                                            "and `vocelio-gateway operator --help`")
    parser.add_argument("--version", action="version", version=version_line("vocelio-gateway"))
    sub = parser.add_subparsers(dest="command", required=True)
    st = sub.add_parser("standalone", help="run the gateway from a folder of resource YAML files",
                        formatter_class=_RAW, epilog=env_help(ProxySettings, "VOCELIO_", nested=True))
    st.add_argument("--resources", type=Path, default=Path("examples/resources"))
    st.add_argument("--settings", type=Path)
    st.add_argument("--host", default=None, help="listen address (default 127.0.0.1)")
    st.add_argument("--port", type=int, default=None, help="listen port (default 8080)")
    st.add_argument("--demo-backends", action="store_true", help="start demo backends for loopback endpoints")
    st.add_argument("--log-level", help="debug, info, warning or error (any case)")
    st.add_argument("--log-format", help="json (default) or text (human-readable, for development)")
    st.add_argument("--no-access-log", action="store_true")
    st.add_argument("--api-keys", type=Path, help="API key records file (see mint-key --keys-file)")
    st.add_argument("--redis-url", help="share rate limits through Redis (default: per-process limiter)")
    st.add_argument("--https-port", type=int, default=None,
                    help="also serve HTTPS on this port with a generated development certificate (`make run` uses "
                         "8443; ignored when the settings enable tls themselves)")
    st.add_argument("--dev-cert-dir", type=Path,
                    help="where the development certificate is kept (default $XDG_CACHE_HOME/vocelio-gateway/dev-tls)")
    op = sub.add_parser("operator", help="run the Kubernetes operator (kopf)", formatter_class=_RAW,
                        epilog=env_help(OperatorSettings, "VOCELIO_OPERATOR_", nested=False))
    op.add_argument("--namespace", action="append", default=[], help="watch only these namespaces")
    op.add_argument("--config-namespace")
    op.add_argument("--config-name")
    op.add_argument("--metrics-port", type=int)
    op.add_argument("--liveness-port", type=int)
    op.add_argument("--priority", type=int)
    op.add_argument("--log-level", help="debug, info, warning or error (any case)")
    op.add_argument("--log-format", help="json (default) or text")
    mk = sub.add_parser("mint-key", help="mint an API key: prints it once, writes the Secret manifest (hash only)")
    mk.add_argument("--name", required=True)
    mk.add_argument("--tenant")
    mk.add_argument("--tier")
    mk.add_argument("--roles", default="", help="comma-separated")
    mk.add_argument("--expires", help="ISO 8601 expiry in the future, e.g. 2027-01-01T00:00:00Z (no zone: UTC)")
    mk.add_argument("--namespace", default="default")
    mk.add_argument("--output", type=Path, help="write the Secret manifest here (default: stdout after the key)")
    mk.add_argument("--keys-file", type=Path, help="standalone mode: append the record to this keys file")
    va = sub.add_parser("validate", help="check resource files offline")
    va.add_argument("paths", type=Path, nargs="+")
    va.add_argument("--settings", type=Path, help="settings file (YAML): the resource_files limits")
    re_ = sub.add_parser("render", help="print the GatewayConfig rendered from a folder")
    re_.add_argument("folder", type=Path)
    sub.add_parser("crds", help="print the CRDs this version ships, for `kubectl apply --server-side -f -` "
                   "(helm never upgrades CRDs; see docs/operations/upgrading.md)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return guarded(f"vocelio-gateway {args.command}", lambda: _command(args))


def _command(args: argparse.Namespace) -> int:
    try:
        return _dispatch(args)
    except CrdsMissing as exc:  # a broken install: say so instead of checking less (exit 2, like bad input)
        raise UserError(str(exc)) from None


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "crds":
        return _crds()
    if args.command == "mint-key":
        return _mint_key(args)
    if args.command == "operator":
        return _operator(args)
    if args.command == "validate":
        limits = ManifestLimits.from_settings(load_settings(args.settings).resource_files)
        return _validate(args.paths, limits)
    if args.command == "render":
        return _render(args.folder)
    settings = load_settings(args.settings, defaults={"host": "127.0.0.1", "port": 8080}, host=args.host,
                             port=args.port, log_level=args.log_level, log_format=args.log_format,
                             access_log=False if args.no_access_log else None, api_keys_path=args.api_keys,
                             redis_url=args.redis_url)
    setup_logging(settings.log_level, settings.log_format)
    from vocelio_operator.local.standalone import run

    if args.https_port is not None and not 1 <= args.https_port <= 65535:
        raise UserError(f"--https-port: {args.https_port} is not a port (1-65535)", status=2)
    if args.https_port is not None and args.https_port == settings.port:
        raise UserError(f"--https-port {args.https_port} is the HTTP port: give each its own", status=2)
    return run(settings, args.resources, args.demo_backends, args.https_port, args.dev_cert_dir)


def _render(folder: Path) -> int:
    """Print the config a folder renders to; problems go to stderr, one line each. A
    folder that cannot be listed is an error (exit 1), not an empty config."""
    try:
        listing = scan_folder(folder)
    except ManifestError as exc:
        raise UserError(f"{folder}: {exc}", status=1) from None
    loaded = load_files(listing.files)
    loaded.problems[:0] = listing.problems
    result, loaded = render_loaded(loaded)
    for line in loaded.problems + rejected_outcomes(result):
        print(line, file=sys.stderr)
    if not loaded.services:
        print(f"warning: no VocelioService in {folder}: the config routes nothing", file=sys.stderr)
    sys.stdout.write(result.text)
    return 0


def _expiry(text: str | None) -> dt.datetime | None:
    """`--expires` as an aware time in the future (no zone: UTC); UserError otherwise."""
    if text is None:
        return None
    try:
        when = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise UserError(f"--expires: {text!r} is not an ISO 8601 time (e.g. 2027-01-01T00:00:00Z)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    if when <= dt.datetime.now(dt.UTC):
        raise UserError(f"--expires: {text!r} is in the past: the key would never work")
    return when


def _mint_key(args: argparse.Namespace) -> int:
    import json

    from vocelio_contract.apikeys import load_records, mint_key, secret_manifest

    expires = _expiry(args.expires)
    for flag, target in (("--output", args.output), ("--keys-file", args.keys_file)):
        # Checked before minting: a key shown once must never be lost to a write that fails.
        if target is not None and not target.parent.is_dir():
            raise UserError(f"{flag}: {target.parent} is not a folder")
        if target is not None and target.is_dir():
            raise UserError(f"{flag}: {target} is a folder")
    existing = []
    if args.keys_file is not None and args.keys_file.exists():
        try:
            existing = load_records(args.keys_file.read_bytes())
        except (ValueError, yaml.YAMLError) as exc:
            raise UserError(f"{args.keys_file}: not an API key file: {exc}") from None
    key, record = mint_key(name=args.name, tenant=args.tenant, tier=args.tier,
                           roles=[r for r in args.roles.split(",") if r], expires_at=expires)
    print(f"API key (shown once, store it now): {key}", file=sys.stderr)
    manifest = quoted_yaml(secret_manifest(record, args.namespace))
    if args.keys_file is not None:
        records = [*existing, record]
        args.keys_file.write_text(json.dumps([r.model_dump(mode="json") for r in records], indent=1) + "\n")
        print(f"added key {record.id} to {args.keys_file}", file=sys.stderr)
    if args.output is not None:
        args.output.write_text(manifest)
        print(f"wrote {args.output}", file=sys.stderr)
    elif args.keys_file is None:
        sys.stdout.write(manifest)
    return 0


class _QuotedDumper(yaml.SafeDumper):
    """Writes every string double-quoted. PyYAML reads YAML 1.1 and kubectl's reader YAML 1.2: a key id
    such as `123456e12345` is a string to one and a float to the other, so no string is left plain."""


_QuotedDumper.add_representer(
    str, lambda dumper, value: dumper.represent_scalar("tag:yaml.org,2002:str", value, style='"'))


def quoted_yaml(document: dict[str, Any]) -> str:
    """A manifest for `kubectl apply -f`: every string quoted, so no reader takes one for a number,
    a boolean or null."""
    return yaml.dump(document, Dumper=_QuotedDumper, sort_keys=False)


def _operator(args: argparse.Namespace) -> int:
    import asyncio

    from vocelio_operator.kube.handlers import run_operator

    overrides = {"namespaces": args.namespace or None, "config_namespace": args.config_namespace,
                 "config_name": args.config_name, "metrics_port": args.metrics_port,
                 "liveness_port": args.liveness_port, "priority": args.priority, "log_level": args.log_level,
                 "log_format": args.log_format}
    settings = OperatorSettings(**{k: v for k, v in overrides.items() if v is not None})
    for flag, port in (("--metrics-port", settings.metrics_port), ("--liveness-port", settings.liveness_port)):
        _port_free(flag, port)
    setup_logging(settings.log_level, settings.log_format)
    asyncio.run(run_operator(settings))
    return 0


def _port_free(flag: str, port: int) -> None:
    """Refuse to start, in one line, when a port the operator listens on is taken: kopf
    would otherwise retry its start-up handler forever."""
    if port == 0:
        return
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("0.0.0.0", port))  # noqa: S104 - a probe: is the port free on every interface
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise UserError(f"{flag} {port}: address already in use (another process holds the port)",
                                status=1) from None
            raise


def _crds() -> int:
    try:
        text = crd_manifests()
    except OSError as exc:  # CrdsMissing: a broken install
        print(f"vocelio-gateway crds: {one_line(str(exc))}", file=sys.stderr)
        return 2
    sys.stdout.write(text)
    return 0


def _validate(paths: list[Path], limits: ManifestLimits) -> int:
    files: list[Path] = []
    problems: list[str] = []
    for path in paths:
        if path.is_dir():
            try:
                listing = scan_folder(path)
            except ManifestError as exc:
                problems.append(f"{path}: {exc}")
                continue
            files += listing.files
            problems += listing.problems
        else:
            files.append(path)  # a missing path is reported by the loader, one line
    loaded = load_files(files, limits)
    result, loaded = render_loaded(loaded)
    problems += loaded.problems + rejected_outcomes(result)
    for line in problems:
        print(line, file=sys.stderr)
    print(f"{len(files)} files, {len(loaded.services) + len(loaded.tiers)} resources, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
