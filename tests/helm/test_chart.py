"""The Helm chart per environment, on the real control plane: lint, schema,
policy checks on the rendered manifests, server-side validation, install of
development and production releases, the operator running with exactly the
release's RBAC, upgrades that roll the proxy only when settings change, and an
uninstall that keeps CRDs and users' resources."""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness.controlplane import BIN_DIR, ROOT, ControlPlane, free_port
from tests.harness.kube import Kube, KubeError
from tests.harness.stack import BIN, http_json, install_crds, poll, start_process

CHART = ROOT / "charts" / "vocelio-gateway"
ENVIRONMENTS = ("production", "staging", "development")


def helm(*args: str, cp: ControlPlane | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = cp.env() if cp else None
    result = subprocess.run([str(BIN_DIR / "helm"), *args], capture_output=True, text=True, env=env, timeout=180)
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stderr}")
    return result


def render(env: str, *extra: str) -> list[dict[str, Any]]:
    out = helm("template", "vg", str(CHART), "-f", str(CHART / f"values-{env}.yaml"), "--namespace", "vg",
               "--set", "image.tag=0.1.0", *extra).stdout
    return [d for d in yaml.safe_load_all(out) if d]


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_helm_lint_passes_for_each_environment(env: str) -> None:
    result = helm("lint", str(CHART), "-f", str(CHART / f"values-{env}.yaml"))
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize(("setting", "message"), [
    ("proxy.port=http", "proxy/port"),
    ("operator.replicas=7", "maximum"),
    ("proxy.replicas=0", "minimum"),
    ("tracing=true", "additional properties 'tracing' not allowed"),
    ("image.tag=latest", "image/tag"),
])
def test_values_schema_rejects_bad_values_with_a_clear_message(setting: str, message: str) -> None:
    result = helm("template", "vg", str(CHART), "--set", setting, check=False)
    assert result.returncode != 0
    assert message in result.stderr


def test_an_unknown_environment_key_is_rejected() -> None:
    result = helm("template", "vg", str(CHART),
                  "--set", "proxy.rateLimt.failMode=open", check=False)
    assert result.returncode != 0
    assert "rateLimt" in result.stderr


