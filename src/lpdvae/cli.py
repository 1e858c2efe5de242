"""`lpdvae` command line: one subcommand per step plus the weekly tools (registry, audit, ...).

COMMANDS below is the one list of commands. Each maps to the module that declares it with
`register_cli(subparsers)` (adds the parser, sets `func(args, params) -> int`). Those modules
import nothing heavy (torch, MLflow, Great Expectations, pandas) at module level, so `--help`
and `status` start at once: a step whose own module is heavy is declared by a light module in
`lpdvae.commands`, whose handler imports the step. tests/test_cli.py checks this.
This file only wires them and loads params once.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from lpdvae.errors import LpdvaeError
from lpdvae.params import ParamsError, load_params, parse_override, profile_overrides
from lpdvae.registry.tracking import env_credentials_to_env

COMMANDS: dict[str, str] = {  # command -> module whose register_cli declares it (--help order)
    "demo-data": "lpdvae.data.demo",
    "ingest": "lpdvae.steps.ingest",
    "validate": "lpdvae.commands.validate",
    "tensorize": "lpdvae.commands.tensorize",
    "train": "lpdvae.commands.train",
    "evaluate": "lpdvae.commands.evaluate",
    "register": "lpdvae.commands.register",
    "run": "lpdvae.commands.run",
    "status": "lpdvae.commands.run",
    "registry": "lpdvae.registry.aliases",
    "audit": "lpdvae.registry.audit",
    "generate": "lpdvae.registry.generate",
}

CHATTY_LOGGERS = ("great_expectations",)


def _global_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", default="params.yaml", help="params file (default: %(default)s)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override one params key, e.g. --set train.epochs=2 (repeatable)",
    )
    parser.add_argument(
        "--profile", default=None, metavar="FILE",
        help="a partial params file laid over --params, e.g. profiles/full.yaml (then --set)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def _chosen_command(argv: Sequence[str]) -> str | None:
    """The command named in argv (after the global options), or None."""
    pre = argparse.ArgumentParser(add_help=False)
    _global_options(pre)
    try:
        _, rest = pre.parse_known_args(argv)
    except SystemExit:  # a malformed global option: the full parser reports it
        return None
    return rest[0] if rest and rest[0] in COMMANDS else None


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser with every command, or only `command`'s (so only its module is imported)."""
    parser = argparse.ArgumentParser(
        prog="lpdvae",
        description="Multitrack music VAE pipeline: ingest, validate, tensorize, train, "
        "evaluate, register; plus registry, audit and generation tools.",
    )
    _global_options(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules = [COMMANDS[command]] if command in COMMANDS else list(dict.fromkeys(COMMANDS.values()))
    for name in modules:
        importlib.import_module(name).register_cli(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_chosen_command(argv))
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
    env_credentials_to_env()  # a store's user:password@ -> MLflow's auth variables, out of every record
    try:
        params = None
        if getattr(args, "needs_params", True):
            overrides = profile_overrides(args.profile) if args.profile else {}
            overrides.update(dict(parse_override(o) for o in args.overrides))
            params = load_params(args.params, overrides)
        return int(args.func(args, params) or 0)
    except ParamsError as exc:
        print(f"lpdvae: params error: {_one_line(str(exc), args.verbose)}", file=sys.stderr)
        return 2
    except LpdvaeError as exc:
        print(f"lpdvae {args.command}: {_one_line(str(exc), args.verbose)}", file=sys.stderr)
        return 1
    except Exception as exc:
        if args.verbose or not _database_error(exc):
            raise
        # the store broke past what check_store reads up front (a page it did not scan)
        from lpdvae.registry.tracking import ENV, store_problem, tracking_uri

        uri = tracking_uri(params) if params is not None else os.environ.get(ENV, "")
        print(f"lpdvae {args.command}: {store_problem(uri, (str(exc).splitlines() or [''])[0])}", file=sys.stderr)
        return 1


def _database_error(exc: BaseException | None) -> bool:
    """Whether `exc` (or what caused it) is SQLite's or SQLAlchemy's DatabaseError: a store that
    is not a database or is corrupted (not a locked or busy one, which subclass it)."""
    seen = 0
    while exc is not None and seen < 8:
        if type(exc).__name__ == "DatabaseError" and type(exc).__module__ in ("sqlite3", "sqlalchemy.exc"):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def _one_line(message: str, verbose: bool) -> str:
    """An error as one line: a library's multi-line reason (torch lists every mismatched weight)
    keeps its first two lines and says how many more `-v` shows."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    if verbose or len(lines) <= 1:
        return message.strip()
    more = f" (and {len(lines) - 2} more lines: -v shows them)" if len(lines) > 2 else ""
    return f"{lines[0]} {lines[1]}{more}"


if __name__ == "__main__":
    sys.exit(main())
