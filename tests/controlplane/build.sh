#!/usr/bin/env bash
# Builds the test control plane (one multi-call binary linked as kube-apiserver,
# kube-controller-manager, etcd, kubectl, kubelet, kube-scheduler and kube-proxy) and helm from their Go modules into
# a project-local cache. Reuses the cache when the inputs have not changed.
# Called by `make cluster-bins` and .ci/run.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="${VOCELIO_BIN_DIR:-$root/.cache/bin}"
k8s_version="v1.37.2"
helm_version="v3.20.2"
mkdir -p "$out"
export GOWORK=off GOFLAGS="-mod=mod -buildvcs=false" CGO_ENABLED=0

# The control plane's cache key: its Go inputs and the version it is stamped with (not the whole
# script, so a change to the helm section below does not rebuild Kubernetes).
stamp="$( (cat "$here/go.mod" "$here/go.sum" "$here/main.go"; echo "controlplane $k8s_version") | sha256sum | cut -c1-16)"
if [[ -x "$out/controlplane" && "$(cat "$out/.controlplane.stamp" 2>/dev/null)" == "$stamp" ]]; then
  echo "controlplane: cached ($out)"
else
  echo "controlplane: building Kubernetes $k8s_version (first build takes several minutes)"
  start=$(date +%s)
  pkg="k8s.io/component-base/version"
  cpkg="k8s.io/client-go/pkg/version"
  ld="-s -w"
  for p in "$pkg" "$cpkg"; do
    ld="$ld -X $p.gitVersion=$k8s_version -X $p.gitMajor=1 -X $p.gitMinor=37 -X $p.gitTreeState=clean -X $p.buildDate=2026-01-01T00:00:00Z"
  done
  (cd "$here" && go build -trimpath -ldflags "$ld" -o "$out/controlplane.new" .)
  mv "$out/controlplane.new" "$out/controlplane"
  echo "$stamp" > "$out/.controlplane.stamp"
  echo "controlplane: built in $(( $(date +%s) - start ))s"
fi
for name in kube-apiserver kube-controller-manager etcd kubectl kubelet kube-scheduler kube-proxy; do
  ln -sf controlplane "$out/$name"
done

# helm is stamped the way upstream's Makefile stamps a release (helm's Makefile, LDFLAGS): version,
# commit and tree state, and the Kubernetes version helm assumes when it has no cluster to ask
# (`helm template`, `helm lint`): major = client-go major + 1, minor = client-go minor, read from
# the client-go that helm's own go.mod pins. Without these, helm defaults to Kubernetes v1.20 and
# the chart's kubeVersion (>=1.30) refuses every offline render.
helm_commit="8fb76d6ab555577e98e23b7500009537a471feee"  # git rev-parse v3.20.2^{commit} in helm/helm
helm_gomod="$(go mod download -json "helm.sh/helm/v3@$helm_version" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",*$/\1/p')"
client_go="$(awk '$1 == "k8s.io/client-go" {print $2}' "$helm_gomod")"  # e.g. v0.35.1
IFS=. read -r cg_major cg_minor _ <<< "${client_go#v}"
helm_k8s_major=$((cg_major + 1))
helm_k8s_minor="$cg_minor"
hv="helm.sh/helm/v3/internal/version"
helm_ld="-w -s -X $hv.version=$helm_version -X $hv.metadata= -X $hv.gitCommit=$helm_commit -X $hv.gitTreeState=clean"
for p in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
  helm_ld="$helm_ld -X $p.k8sVersionMajor=$helm_k8s_major -X $p.k8sVersionMinor=$helm_k8s_minor"
done
helm_stamp="$(echo "helm $helm_version $helm_ld" | sha256sum | cut -c1-16)"
if [[ -x "$out/helm" && "$(cat "$out/.helm.stamp" 2>/dev/null)" == "$helm_stamp" ]]; then
  echo "helm: cached ($out)"
