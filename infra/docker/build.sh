#!/usr/bin/env bash
# Build the lpdvae image with podman (or docker) from the repo root.
#   infra/docker/build.sh [cpu|cuda|mlflow] [TAG]
#     cpu    (default) torch CPU build            -> $REGISTRY/lpdvae:git-<rev12>-<content12>
#     cuda   torch CUDA build (PyPI)               -> $REGISTRY/lpdvae:git-<rev12>-<content12>-cuda
#     mlflow the MLflow tracking server image      -> $REGISTRY/lpdvae-mlflow:git-<rev12>-<content12>
# The default tag is immutable (infra/docker/image-tag.sh): a new commit or changed content is a
# new tag, never a rewritten one. REGISTRY defaults to localhost/lpdvae.
# PUSH=1 pushes the tag and writes the pushed digest reference (REPO@sha256:...) to
# build/image-<variant>.ref, which `make compile` compiles the pipeline against; without PUSH the
# file holds the local tag.
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
registry=${REGISTRY:-localhost/lpdvae}
case "$variant" in
  cpu)    target=runtime; tag=${2:-$registry/lpdvae:$(infra/docker/image-tag.sh)} ;;
  cuda)   target=runtime; tag=${2:-$registry/lpdvae:$(infra/docker/image-tag.sh cuda)} ;;
  mlflow) target=mlflow-server; tag=${2:-$registry/lpdvae-mlflow:$(infra/docker/image-tag.sh)} ;;
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
mkdir -p build
ref=$tag
if [[ "${PUSH:-0}" == 1 ]]; then
  if [[ "$(basename "$engine")" == podman ]]; then
    "$engine" push --digestfile build/.digest "$tag"
    ref="${tag%:*}@$(cat build/.digest)" && rm -f build/.digest
  else
    "$engine" push "$tag"
    ref=$("$engine" image inspect "$tag" --format '{{index .RepoDigests 0}}')
  fi
fi
echo "$ref" > "build/image-$variant.ref"
echo "reference: $ref (build/image-$variant.ref)"
