"""The image every component runs in, and the decorator that puts a step function in it.

Images are immutable: `make image` tags them `git-<rev12>-<content12>` (infra/docker/image-tag.sh)
and, once pushed, pins them by digest (`repo@sha256:...`); `make compile` builds the pipeline
against that reference, so a pipeline version always names the code it runs.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version

from kfp import dsl


def _version() -> str:
    try:
        return version("lpdvae")
    except PackageNotFoundError:  # a source checkout that is not installed
        return "latest"


DEFAULT_IMAGE = f"ghcr.io/lpdvae/lpdvae:{_version()}"
IMAGE = os.environ.get("LPDVAE_IMAGE", DEFAULT_IMAGE)
CUDA_SUFFIX = "-cuda"
_IMMUTABLE_TAG = re.compile(r"git-[0-9a-f]{12}-[0-9a-f]{12}(-cuda)?")


def is_digest(image: str) -> bool:
    """`repo@sha256:<64 hex>`: a reference no push can change."""
    return re.search(r"@sha256:[0-9a-f]{64}$", image) is not None


def is_immutable(image: str) -> bool:
    """A digest, or a tag `make image` wrote (git revision + build-context digest)."""
    if is_digest(image):
        return True
    name, _, tag = image.rpartition(":")
    return bool(name) and "/" not in tag and _IMMUTABLE_TAG.fullmatch(tag) is not None


def cuda_image(image: str) -> str:
    """The CUDA build of `image`: the same tag + `-cuda`. A digest names exactly one build, so
    the CUDA one cannot be derived from it: pass it (`--train-image`) instead."""
    if is_digest(image):
        raise ValueError(f"{image} is a digest: give the CUDA build's own reference with --train-image "
                         "(make image VARIANT=cuda writes it), or compile with --no-gpu")
    return image if image.endswith(CUDA_SUFFIX) else f"{image}{CUDA_SUFFIX}"


def step_component(func: Callable) -> dsl.PythonComponent:
    """A lightweight KFP component in the project image.

    The image already holds kfp, lpdvae and components/, so nothing is pip-installed when a
    pod starts (and pods need no network to PyPI). `pipelines` overrides the image per task
    with `set_container_image` when `--image` is given.
    """
    return dsl.component(base_image=IMAGE, install_kfp_package=False)(func)
