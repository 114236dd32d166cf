#!/usr/bin/env bash
# Moves the images' default base (ARG BASE_IMAGE in Dockerfile.proxy and
# Dockerfile.operator) to the current digest of its tag, so the pin stays
# reproducible and still receives Debian and CPython security fixes:
#   scripts/images/update-base-digest.sh [TAG]   (default: the tag in the Dockerfiles)
# Needs a registry: uses skopeo, docker buildx or podman, whichever is there.
# Review the diff, run `make images` and the image tests, then commit.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
current="$(sed -n 's/^ARG BASE_IMAGE=//p' "$root/Dockerfile.proxy")"
tag="${1:-${current%@*}}"
digest=""
if command -v skopeo >/dev/null; then
  digest="$(skopeo inspect --format '{{.Digest}}' "docker://$tag" || true)"
elif command -v docker >/dev/null && docker buildx version >/dev/null 2>&1; then
  digest="$(docker buildx imagetools inspect --format '{{json .Manifest.Digest}}' "$tag" | tr -d '"' || true)"
elif command -v podman >/dev/null; then
  if podman pull -q "$tag" >/dev/null; then
    digest="$(podman image inspect --format '{{.Digest}}' "$tag")"
  fi
fi
if [[ ! "$digest" =~ ^sha256:[0-9a-f]{64}$ ]]; then
  echo "update-base-digest: could not resolve $tag (no registry reachable, or no skopeo/docker buildx/podman)" >&2
  exit 1
fi
for file in Dockerfile.proxy Dockerfile.operator; do
  sed -i "s|^ARG BASE_IMAGE=.*|ARG BASE_IMAGE=$tag@$digest|" "$root/$file"
done
echo "update-base-digest: $tag@$digest (was ${current#*@})"
