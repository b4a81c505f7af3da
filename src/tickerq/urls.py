"""Store URLs shown to people: passwords hidden, whatever the URL looks like.

One helper for every place a store URL is shown or logged (dashboard pages,
log lines, CLI messages, connection errors). It works on the text as typed and
never parses it the way a driver would, because a careless URL is exactly the
one that leaks: ``postgresql://u:p@ss@host/db`` (an unencoded ``@`` in the
password) or ``...?password=secret``.
"""

from __future__ import annotations

import re
from urllib.parse import unquote, unquote_plus

__all__ = ["MASK", "mask_secrets", "mask_url"]

MASK = "***"
"""What a hidden secret is shown as."""

_SECRET_NAME = re.compile(r"pass|pwd|secret|token|key|credential|signature|url", re.IGNORECASE)
"""Query parameter names whose values are secrets (password, sslpassword, passwd,
pwd, secret, token, api_key, ...), or may hold one (a URL inside the URL, such as
the store's ``listen_url``). Hiding a harmless value costs nothing."""

# A query parameter: its name, and its value up to the next "&name=" or "?name="
# (an unencoded "&" or "?" inside a value then stays inside the hidden part).
_PARAMETER = re.compile(r"[?&]([^=&?#]*)=(.*?)(?=[&?][A-Za-z_][\w.%-]*=|$)", re.DOTALL)


def mask_url(url: str) -> str:
    """``url`` with its password and secret query parameters shown as ``***``.

    The userinfo password is taken to end at the *last* ``@``, so an unencoded
    ``@`` (or ``/``, ``?``, ``#``) inside it stays hidden: when in doubt more is
    hidden, never less.
    """
    spans = _secret_spans(url)
    if not spans:
        return url
    parts: list[str] = []
    done = 0
    for start, end in spans:
        parts.append(url[done:start])
        parts.append(MASK)
        done = end
    parts.append(url[done:])
    return "".join(parts)


def mask_secrets(text: str, url: str) -> str:
    """``text`` (an error message, say) without any secret of ``url`` in it.

    The URL itself is replaced by :func:`mask_url`; each secret, as typed and
    percent-decoded, is replaced by ``***`` wherever else it shows up.
    """
    candidates = [url[start:end] for start, end in _secret_spans(url)]
    password = _userinfo_password(url)
    if password is not None:
        # the password ends at one of the "@" in its span (the last is only a guess)
        start, end = password
        candidates += [url[start:k] for k in range(start, end) if url[k] == "@"]
    secrets: set[str] = set()
    for raw in candidates:
        secrets.update((raw, unquote(raw), unquote_plus(raw)))
    secrets.discard("")
    secrets.discard(MASK)
    text = text.replace(url, mask_url(url))
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def _secret_spans(url: str) -> list[tuple[int, int]]:
    """Where the secrets of ``url`` are: sorted, merged (start, end) pairs."""
    spans: list[tuple[int, int]] = []
    for match in _PARAMETER.finditer(url):
        name = unquote_plus(match.group(1)).strip()
        if _SECRET_NAME.search(name) and match.end(2) > match.start(2):
            spans.append((match.start(2), match.end(2)))
    password = _userinfo_password(url)
    if password is not None:
        spans.append(password)
    return _merged(spans)


def _userinfo_password(url: str) -> tuple[int, int] | None:
    """The span of the password in ``scheme://user:password@host``, if any.

    It runs from the first ``:`` after ``://`` to the *last* ``@``: every
    character before the real separator is inside it, whatever the password
    holds. An ``@`` later in the URL (a query value) hides more than needed.
    """
    scheme_end = url.find("://")
    start = 0 if scheme_end < 0 else scheme_end + 3  # no scheme: "user:pw@host" alone
    if scheme_end >= 0 and url.startswith("/", start):
        return None  # sqlite:///path: no authority, so no userinfo
    at = url.rfind("@", start)
    colon = url.find(":", start, at) if at > 0 else -1
    if colon < 0 or colon + 1 == at:
        return None  # no password, or an empty one
    return colon + 1, at


def _merged(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out
