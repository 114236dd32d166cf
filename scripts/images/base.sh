#!/usr/bin/env bash
# Builds the offline base image for the project's images when no registry is
# reachable: a minimal Debian bookworm root filesystem with python3 and the
# venv module (mmdebstrap, from Debian's own mirror), imported into the
# container engine as localhost/vocelio-base:bookworm. Debian bookworm ships
# Python 3.11, the same minor version as the default official base image.
# Called by scripts/images/build.sh; cached under .cache/images by a stamp of
# this script (the Debian mirror moves, so delete the tarball to refresh it).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
engine="${1:?usage: base.sh ENGINE}"
tag="${VOCELIO_BASE_TAG:-localhost/vocelio-base:bookworm}"
cache="$root/.cache/images"
tarball="$cache/base-bookworm.tar"
mkdir -p "$cache"
stamp="$(sha256sum "$0" | cut -c1-16)"
if [[ ! -s "$tarball" || "$(cat "$tarball.stamp" 2>/dev/null)" != "$stamp" ]]; then
  command -v mmdebstrap >/dev/null || { echo "base: mmdebstrap is missing (apt-get install mmdebstrap)" >&2; exit 1; }
  echo "base: building a Debian bookworm root filesystem with python3 (about 2 minutes)"
  start=$(date +%s)
  # ca-certificates: the images call HTTPS upstreams and the Kubernetes API.
  mmdebstrap --quiet --format=tar --variant=minbase --include=python3,python3-venv,ca-certificates \
    --customize-hook='rm -rf "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/*' \
    bookworm "$tarball.new"
  mv "$tarball.new" "$tarball"
  echo "$stamp" > "$tarball.stamp"
  echo "base: root filesystem built in $(( $(date +%s) - start ))s"
fi
if [[ "$("$engine" image inspect --format '{{index .Config.Labels "vocelio.base.stamp"}}' "$tag" 2>/dev/null)" == "$stamp" ]]; then
  echo "base: $tag is current"
  exit 0
fi
"$engine" import \
  --change 'CMD ["python3"]' \
  --change "LABEL vocelio.base.stamp=$stamp" \
  --change 'ENV LANG=C.UTF-8' \
  "$tarball" "$tag" >/dev/null
echo "base: imported $tag"
