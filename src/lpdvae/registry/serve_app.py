"""The registered generator over HTTP, with the bounds `mlflow models serve` lacks.

`python -m lpdvae.registry.serve_app --model models:/lpdvae@champion` answers `POST /invocations`
like `mlflow models serve` (`{"dataframe_records": [{n, seed, temperature}]}`, also `inputs` or
`dataframe_split`; `{"predictions": [...]}` back) and `GET /ping`, but:
- the model is read as data (`serving.load_generator`: MLmodel as YAML, weights weights-only),
  so nothing in the store is unpickled or imported (MLflow's loader imports the version's own
  copy of lpdvae from its code_paths);
- a body over `max_body` bytes is 413, counted while it arrives (Content-Length or chunked);
- a malformed body is 400 with a reason that never echoes the body;
- at most `serving.MAX_PHRASES` phrases per request, summed over its rows (400 beyond);
- one generation at a time per process (torch already uses every core); a request that waited
  or ran past `seconds` is 503 and its remaining rows are not generated.
Not bounded here: the time one row takes once started (≤ MAX_PHRASES phrases), and work for a
client that hung up (it finishes its current row, then the deadline stops it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lpdvae.errors import LpdvaeError
from lpdvae.registry.serving import MAX_PHRASES, BadRequest, MusicGenerator, Request, parse_requests

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024  # bytes: 64 rows of {n, seed, temperature} take about 4 kB
REQUEST_SECONDS = 60.0  # from arrival (queueing included) to the last row started
LIMIT_CONCURRENCY = 8  # connections uvicorn serves at once; more get 503 at once


@dataclass(frozen=True)
class Limits:
    max_body: int = MAX_BODY
    seconds: float = REQUEST_SECONDS


class HTTPFailure(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def create_app(generator: MusicGenerator, limits: Limits = Limits()):
    """The ASGI app (Starlette) serving `generator` within `limits`."""
    from starlette.applications import Starlette
    from starlette.requests import Request as HTTPRequest
    from starlette.responses import JSONResponse, PlainTextResponse
    from starlette.routing import Route

    lock = asyncio.Lock()

    async def invocations(request: HTTPRequest) -> JSONResponse:
        deadline = time.monotonic() + limits.seconds
        try:
            body = await read_body(request, limits.max_body)
            requests = parse_requests(body_rows(body), generator.temperature)
            rows = await _generate(generator, requests, lock, deadline)
        except HTTPFailure as exc:
            return _error(exc.status, exc.message)
        except BadRequest as exc:
            return _error(400, str(exc))
        return JSONResponse({"predictions": rows})

    async def ping(_: HTTPRequest) -> PlainTextResponse:
        return PlainTextResponse("\n")

    return Starlette(routes=[Route("/invocations", invocations, methods=["POST"]),
                             Route("/ping", ping), Route("/health", ping)])


async def read_body(request: Any, max_body: int) -> bytes:
    """The body, refused (413) as soon as it passes `max_body` bytes: never held whole when too big."""
    if not request.headers.get("content-type", "").lower().startswith("application/json"):
        raise HTTPFailure(415, "Content-Type must be application/json")
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > max_body):
        raise HTTPFailure(413 if declared.isdigit() else 400,
                          f"the body must be at most {max_body} bytes (Content-Length {declared[:20]!r})")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_body:
            raise HTTPFailure(413, f"the body must be at most {max_body} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def body_rows(body: bytes) -> Any:
    """The request rows of a JSON body; a malformed one is described by where, never by what it says."""
    try:
        payload = json.loads(body)
    except json.JSONDecodeError as exc:
        raise HTTPFailure(400, f"the body is not valid JSON: {exc.msg} at line {exc.lineno} "
                          f"column {exc.colno}") from None
    except (ValueError, RecursionError) as exc:  # bad UTF-8, nesting, a 5000-digit number
        raise HTTPFailure(400, f"the body is not valid JSON ({type(exc).__name__})") from None
    if isinstance(payload, dict) and "dataframe_records" in payload:
        return payload["dataframe_records"]
    if isinstance(payload, dict) and "inputs" in payload:
        return payload["inputs"]
    if isinstance(payload, dict) and isinstance(payload.get("dataframe_split"), dict):
        return _split_rows(payload["dataframe_split"])
    raise HTTPFailure(400, 'expected {"dataframe_records": [{"n": 1, "seed": 0, "temperature": 1.0}]}')


def _split_rows(split: dict[str, Any]) -> Any:
    columns, data = split.get("columns"), split.get("data")
    if not (isinstance(columns, list) and all(isinstance(c, str) for c in columns) and isinstance(data, list)):
        raise HTTPFailure(400, 'dataframe_split needs "columns" (names) and "data" (rows)')
    if not 1 <= len(data) <= MAX_PHRASES:
        raise BadRequest(f"{len(data)} request rows: a request has 1..{MAX_PHRASES} rows")
    if not all(isinstance(row, list) and len(row) == len(columns) for row in data):
        raise HTTPFailure(400, "dataframe_split: every row of data must have one value per column")
    return [dict(zip(columns, row, strict=True)) for row in data]


async def _generate(generator: MusicGenerator, requests: list[Request], lock: asyncio.Lock,
                    deadline: float) -> list[dict[str, Any]]:
    """The rows, generated in a worker thread once this request's turn comes, within the deadline."""
    from starlette.concurrency import run_in_threadpool

    try:
        await asyncio.wait_for(lock.acquire(), timeout=max(0.0, deadline - time.monotonic()))
    except TimeoutError:
        raise HTTPFailure(503, "busy: the request waited past its deadline; retry later") from None
    try:
        return await run_in_threadpool(generate_rows, generator, requests, deadline)
    finally:
        lock.release()


