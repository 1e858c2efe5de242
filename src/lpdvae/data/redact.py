"""Credentials out of URIs before they are recorded or printed.

A source URI may carry `user:password@` or a presigned query (`X-Amz-Signature=…`); manifests,
logs, MLflow params and registry tags keep what reproduces the data (scheme, host, path, the
other query parameters) and replace the secret parts with `***`. Regex-based so the rest of the
URI keeps its exact spelling. Params refuse a `data.source` that `credential_parts` finds
anything in (lpdvae.params): a value in params ends up in dvc.lock.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

MASK = "***"

# a URI inside any text: scheme://, then up to whitespace or a quote
_URI = re.compile(r"\b(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<rest>[^\s'\"<>]*)")
# `?key=`, `&key=`, `;key=` in a query, `#key=` in a fragment (OAuth's #access_token=…)
_PARAM_HEAD = re.compile(r"[?&;#](?P<key>[^=&;#?\s'\"]+)=")
_VALUE_END = re.compile(r"[&#\s'\"]")
# lower-case, separators dropped: a key containing one of these names a secret
_SECRET_WORDS = ("token", "secret", "signature", "passw", "pwd", "credential", "auth", "session",
                 "jwt", "apikey", "accesskey", "privatekey")
_SECRET_PREFIXES = ("x-amz-", "x-goog-")  # every field of an AWS / GCS presigned URL


def secret_key(key: str) -> bool:
    """Does a query/fragment key look like it carries a secret (key, sig, token, X-Amz-*, ...)?"""
    lower = unquote(key).lower()
    compact = re.sub(r"[^a-z0-9]", "", lower)
    return (lower.startswith(_SECRET_PREFIXES) or any(w in compact for w in _SECRET_WORDS)
            or compact.endswith(("key", "sig")) or compact in ("pass", "pw"))


def _userinfo_end(rest: str) -> int:
    """Index of the `@` that ends the userinfo in `rest` (what follows `scheme://`), or -1.

    An `@` after a `/` with no `:` before that `/` is in the path (s3://b/a@b/), not userinfo.
    Otherwise the password may hold a raw `@` and `/` in any order, so the userinfo runs to the
    last `@` before the query: an `@` in the path then masks the host too, never less."""
    stop = min((i for i in (rest.find("?"), rest.find("#")) if i >= 0), default=len(rest))
    first = rest.find("@", 0, stop)
    if first < 0:
        return -1
    slash = rest.find("/", 0, first)
    if slash >= 0 and ":" not in rest[:slash]:
        return -1
    return rest.rfind("@", 0, stop)


def _mask_userinfo(match: re.Match[str]) -> str:
    rest = match["rest"]
    end = _userinfo_end(rest)
    return match.group(0) if end < 0 else f"{match['head']}{MASK}{rest[end:]}"


def _secret_params(text: str) -> list[tuple[str, int, int]]:
    """(key, value start, value end) of every secret-looking `key=value` in a query or fragment."""
    found: list[tuple[str, int, int]] = []
    pos = 0
    for m in _PARAM_HEAD.finditer(text):
        if m.start() < pos or not secret_key(m["key"]):
            continue  # a head inside a masked value is part of that value
        end = _VALUE_END.search(text, m.end())
        pos = end.start() if end else len(text)
        found.append((m["key"], m.end(), pos))
    return found


def redact_uri(uri: str) -> str:
    """`uri` with userinfo and secret-looking query/fragment values replaced by `***`; anything
    else (a plain path, a clean URI) comes back unchanged. Also safe on free text that quotes
    URIs (exception messages, urllib3's request lines)."""
    text = _URI.sub(_mask_userinfo, uri)
    out, pos = [], 0
    for _key, start, end in _secret_params(text):
        out += [text[pos:start], MASK]
        pos = end
    return "".join(out) + text[pos:]


def credential_parts(uri: str) -> list[str]:
    """What in `uri` carries a credential, named without its value: "userinfo (user:password@)",
    "key 'token'" entries; [] for a clean URI."""
    parts = ["userinfo (user:password@)"] if _URI.sub(_mask_userinfo, uri) != uri else []
    return parts + [f"key {key!r}" for key, _, _ in _secret_params(uri)]