else
  echo "helm: building $helm_version (assumes Kubernetes v$helm_k8s_major.$helm_k8s_minor offline; about a minute)"
  start=$(date +%s)
  GOBIN="$out" go install -trimpath -ldflags "$helm_ld" "helm.sh/helm/v3/cmd/helm@$helm_version"
  echo "$helm_stamp" > "$out/.helm.stamp"
  echo "helm: built in $(( $(date +%s) - start ))s"
fi
# metrics-server serves the resource metrics API (CPU, memory) to the HPA on the real node (tests/node).
metrics_server_version="v0.8.0"
if [[ -x "$out/metrics-server" && "$(cat "$out/.metrics-server.stamp" 2>/dev/null)" == "$metrics_server_version" ]]; then
  echo "metrics-server: cached ($out)"
else
  echo "metrics-server: building $metrics_server_version (about 2 minutes the first time)"
  start=$(date +%s)
  GOBIN="$out" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/metrics-server/cmd/metrics-server@$metrics_server_version"
  echo "$metrics_server_version" > "$out/.metrics-server.stamp"
  echo "metrics-server: built in $(( $(date +%s) - start ))s"
fi
# CoreDNS serves cluster.local to the real node's pods (kopf and clients reach kubernetes.default.svc by name).
coredns_version="v1.15.0"
if [[ -x "$out/coredns" && "$(cat "$out/.coredns.stamp" 2>/dev/null)" == "$coredns_version" ]]; then
  echo "coredns: cached ($out)"
else
  echo "coredns: building $coredns_version (a few minutes the first time)"
  start=$(date +%s)
  GOBIN="$out" go install -trimpath -ldflags "-s -w" "github.com/coredns/coredns@$coredns_version"
  echo "$coredns_version" > "$out/.coredns.stamp"
  echo "coredns: built in $(( $(date +%s) - start ))s"
fi
# h2spec checks the gateway's HTTP/2 server for conformance (tests/proxy/test_http2_h2spec.py). Its module
# has no go.mod-compatible v2 tag, so `@latest` resolves v2.2.1+incompatible (the newest release).
h2spec_version="latest"
if [[ -x "$out/h2spec" && "$(cat "$out/.h2spec.stamp" 2>/dev/null)" == "$h2spec_version" ]]; then
  echo "h2spec: cached ($out)"
else
  echo "h2spec: building (seconds)"
  start=$(date +%s)
  GOBIN="$out" go install -trimpath -ldflags "-s -w" "github.com/summerwind/h2spec/cmd/h2spec@$h2spec_version"
  echo "$h2spec_version" > "$out/.h2spec.stamp"
  echo "h2spec: built in $(( $(date +%s) - start ))s"
fi
# prometheus-adapter serves custom.metrics.k8s.io (the proxy's in-flight metric) on the real node. It builds
# through tests/node/adapter, a module that pins it: the module proxy does not list prometheus-adapter's
# versions, so `go install ...@version` cannot resolve it.
adapter_dir="$root/tests/node/adapter"
adapter_stamp="$(cat "$adapter_dir/go.mod" "$adapter_dir/go.sum" | sha256sum | cut -c1-16)"
if [[ -x "$out/prometheus-adapter" && "$(cat "$out/.prometheus-adapter.stamp" 2>/dev/null)" == "$adapter_stamp" ]]; then
  echo "prometheus-adapter: cached ($out)"
else
  echo "prometheus-adapter: building (about 2 minutes the first time)"
  start=$(date +%s)
  (cd "$adapter_dir" && go build -trimpath -ldflags "-s -w" -o "$out/prometheus-adapter.new" sigs.k8s.io/prometheus-adapter/cmd/adapter)
  mv "$out/prometheus-adapter.new" "$out/prometheus-adapter"
  echo "$adapter_stamp" > "$out/.prometheus-adapter.stamp"
  echo "prometheus-adapter: built in $(( $(date +%s) - start ))s"
fi
"$out/kubectl" version --client
"$out/helm" version --short
