"""`lpdvae` command line: one subcommand per step plus the weekly tools (registry, audit, ...).

Each module in COMMANDS owns its subcommand through `register_cli(subparsers)`, which adds a
parser and sets `func(args, params) -> int`. This file only wires them and loads params once.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from lpdvae.errors import LpdvaeError
from lpdvae.params import ParamsError, load_params, parse_override

COMMANDS = [
    "lpdvae.demo",
    "lpdvae.steps.ingest",
    "lpdvae.steps.validate",
    "lpdvae.steps.tensorize",
    "lpdvae.steps.train",
    "lpdvae.steps.evaluate",
    "lpdvae.steps.register",
    "lpdvae.run",
    "lpdvae.registry",
    "lpdvae.audit",
    "lpdvae.generate",
]

CHATTY_LOGGERS = ("great_expectations",)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lpdvae",
        description="Multitrack music VAE pipeline: ingest, validate, tensorize, train, "
        "evaluate, register; plus registry, audit and generation tools.",
    )
    parser.add_argument("--params", default="params.yaml", help="params file (default: %(default)s)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override one params key, e.g. --set train.epochs=2 (repeatable)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(name).register_cli(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:  # GX logs hundreds of INFO lines about its own API registry per import
        for noisy in CHATTY_LOGGERS:
            logging.getLogger(noisy).setLevel(logging.WARNING)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        params = None
        if getattr(args, "needs_params", True):
            params = load_params(args.params, dict(parse_override(o) for o in args.overrides))
        return int(args.func(args, params) or 0)
    except ParamsError as exc:
        print(f"lpdvae: params error: {exc}", file=sys.stderr)
        return 2
    except LpdvaeError as exc:
        print(f"lpdvae {args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
