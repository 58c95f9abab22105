"""Input patterns written once, for every regex engine that evaluates them.

One pattern runs in the API server (the CRD, Go RE2), in pydantic (Rust regex), in
`optimodel validate` (jsonschema, Python `re`) and in ECMA-262 tools. The patterns here keep
to the syntax all four read alike: explicit ASCII classes (`\\s`, `\\w`, `\\d` differ between
engines), no lookaround or backreferences (RE2 has none), anchored `^...$` so a whole value
must match. Python alone lets `$` match before a trailing newline: `fullmatch` gives it the
other engines' meaning, so "minilm\\n" is refused everywhere.

Paths refuse `.` and `..` segments without lookahead: a segment starts with a character other
than a dot, or with one dot and then another character, or with two dots and more.
"""

from __future__ import annotations

import re
from functools import cache

DNS_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS_SUBDOMAIN = rf"{DNS_LABEL}(\.{DNS_LABEL})*"
# Any character but ASCII controls, space, DEL and "/" (non-ASCII names are fine).
_CHAR = r"[^\x00-\x20\x7f/]"
_FIRST = r"[^\x00-\x20\x7f/.]"
PATH_SEGMENT = rf"({_FIRST}{_CHAR}*|\.{_FIRST}{_CHAR}*|\.\.{_CHAR}+)"
RELATIVE_PATH = rf"{PATH_SEGMENT}(/{PATH_SEGMENT})*/?"
ABSOLUTE_PATH = rf"/({RELATIVE_PATH})?"
HF_ID = r"[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?"
S3_BUCKET = r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]"
_VOLUME_PATH = rf"(/({RELATIVE_PATH})?)?"

HF_URI = rf"hf://{HF_ID}(/{HF_ID})?"
FILE_URI = rf"file://{ABSOLUTE_PATH}"
PVC_URI = rf"pvc://{DNS_SUBDOMAIN}{_VOLUME_PATH}"
S3_URI = rf"s3://{S3_BUCKET}{_VOLUME_PATH}"
BUILTIN_URI = rf"builtin://{DNS_LABEL}"

KUBERNETES_NAME_PATTERN = rf"^{DNS_SUBDOMAIN}$"
SECRET_KEY_PATTERN = r"^[-._a-zA-Z0-9]+$"
SUB_PATH_PATTERN = rf"^/?({RELATIVE_PATH})?$"
S3_URI_PATTERN = rf"^{S3_URI}$"
REGION_PATTERN = rf"^{DNS_LABEL}$"
HF_REVISION_PATTERN = (
    r"^[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?(/[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?)*$"
)
# host[:port]/path[:tag][@digest], as `docker pull` reads a reference (no spaces, no scheme).
_HOST_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?"
# As docker reads it: the first component is a registry only with a dot, a port or localhost.
_IMAGE_HOST = (
    rf"((localhost|{_HOST_LABEL}(\.{_HOST_LABEL})+)(:[0-9]{{1,5}})?|{_HOST_LABEL}:[0-9]{{1,5}})"
)
_IMAGE_PATH = r"[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*"
IMAGE_PATTERN = (
    rf"^({_IMAGE_HOST}/)?{_IMAGE_PATH}(/{_IMAGE_PATH})*"
    r"(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@[a-z0-9]+([+._-][a-z0-9]+)*:[0-9a-fA-F]{32,})?$"
)
# http(s)://host[:port][/path]: a host name or an IPv4/IPv6 literal, nothing after a space.
ENDPOINT_PATTERN = (
    r"^https?://([A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*"
    r"|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?(/[^\x00-\x20\x7f]*)?$"
)


def _ecma_dollars(pattern: str) -> str:
    """`pattern` with every end-of-text `$` as Python's `\\Z` (escapes and classes kept)."""
    out: list[str] = []
    escaped = in_class = False
    for char in pattern:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
        elif char == "$":
            out.append(r"\Z")
            continue
        out.append(char)
    return "".join(out)


@cache
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(_ecma_dollars(pattern))


def pattern_search(pattern: str, value: str) -> bool:
    """Whether `pattern` finds a match in `value` as RE2, ECMA-262 and Rust read it.

    That is JSON Schema's `pattern` (a search, so anchors decide what must match whole)."""
    return _compiled(pattern).search(value) is not None
