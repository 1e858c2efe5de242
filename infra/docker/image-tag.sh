#!/usr/bin/env bash
# The immutable tag of the lpdvae image built from this checkout: git-<rev12>-<content12>.
# <rev12> is the commit; <content12> hashes every file the image is built from (tracked files of
# the build context, as they are on disk), so a dirty tree gets another tag than its commit and
# two builds of the same content get the same one. Usage: infra/docker/image-tag.sh [cuda]
set -euo pipefail
cd "$(dirname "$0")/../.."
rev=$(git rev-parse --short=12 HEAD)
content=$(git ls-files -z -- infra/docker requirements.lock pyproject.toml README.md params.yaml dvc.yaml \
            src components pipelines \
          | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-12)
echo "git-${rev}-${content}${1:+-$1}"
