"""`vocelio-gateway validate` rejects what the API server rejects, with the
API server's messages for the cross-field (CEL) rules."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.harness.controlplane import ControlPlane
from tests.harness.kube import Kube
from tests.harness.stack import BIN, install_crds

SERVICE = """apiVersion: gateway.vocelio.ai/v1alpha1
kind: VocelioService
metadata: {{name: parity}}
spec:
  pathPrefix: {prefix}
  backends: [{{weight: {weight}, staticEndpoints: [{{address: 127.0.0.1, port: 9000}}]}}]
{extra}
"""
TIER = """apiVersion: gateway.vocelio.ai/v1alpha1
kind: RateTier
metadata: {{name: parity}}
spec: {{requests: 5, windowSeconds: 60, keyBy: ip, match: {match}}}
"""

CASES = [
    ("all-zero-weights", SERVICE.format(prefix="/a", weight=0, extra=""), "backend weights must not all be zero"),
    ("unnormalised-prefix", SERVICE.format(prefix="/a//b", weight=1, extra=""),
     "pathPrefix must be a normalised absolute path (no //, . or .. segments)"),
    ("alias-equals-prefix", SERVICE.format(prefix="/a", weight=1, extra="  aliases: [/a]"),
     "an alias must differ from pathPrefix"),
    ("probes-over-threshold", SERVICE.format(prefix="/a", weight=1, extra="  circuitBreaker: "
                                             "{consecutiveFailures: 1, halfOpenMaxProbes: 2}"),
     "halfOpenMaxProbes must not exceed consecutiveFailures"),
    ("timeout-over-interval", SERVICE.format(prefix="/a", weight=1, extra="  healthCheck: "
                                             "{intervalSeconds: 1, timeoutSeconds: 2}"),
     "timeoutSeconds must not exceed intervalSeconds"),
    ("two-match-kinds", TIER.format(match="{anonymous: true, apiKey: true}"),
     "match needs exactly one of anonymous, authenticated, apiKey, attribute, routeClass"),
    ("unknown-field", SERVICE.format(prefix="/a", weight=1, extra="  colour: blue"), "colour"),
    ("unknown-upstream-protocol", SERVICE.format(prefix="/a", weight=1, extra="  upstream: {protocol: h3}"),
     "spec.upstream.protocol"),
    ("ip-hostname", SERVICE.format(prefix="/a", weight=1, extra="  hostnames: [203.0.113.7]"),
     "a host name must not be an IP address (its last label must not be all digits)"),
    ("upper-case-hostname", SERVICE.format(prefix="/a", weight=1, extra="  hostnames: [API.example.com]"),
     "hostnames"),
    ("inner-wildcard-hostname", SERVICE.format(prefix="/a", weight=1, extra='  hostnames: ["a.*.example.com"]'),
     "hostnames"),
]


@pytest.mark.parametrize(("case", "manifest", "message"), CASES, ids=[c[0] for c in CASES])
def test_validate_and_the_api_server_reject_with_the_same_message(control_plane: ControlPlane, kube: Kube,
                                                                   tmp_path: Path, case: str, manifest: str,
                                                                   message: str) -> None:
    install_crds(control_plane, kube)
    server = control_plane.kubectl("apply", "--dry-run=server", "-n", "default", "-f", "-", input=manifest,
                                   check=False)
    assert server.returncode != 0, server.stderr
    assert message in server.stderr, server.stderr
    path = tmp_path / f"{case}.yaml"
    path.write_text(manifest)
    offline = subprocess.run([str(BIN / "vocelio-gateway"), "validate", str(path)], capture_output=True, text=True)
    assert offline.returncode == 1
    assert message in offline.stderr, offline.stderr
    assert case in offline.stderr, offline.stderr


def test_the_api_server_accepts_both_upstream_protocols_and_defaults_to_http1(control_plane: ControlPlane,
                                                                             kube: Kube) -> None:
    install_crds(control_plane, kube)
    for extra, expected in (("", "http/1.1"), ("  upstream: {protocol: h2c}", "h2c")):
        manifest = SERVICE.format(prefix="/grpc.Svc", weight=1, extra=extra)
        applied = control_plane.kubectl("apply", "--dry-run=server", "-n", "default", "-f", "-", "-o",
                                        "jsonpath={.spec.upstream.protocol}", input=manifest, check=False)
        assert applied.returncode == 0, applied.stderr
        assert applied.stdout == expected
