#!/usr/bin/env bash
# Build the image with podman (or docker). Usage: infra/docker/build.sh [cpu|cuda] [TAG]
# On this project's dev machines run `bash ../shared/tools/podman-here.sh` first: it prints the
# locally built Debian+Python base that replaces registry images here.
set -euo pipefail
variant=${1:-cpu}
tag=${2:-lpdvae:${variant}}
base=${LPDVAE_BASE_IMAGE:-python:3.11-slim}
engine=$(command -v podman || command -v docker)
cd "$(dirname "$0")/../.."
extra=()
if [[ "$(basename "$engine")" == podman ]]; then
  extra+=(--network=host -v /etc/ssl/certs:/etc/ssl/certs:ro)
  if [[ -d /opt/wheels ]]; then extra+=(-v /opt/wheels:/opt/wheels:ro --build-arg TORCH_CPU_INDEX=); fi
fi
"$engine" build "${extra[@]}" --build-arg BASE="$base" --build-arg TORCH_VARIANT="$variant" \
  -f infra/docker/Dockerfile -t "$tag" .
echo "$tag"