def test_the_charts_crds_are_identical_to_the_top_level_crds() -> None:
    top = sorted(p.name for p in (ROOT / "crds").glob("*.yaml"))
    assert top == sorted(p.name for p in (CHART / "crds").glob("*.yaml"))
    for name in top:
        assert (ROOT / "crds" / name).read_bytes() == (CHART / "crds" / name).read_bytes(), name


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_rendered_workloads_pass_the_policy_check(env: str) -> None:
    docs = render(env)
    workloads = [d for d in docs if d["kind"] == "Deployment"]
    assert {d["metadata"]["name"] for d in workloads} >= {"vg-vocelio-gateway-proxy", "vg-vocelio-gateway-operator"}
    for doc in workloads:
        pod = doc["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, doc["metadata"]["name"]
        for container in pod["containers"]:
            where = f"{doc['metadata']['name']}/{container['name']}"
            image = container["image"]
            assert ":" in image, where
            assert not image.endswith(":latest"), where
            assert container["resources"]["requests"], where
            assert container["resources"]["limits"], where
            assert "livenessProbe" in container, where
            assert "readinessProbe" in container, where
            assert container["securityContext"]["readOnlyRootFilesystem"] is True, where
            assert container["securityContext"]["allowPrivilegeEscalation"] is False, where
    proxy = next(d for d in workloads if d["metadata"]["name"].endswith("-proxy"))
    pod = proxy["spec"]["template"]["spec"]
    settings = yaml.safe_load(next(d for d in docs if d["metadata"]["name"].endswith("proxy-settings"))
                              ["data"]["settings.yaml"])
    pre_stop = pod["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert settings["shutdown_delay_s"] > 0  # /readyz turns 503 before the listener closes
    assert pod["terminationGracePeriodSeconds"] > (
        pre_stop + settings["shutdown_delay_s"] + settings["drain_timeout_s"])
    assert pod["containers"][0]["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert pod["containers"][0]["readinessProbe"]["httpGet"]["path"] == "/readyz"


@pytest.mark.parametrize(("delay", "drain"), [(0, 0), (5, 20), (30, 60), (60, 600)])
def test_the_grace_period_outlasts_the_pre_stop_sleep_the_shutdown_delay_and_the_drain(delay: int, drain: int) -> None:
    docs = render("production", "--set", f"proxy.shutdownDelaySeconds={delay}",
                  "--set", f"proxy.drainTimeoutSeconds={drain}")
    proxy = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-proxy"))
    pod = proxy["spec"]["template"]["spec"]
    assert pod["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"] == delay
    assert pod["terminationGracePeriodSeconds"] > delay + delay + drain


def test_environments_differ_where_real_environments_differ() -> None:
    prod, dev = render("production"), render("development")

    def hpa(docs: list[dict[str, Any]]) -> dict[str, Any]:
        return next(d for d in docs if d["kind"] == "HorizontalPodAutoscaler")

    assert hpa(prod)["spec"]["maxReplicas"] > hpa(dev)["spec"]["maxReplicas"]
    assert any(m["type"] == "Pods" for m in hpa(prod)["spec"]["metrics"])
    assert any(d["kind"] == "PodDisruptionBudget" for d in prod)
    assert not any(d["kind"] == "PodDisruptionBudget" for d in dev)
    assert any(d["metadata"]["name"].endswith("-redis") for d in dev)
    assert not any(d["metadata"]["name"].endswith("-redis") for d in prod)


@pytest.fixture(scope="module")
def releases(control_plane: ControlPlane, kube: Kube) -> Iterator[dict[str, str]]:
    install_crds(control_plane, kube)
    installed = {}
    for env, ns in (("development", "vg-dev"), ("production", "vg-prod")):
        helm("install", f"gw-{env[:4]}", str(CHART), "-n", ns, "--create-namespace", "-f",
             str(CHART / f"values-{env}.yaml"), "--set", "image.tag=0.1.0", cp=control_plane)
        installed[env] = ns
    yield installed
    for env, ns in installed.items():
        helm("uninstall", f"gw-{env[:4]}", "-n", ns, cp=control_plane, check=False)
    # Leave no routes behind for other modules sharing the control plane.
    control_plane.kubectl("delete", "vocelioservices", "--all", "-n", "apps", "--wait=true", check=False)
    for ns in ("apps", "vg-dev", "vg-prod"):
        kube.delete(f"/api/v1/namespaces/{ns}")


def test_rendered_manifests_are_accepted_by_the_api_server(control_plane: ControlPlane, kube: Kube) -> None:
    install_crds(control_plane, kube)
    for env in ENVIRONMENTS:
        out = helm("template", "dry", str(CHART), "-f", str(CHART / f"values-{env}.yaml"), "--namespace", "default",
                   "--set", "image.tag=0.1.0").stdout
        result = control_plane.kubectl("apply", "--dry-run=server", "-n", "default", "-f", "-", input=out)
        assert "created (server dry run)" in result.stdout


def test_install_creates_every_object_for_development_and_production(control_plane: ControlPlane, kube: Kube,
                                                                     releases: dict[str, str]) -> None:
    for env, ns in releases.items():
        prefix = f"gw-{env[:4]}-vocelio-gateway"
        for path in (f"/apis/apps/v1/namespaces/{ns}/deployments/{prefix}-proxy",
                     f"/apis/apps/v1/namespaces/{ns}/deployments/{prefix}-operator",
                     f"/api/v1/namespaces/{ns}/services/{prefix}-proxy",
                     f"/api/v1/namespaces/{ns}/serviceaccounts/{prefix}-operator",
                     f"/api/v1/namespaces/{ns}/configmaps/{prefix}-proxy-settings",
                     f"/apis/autoscaling/v2/namespaces/{ns}/horizontalpodautoscalers/{prefix}-proxy"):
            kube.get(path)
        tiers = kube.get(f"/apis/gateway.vocelio.ai/v1alpha1/namespaces/{ns}/ratetiers")["items"]
        assert sorted(t["metadata"]["name"] for t in tiers) == [
            "anonymous", "api-key", "authenticated", "premium", "webhooks"]
    prod_hpa = kube.get("/apis/autoscaling/v2/namespaces/vg-prod/horizontalpodautoscalers/"
                        "gw-prod-vocelio-gateway-proxy")
    pods_metric = [m for m in prod_hpa["spec"]["metrics"] if m["type"] == "Pods"]
    assert pods_metric[0]["pods"]["metric"]["name"] == "vocelio_requests_in_flight"
    kube.get("/apis/policy/v1/namespaces/vg-prod/poddisruptionbudgets/gw-prod-vocelio-gateway-proxy")


def service_account_kubeconfig(cp: ControlPlane, ns: str, sa: str, path: Path) -> Path:
    token = cp.kubectl("create", "token", sa, "-n", ns, "--duration=1h").stdout.strip()
    assert cp.pki is not None
    ca = base64.b64encode(cp.pki.ca_cert.read_bytes()).decode()
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "sa",
        "clusters": [{"name": "c", "cluster": {"server": cp.server, "certificate-authority-data": ca}}],
        "users": [{"name": sa, "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "c", "user": sa, "namespace": ns}}]}))
    return path


def test_the_operator_reconciles_with_only_the_releases_rbac(control_plane: ControlPlane, kube: Kube,
                                                             releases: dict[str, str], tmp_path: Path) -> None:
    ns = releases["development"]
    prefix = "gw-deve-vocelio-gateway"
    kubeconfig = service_account_kubeconfig(control_plane, ns, f"{prefix}-operator", tmp_path / "sa.kubeconfig")
    try:
        kube.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "apps"}})
    except KubeError as exc:
        if exc.status != 409:
            raise
    control_plane.kubectl("apply", "-n", "apps", "-f", str(ROOT / "examples" / "resources" / "services.yaml"))
    liveness = free_port()
    proc = start_process(control_plane, "operator-helm-rbac", [
        str(BIN / "vocelio-gateway"), "operator", "--config-namespace", ns, "--config-name", f"{prefix}-config",
        "--liveness-port", str(liveness), "--metrics-port", "0"],
        env={"KUBECONFIG": str(kubeconfig), "VOCELIO_OPERATOR_API_KEYS_SECRET": f"{prefix}-api-keys",
             "VOCELIO_OPERATOR_PEERING": prefix})
    try:
        def rendered() -> int:
            cm = kube.get(f"/api/v1/namespaces/{ns}/configmaps/{prefix}-config")
            services = json.loads(cm["data"]["gateway.json"])["services"]
            return len([s for s in services if s["namespace"] == "apps"])

        assert poll("operator wrote the release's ConfigMap", rendered, 60) == 18
        # The operator publishes keys before routes, so the Secret exists once the ConfigMap does.
        secret = kube.get(f"/api/v1/namespaces/{ns}/secrets/{prefix}-api-keys")
        assert secret["metadata"]["name"] == f"{prefix}-api-keys"
        poll("status patched with the release's RBAC", lambda: (kube.get(
            "/apis/gateway.vocelio.ai/v1alpha1/namespaces/apps/vocelioservices/ai-agents").get("status") or {})
            .get("observedGeneration"), 30)
        assert http_json(f"http://127.0.0.1:{liveness}/healthz")[0] == 200
        log = proc.tail()
        # Match API refusals precisely: a bare "403" also occurs inside hashes and timestamps.
        assert "forbidden" not in log.lower(), log
        assert "APIForbiddenError" not in log, log
    finally:
        proc.stop()


def proxy_template(kube: Kube, ns: str, release: str) -> tuple[int, str]:
    dep = kube.get(f"/apis/apps/v1/namespaces/{ns}/deployments/{release}-vocelio-gateway-proxy")
    return dep["metadata"]["generation"], dep["spec"]["template"]["metadata"]["annotations"]["checksum/settings"]


def test_upgrade_rolls_the_proxy_only_when_settings_change(control_plane: ControlPlane, kube: Kube,
                                                           releases: dict[str, str]) -> None:
    ns = releases["production"]
    values = ["-f", str(CHART / "values-production.yaml"), "--set", "image.tag=0.1.0"]
    before = proxy_template(kube, ns, "gw-prod")
    helm("upgrade", "gw-prod", str(CHART), "-n", ns, *values, "--set", "autoscaling.maxReplicas=12",
         cp=control_plane)
    assert proxy_template(kube, ns, "gw-prod") == before
    helm("upgrade", "gw-prod", str(CHART), "-n", ns, *values, "--set", "proxy.logLevel=WARNING", cp=control_plane)
    generation, checksum = proxy_template(kube, ns, "gw-prod")
    assert generation == before[0] + 1
    assert checksum != before[1]


def test_uninstall_keeps_crds_and_custom_resources(control_plane: ControlPlane, kube: Kube,
                                                   releases: dict[str, str]) -> None:
    helm("uninstall", "gw-deve", "-n", releases["development"], cp=control_plane)
    releases.pop("development")
    crds = kube.get("/apis/apiextensions.k8s.io/v1/customresourcedefinitions")["items"]
    names = {c["metadata"]["name"] for c in crds}
    assert {"vocelioservices.gateway.vocelio.ai", "ratetiers.gateway.vocelio.ai"} <= names
    kept = kube.get("/apis/gateway.vocelio.ai/v1alpha1/namespaces/apps/vocelioservices")["items"]
    assert len(kept) == 18
    releases_left = helm("list", "-n", "vg-dev", "-q", cp=control_plane).stdout.split()
    assert "gw-deve" not in releases_left


def test_the_admin_port_is_scraped_on_the_pods_and_never_exposed_by_the_service() -> None:
    from vocelio_proxy.settings import ProxySettings

    docs = render("production", "--set", "monitoring.serviceMonitor=true")
    proxy = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-proxy"))
    pod = proxy["spec"]["template"]
    ports = {p["name"]: p["containerPort"] for p in pod["spec"]["containers"][0]["ports"]}
    assert ports == {"http": 8080, "admin": 9090}
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == "9090"
    service = next(d for d in docs if d["kind"] == "Service" and d["metadata"]["name"].endswith("-proxy"))
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]
    monitor = next(d for d in docs if d["kind"] in ("PodMonitor", "ServiceMonitor")
                   and d["metadata"]["name"].endswith("-proxy"))
    assert monitor["kind"] == "PodMonitor"
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] == "admin"
    policy = next(d for d in docs if d["kind"] == "NetworkPolicy")
    assert [r["ports"] for r in policy["spec"]["ingress"]] == [[{"port": "http"}], [{"port": "admin"}]]
    settings = yaml.safe_load(next(d for d in docs if d["metadata"]["name"].endswith("proxy-settings"))
                              ["data"]["settings.yaml"])
    loaded = ProxySettings(**settings)
    assert (loaded.admin.port, loaded.admin.host) == (9090, "0.0.0.0")
    assert loaded.headers_with_underscores == "drop"
    assert loaded.auth.claim_encoding == "refuse"
    # Without the admin listener the Service port is scraped, as before.
    docs = render("production", "--set", "monitoring.serviceMonitor=true", "--set", "proxy.admin.enabled=false")
    monitor = next(d for d in docs if d["kind"] in ("PodMonitor", "ServiceMonitor")
                   and d["metadata"]["name"].endswith("-proxy"))
    assert monitor["kind"] == "ServiceMonitor"
    assert monitor["spec"]["endpoints"][0]["port"] == "http"


@pytest.mark.parametrize("setting", [
    "proxy.headersWithUnderscores=sometimes", "proxy.admin.publicEndpoints={/livez,/readyz}",
    "proxy.admin.publicEndpoints={/health,/livez,/readyz,/secret}", "proxy.auth.claimEncoding=base64",
    "proxy.trustedProxyCidrs={10.0.0.0/8 ; evil}",
])
def test_trust_values_are_checked_by_the_schema(setting: str) -> None:
    result = helm("template", "vg", str(CHART), "--set", "image.tag=0.1.0",
                  "--set", setting, check=False)
    assert result.returncode != 0, setting
