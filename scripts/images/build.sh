#!/usr/bin/env bash
# Builds the project's images (proxy and operator) with Docker or Podman,
# whichever works here, and optionally saves them as archives for containerd.
#
#   scripts/images/build.sh [--save DIR] [--extra NAME=DOCKERFILE:CONTEXT ...]
#
# Environment:
#   VOCELIO_ENGINE      docker | podman (default: the first whose daemon/storage answers)
#   IMAGE_REPO          repository prefix (default localhost/vocelio): REPO/gateway-proxy, REPO/gateway-operator
#   IMAGE_TAG           tag (default: the chart's appVersion)
#   BASE_IMAGE          base of both stages (default: the Dockerfiles' digest-pinned official image;
#                       when it cannot be pulled, the offline base from scripts/images/base.sh)
#   VOCELIO_OFFLINE_BASE=1  skip the pull attempt and use the offline base
# Builds are skipped when an image already carries the stamp of its inputs
# (Dockerfile, lock file, sources, base), so warm runs take seconds.
# Called by `make images`, `make dev-cluster` and tests/harness/node.py.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
save_dir=""
extras=()
while (($#)); do
  case "$1" in
    --save) save_dir="$2"; shift 2 ;;
    --extra) extras+=("$2"); shift 2 ;;
    *) echo "images: unknown argument $1" >&2; exit 2 ;;
  esac
done

export CONTAINERS_CONF="${CONTAINERS_CONF:-$root/scripts/images/containers.conf}"
engine="${VOCELIO_ENGINE:-}"
if [[ -z "$engine" ]]; then
  for candidate in docker podman; do
    if command -v "$candidate" >/dev/null && "$candidate" info >/dev/null 2>&1; then engine="$candidate"; break; fi
  done
fi
if [[ -z "$engine" ]]; then
  echo "images: neither docker (daemon running) nor podman works here; install one (Debian: apt-get install podman runc)" >&2
  exit 1
fi
repo="${IMAGE_REPO:-localhost/vocelio}"
tag="${IMAGE_TAG:-$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' charts/vocelio-gateway/Chart.yaml)}"
default_base="$(sed -n 's/^ARG BASE_IMAGE=//p' Dockerfile.proxy)"
base="${BASE_IMAGE:-}"
if [[ -z "$base" ]]; then
  if "$engine" image inspect "$default_base" >/dev/null 2>&1; then
    base="$default_base"
  elif [[ "${VOCELIO_OFFLINE_BASE:-}" != 1 ]] && timeout 120 "$engine" pull -q "$default_base" >/dev/null 2>&1; then
    base="$default_base"
  else
    echo "images: $default_base cannot be pulled here; using the offline Debian base"
    bash scripts/images/base.sh "$engine"
    base="localhost/vocelio-base:bookworm"
  fi
fi
base_id="$("$engine" image inspect --format '{{.Id}}' "$base")"

build_args=(--build-arg "BASE_IMAGE=$base")
# pip inside the build trusts what the host trusts (TLS-inspecting egress proxies).
ca=/etc/ssl/certs/ca-certificates.crt
[[ -s "$ca" ]] && build_args+=(--secret "id=ca-bundle,src=$ca")
[[ "$engine" == podman ]] && build_args+=(--network host --runtime runc)

sources_hash() {  # the inputs of one image: the Dockerfile, what its COPY lines take from the context, the base
  local dockerfile="$1" context="$2" sources
  sources="$(awk 'toupper($1)=="COPY" && $2 !~ /^--from/ {for (i=2; i<NF; i++) if ($i !~ /^--/) print $i}' "$dockerfile")"
  { sha256sum "$dockerfile"; echo "$base_id";
    (cd "$context" && for src in $sources; do
       find "$src" \( -name __pycache__ -o -name '*.egg-info' -o -name _compiled \) -prune -o -type f -print0
     done | LC_ALL=C sort -z | xargs -0 -r sha256sum); } | sha256sum | cut -c1-16
}

build_one() {  # NAME DOCKERFILE CONTEXT
  local image="$1" dockerfile="$2" context="$3" stamp
  stamp="$(sources_hash "$dockerfile" "$context")"
  if [[ "$("$engine" image inspect --format '{{index .Config.Labels "vocelio.inputs"}}' "$image" 2>/dev/null)" == "$stamp" ]]; then
    echo "images: $image is current"
  else
    echo "images: building $image with $engine on $base"
    local start=$SECONDS
    "$engine" build --quiet "${build_args[@]}" --label "vocelio.inputs=$stamp" -f "$dockerfile" -t "$image" "$context" >/dev/null
    echo "images: built $image in $(( SECONDS - start ))s"
  fi
  if [[ -n "$save_dir" ]]; then
    mkdir -p "$save_dir"
    local archive="$save_dir/$(basename "${image%%:*}").tar"
    if [[ ! -s "$archive" || "$(cat "$archive.stamp" 2>/dev/null)" != "$stamp" ]]; then
      rm -f "$archive"
      "$engine" save --format docker-archive -o "$archive.new" "$image" 2>/dev/null \
        || "$engine" save -o "$archive.new" "$image"
      mv "$archive.new" "$archive"
      echo "$stamp" > "$archive.stamp"
    fi
  fi
}

build_one "$repo/gateway-proxy:$tag" Dockerfile.proxy .
build_one "$repo/gateway-operator:$tag" Dockerfile.operator .
for extra in "${extras[@]}"; do
  name="${extra%%=*}"; rest="${extra#*=}"
  build_one "$repo/$name:$tag" "${rest%%:*}" "${rest#*:}"
done
echo "images: $repo/gateway-proxy:$tag $repo/gateway-operator:$tag (engine $engine, base $base)"
