#!/usr/bin/env bash
# Regenerates the lock files from pyproject.toml, every pin with the hashes of
# all its published files (sdist and every wheel), so an install from them is
# reproducible and refuses a tampered or re-uploaded file:
#   requirements.lock      runtime dependencies + the build backend (the images)
#   requirements-dev.lock  the same plus the `dev` extra (make test, CI)
# The build backend (setuptools) is locked too, so the project itself installs
# with --no-build-isolation and nothing unhashed is downloaded.
# Called by `make lock`; needs uv (in the dev extra).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
uv="${UV:-$root/.venv/bin/uv}"
cd "$root"
backend="$(python3 -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml","rb"))["build-system"]["requires"]))')"
common=(--quiet --generate-hashes --universal --python-version 3.11 --custom-compile-command "make lock" --no-annotate)
"$uv" pip compile "${common[@]}" pyproject.toml - -o requirements.lock <<<"$backend"
"$uv" pip compile "${common[@]}" --extra dev pyproject.toml - -o requirements-dev.lock <<<"$backend"
echo "lock: requirements.lock ($(grep -c '==' requirements.lock) pins), requirements-dev.lock ($(grep -c '==' requirements-dev.lock) pins)"
