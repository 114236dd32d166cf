#!/usr/bin/env bash
# Installs the Debian packages that tests and benchmarks use, only when missing.
# Called by `make system-deps` (and so by `make test` and .ci/run).
set -euo pipefail
need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || need+=(nginx-light)
command -v wrk >/dev/null || need+=(wrk)
command -v ip >/dev/null || need+=(iproute2)
command -v openssl >/dev/null || need+=(openssl)
# h2load (nghttp2-client): the HTTP/2 rows of bench/proxy_bench.py; curl with HTTP/2 for tests/proxy.
command -v h2load >/dev/null || need+=(nghttp2-client)
command -v curl >/dev/null || need+=(curl)
# The images and the real node (make images, make dev-cluster, tests/node):
# podman builds the images (runc: crun fails on cgroup v1 hybrid hosts),
# mmdebstrap the offline base, containerd + CNI plugins run the pods,
# iptables + conntrack serve ClusterIPs through kube-proxy.
# (A docker client without a daemon, as on these machines, does not count.)
command -v podman >/dev/null || { command -v docker >/dev/null && docker info >/dev/null 2>&1; } || need+=(podman)
command -v runc >/dev/null || [[ -x /usr/sbin/runc ]] || need+=(runc)
command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
command -v containerd >/dev/null || need+=(containerd)
[[ -x /usr/lib/cni/bridge ]] || need+=(containernetworking-plugins)
command -v iptables >/dev/null || [[ -x /usr/sbin/iptables ]] || need+=(iptables)
command -v conntrack >/dev/null || [[ -x /usr/sbin/conntrack ]] || need+=(conntrack)
# prometheus: promtool checks the live /metrics and the chart's alert rules; Prometheus scrapes the
# proxies for prometheus-adapter (the HPA's custom metric on the real node).
command -v prometheus >/dev/null && command -v promtool >/dev/null || need+=(prometheus)
# mypyc's compiled hot path (make compile, make test): a C compiler and the Python headers.
command -v gcc >/dev/null || need+=(gcc)
[[ -f "$(${PY:-python3} -c 'import sysconfig; print(sysconfig.get_paths()["include"])')/Python.h" ]] || need+=(python3-dev)
if ((${#need[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "install-system-deps: need root to install: ${need[*]}" >&2
    exit 1
  fi
  echo "install-system-deps: installing ${need[*]} with apt-get (about a minute)"
  started=$SECONDS
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  echo "install-system-deps: installed in $((SECONDS - started))s"
fi
# Debian starts services on install; the tests start their own on free ports.
systemctl stop redis-server nginx containerd prometheus 2>/dev/null || true
service redis-server stop 2>/dev/null || true
service nginx stop 2>/dev/null || true
service prometheus stop 2>/dev/null || true
echo "install-system-deps: ok"