def generate_rows(generator: MusicGenerator, requests: list[Request], deadline: float) -> list[dict[str, Any]]:
    """Every row's phrases, checking the deadline before each row: a late request stops its work."""
    rows: list[dict[str, Any]] = []
    for i, req in enumerate(requests):
        if time.monotonic() >= deadline:
            raise HTTPFailure(503, f"stopped: the request ran past its deadline after {i} of "
                              f"{len(requests)} rows; ask for fewer phrases")
        rows.extend(generator.generate(req.n, req.seed, req.temperature))
    return rows


def _error(status: int, message: str):
    from starlette.responses import JSONResponse

    code = {400: "BAD_REQUEST", 413: "REQUEST_TOO_LARGE", 415: "UNSUPPORTED_MEDIA_TYPE"}.get(status, "UNAVAILABLE")
    return JSONResponse({"error_code": code, "message": message}, status_code=status)


def main(argv: list[str] | None = None) -> int:
    """Load the generator (one line and exit 1 when it cannot be), then serve it with uvicorn."""
    import uvicorn
    from mlflow.exceptions import MlflowException

    from lpdvae.host.cpus import torch_threads
    from lpdvae.registry.serving import load_generator
    from lpdvae.registry.tracking import env_credentials_to_env

    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    env_credentials_to_env()
    torch_threads()
    try:
        with tempfile.TemporaryDirectory(prefix="lpdvae-serve-") as tmp:
            generator = load_generator(args.model, Path(tmp))
    except (LpdvaeError, FileNotFoundError) as exc:
        print(f"lpdvae serve: {exc}", file=sys.stderr)
        return 1
    except MlflowException as exc:
        print(f"lpdvae serve: {args.model}: {exc.message.splitlines()[0]}", file=sys.stderr)
        return 1
    uvicorn.run(create_app(generator, Limits(args.max_body, args.timeout)), host=args.host, port=args.port,
                limit_concurrency=args.limit_concurrency, timeout_keep_alive=5)
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m lpdvae.registry.serve_app",
                                description="Serve the registered generator with request bounds.")
    p.add_argument("--model", required=True, help="models:/NAME@ALIAS, runs:/RUN/generator or a local logged model")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--max-body", type=int, default=MAX_BODY, help="bytes (default: %(default)s)")
    p.add_argument("--timeout", type=float, default=REQUEST_SECONDS, help="seconds per request (default: %(default)s)")
    p.add_argument("--limit-concurrency", type=int, default=LIMIT_CONCURRENCY,
                   help="connections at once, more are 503 (default: %(default)s)")
    return p


if __name__ == "__main__":
    sys.exit(main())
