"""Credentials out of URIs before they are recorded or printed.

A source URI may carry `user:password@` or a presigned query (`X-Amz-Signature=…`); manifests,
logs, MLflow params and registry tags keep what reproduces the data (scheme, host, path, the
other query parameters) and replace the secret parts with `***`. Regex-based so the rest of the
URI keeps its exact spelling.
"""

from __future__ import annotations

import re

MASK = "***"

# userinfo: everything between "scheme://" and the first "@" before the host ends
_USERINFO = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^/?#@\s]+@")
# query parameters that sign or authenticate a request (AWS, GCS, Azure SAS, OAuth, generic)
_SECRET_PARAM = re.compile(
    r"(?P<head>[?&;](?:[\w.-]*(?:token|secret|signature|password|passwd|credential)[\w.-]*"
    r"|sig|key|api[-_]?key|awsaccesskeyid)=)[^&#\s'\"]*",
    re.IGNORECASE,
)


def redact_uri(uri: str) -> str:
    """`uri` with userinfo and signature/token/credential query values replaced by `***`;
    anything else (a plain path, a clean URI) comes back unchanged. Also safe on free text
    that quotes URIs (exception messages)."""
    uri = _USERINFO.sub(rf"\g<head>{MASK}@", uri)
    return _SECRET_PARAM.sub(rf"\g<head>{MASK}", uri)

