#!/usr/bin/env bash
# Build the lpdvae image with podman (or docker) from the repo root.
#   infra/docker/build.sh [cpu|cuda|mlflow] [TAG]
#     cpu    (default) torch CPU build            -> lpdvae:cpu
#     cuda   torch CUDA build (PyPI)               -> lpdvae:cuda
#     mlflow the MLflow tracking server image      -> lpdvae-mlflow:latest
# Env: LPDVAE_BASE_IMAGE (default python:3.11-slim-bookworm, or localhost/debian-python:bookworm
#      when that image exists: see shared/tools/podman-here.sh), ENGINE (podman|docker),
#      AUDIO=false to leave fluidsynth + soundfont out.
# Prints the tag, build seconds and image size.
set -euo pipefail
variant=${1:-cpu}
cd "$(dirname "$0")/../.."
engine=${ENGINE:-$(command -v podman || command -v docker || true)}
[[ -n "$engine" ]] || { echo "build.sh: neither podman nor docker is installed" >&2; exit 1; }
base=${LPDVAE_BASE_IMAGE:-}
if [[ -z "$base" ]]; then
  base=python:3.11-slim-bookworm
  "$engine" image exists localhost/debian-python:bookworm 2>/dev/null && base=localhost/debian-python:bookworm
fi
case "$variant" in
  cpu|cuda) target=runtime; tag=${2:-lpdvae:$variant} ;;
  mlflow)   target=mlflow-server; tag=${2:-lpdvae-mlflow:latest} ;;
  *) echo "usage: $0 [cpu|cuda|mlflow] [TAG]" >&2; exit 2 ;;
esac
extra=()
if [[ "$(basename "$engine")" == podman ]]; then
  # no registry mirror here: the build reaches PyPI/Debian through the host network and CA bundle
  extra+=(--network=host -v /etc/ssl/certs:/etc/ssl/certs:ro)
  [[ -d /opt/wheels ]] && extra+=(-v /opt/wheels:/opt/wheels:ro)
fi
start=$(date +%s)
"$engine" build "${extra[@]}" --target "$target" --build-arg BASE="$base" \
  --build-arg TORCH_VARIANT="${variant/mlflow/cpu}" --build-arg AUDIO="${AUDIO:-true}" \
  -f infra/docker/Dockerfile -t "$tag" .
seconds=$(( $(date +%s) - start ))
size=$("$engine" image inspect "$tag" --format '{{.Size}}')
echo "built $tag (base $base) in ${seconds}s, $(( size / 1000000 )) MB"
