"""The image every component runs in, and the decorator that puts a step function in it."""

from __future__ import annotations

import os
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


def step_component(func: Callable) -> dsl.PythonComponent:
    """A lightweight KFP component in the project image.

    The image already holds kfp, lpdvae and components/, so nothing is pip-installed when a
    pod starts (and pods need no network to PyPI). `pipelines` overrides the image per task
    with `set_container_image` when `--image` is given.
    """
    return dsl.component(base_image=IMAGE, install_kfp_package=False)(func)
