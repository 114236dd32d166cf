"""`vocelio-gateway`: the control-plane CLI. `standalone` runs the quickstart
gateway from a folder of manifests, `validate` checks manifests offline with the
renderer's rules, `render` prints the GatewayConfig a folder produces.

Errors are one line each on stderr, never a traceback: `validate` prints one
line per problem (file, document, resource, field) and exits 1 when there is
any; a bad settings file or an unexpected failure is one line and exit 2."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pydantic import ValidationError

from vocelio_contract.logs import setup_logging
from vocelio_operator.local.files import load_files, rejected_outcomes, render_folder, render_loaded, scan_folder
from vocelio_operator.local.manifests import ManifestError, ManifestLimits, one_line
from vocelio_proxy.process.supervision import describe_error
from vocelio_proxy.settings import load_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vocelio-gateway", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    st = sub.add_parser("standalone", help="run the gateway from a folder of resource YAML files")
    st.add_argument("--resources", type=Path, default=Path("examples/resources"))
    st.add_argument("--settings", type=Path)
    st.add_argument("--host", default=None)
    st.add_argument("--port", type=int, default=None)
    st.add_argument("--demo-backends", action="store_true", help="start demo backends for loopback endpoints")
    st.add_argument("--log-level")
    st.add_argument("--no-access-log", action="store_true")
    st.add_argument("--api-keys", type=Path, help="API key records file (see mint-key --keys-file)")
    st.add_argument("--redis-url", help="share rate limits through Redis (default: per-process limiter)")
    op = sub.add_parser("operator", help="run the Kubernetes operator (kopf)")
    op.add_argument("--namespace", action="append", default=[], help="watch only these namespaces")
    op.add_argument("--config-namespace")
    op.add_argument("--config-name")
    op.add_argument("--metrics-port", type=int)
    op.add_argument("--liveness-port", type=int)
    op.add_argument("--priority", type=int)
    op.add_argument("--log-level")
    mk = sub.add_parser("mint-key", help="mint an API key: prints it once, writes the Secret manifest (hash only)")
    mk.add_argument("--name", required=True)
    mk.add_argument("--tenant")
    mk.add_argument("--tier")
    mk.add_argument("--roles", default="", help="comma-separated")
    mk.add_argument("--expires", help="ISO 8601 expiry, e.g. 2027-01-01T00:00:00Z")
    mk.add_argument("--namespace", default="default")
    mk.add_argument("--output", type=Path, help="write the Secret manifest here (default: stdout after the key)")
    mk.add_argument("--keys-file", type=Path, help="standalone mode: append the record to this keys file")
    va = sub.add_parser("validate", help="check resource files offline")
    va.add_argument("paths", type=Path, nargs="+")
    va.add_argument("--settings", type=Path, help="settings file (YAML): the resource_files limits")
    re_ = sub.add_parser("render", help="print the GatewayConfig rendered from a folder")
    re_.add_argument("folder", type=Path)
    args = parser.parse_args(argv)

    if args.command == "mint-key":
        return _mint_key(args)
    if args.command == "operator":
        return _operator(args)
    try:
        return _files_command(args)
    except (OSError, ValueError, ValidationError) as exc:  # settings file missing or invalid
        print(f"vocelio-gateway {args.command}: {one_line(str(exc))}", file=sys.stderr)
        return 2
    except Exception as exc:  # a bug: still one line for the operator, the type says where to look
        print(f"vocelio-gateway {args.command}: internal error: {describe_error(exc)}", file=sys.stderr)
        return 2


def _files_command(args: argparse.Namespace) -> int:
    """The commands that read resource files: validate, render, standalone."""
    if args.command == "validate":
        limits = ManifestLimits.from_settings(load_settings(args.settings).resource_files)
        return _validate(args.paths, limits)
    if args.command == "render":
        result, loaded = render_folder(args.folder)
        for line in loaded.problems + rejected_outcomes(result):
            print(line, file=sys.stderr)
        sys.stdout.write(result.config.to_json())
        return 0
    settings = load_settings(args.settings, host=args.host or "127.0.0.1", port=args.port or 8080,
                             log_level=args.log_level, access_log=False if args.no_access_log else None,
                             api_keys_path=args.api_keys, redis_url=args.redis_url)
    setup_logging(settings.log_level)
    from vocelio_operator.local.standalone import run

    return run(settings, args.resources, args.demo_backends)


def _mint_key(args: argparse.Namespace) -> int:
    import datetime as dt
    import json

    import yaml

    from vocelio_contract.apikeys import load_records, mint_key, secret_manifest

    expires = dt.datetime.fromisoformat(args.expires.replace("Z", "+00:00")) if args.expires else None
    key, record = mint_key(name=args.name, tenant=args.tenant, tier=args.tier,
                           roles=[r for r in args.roles.split(",") if r], expires_at=expires)
    print(f"API key (shown once, store it now): {key}", file=sys.stderr)
    manifest = yaml.safe_dump(secret_manifest(record, args.namespace), sort_keys=False)
    if args.keys_file is not None:
        records = load_records(args.keys_file.read_bytes()) if args.keys_file.exists() else []
        records.append(record)
        args.keys_file.write_text(json.dumps([r.model_dump(mode="json") for r in records], indent=1) + "\n")
        print(f"added key {record.id} to {args.keys_file}", file=sys.stderr)
    if args.output is not None:
        args.output.write_text(manifest)
        print(f"wrote {args.output}", file=sys.stderr)
    elif args.keys_file is None:
        sys.stdout.write(manifest)
    return 0


def _operator(args: argparse.Namespace) -> int:
    import asyncio

    from vocelio_operator.kube.handlers import run_operator
    from vocelio_operator.settings import OperatorSettings

    overrides = {"namespaces": args.namespace or None, "config_namespace": args.config_namespace,
                 "config_name": args.config_name, "metrics_port": args.metrics_port,
                 "liveness_port": args.liveness_port, "priority": args.priority, "log_level": args.log_level}
    settings = OperatorSettings(**{k: v for k, v in overrides.items() if v is not None})
    setup_logging(settings.log_level)
    asyncio.run(run_operator(settings))
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
