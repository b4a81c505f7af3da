"""Who may use the dashboard, and what they may do.

Without configured auth only loopback clients (127.0.0.1, ::1) get in, and
only when the request names this machine (``Host`` localhost, 127.x or [::1])
and came through no proxy: a DNS-rebinding page cannot reach it. With auth,
every request must authenticate: :class:`BasicAuth` (constant-time
compare), :class:`BearerAuth` (``Authorization: Bearer <token>``, never a
query parameter), or a host-app callable ``auth(request) -> user | None``
(sync or async) whose result counts only if it is truthy. What a user may do
is a set of :class:`Permission`.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import inspect
import ipaddress
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import HTTPConnection

__all__ = [
    "ALL_PERMISSIONS",
    "AuthCallable",
    "BasicAuth",
    "BearerAuth",
    "DashboardUser",
    "Permission",
    "PermissionsSpec",
    "is_loopback",
    "is_loopback_host",
    "local_refusal",
    "same_origin",
]

FORWARDING_HEADERS = (
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-real-ip",
)
"""Headers a proxy adds: without auth, a request carrying one is refused (the
client address is then the proxy's, not the user's)."""


class Permission(StrEnum):
    """What a dashboard user may do."""

    VIEW = "view"
    """See every page and read the API."""
    OPERATE = "operate"
    """Cancel, retry now, run a cron now, enable/disable crons, pause/resume the engine."""
    EDIT = "edit"
    """Add, change and duplicate tickers."""
    DELETE = "delete"
    """Delete tickers (one or many) and cron tickers."""


ALL_PERMISSIONS = frozenset(Permission)
"""Every permission: what a user gets when no ``permissions`` are configured."""


@dataclass(frozen=True, slots=True)
class DashboardUser:
    """The user behind a request: a display name and what they may do."""

    name: str
    permissions: frozenset[Permission] = field(default=ALL_PERMISSIONS)
    identity: Any = None
    """What the auth callable returned (the host app's user object), if any."""

    def can(self, permission: Permission | str) -> bool:
        """Whether this user holds ``permission``."""
        return Permission(permission) in self.permissions


AuthCallable = Callable[[HTTPConnection], Any]
"""A host-app hook: returns a user (any object, or a name) or None to refuse;
may be async."""

PermissionsSpec = (
    Collection[Permission | str]
    | Mapping[str, Collection[Permission | str]]
    | Callable[[Any], Collection[Permission | str]]
    | None
)
"""Permissions: one set for everyone, a mapping user name -> set, or a callable
``(user) -> set``. None: every permission."""


class BasicAuth:
    """HTTP basic auth against fixed users; passwords compared in constant time.

    ``BasicAuth("admin", "secret")`` or ``BasicAuth({"admin": "s1", "ops": "s2"})``.
    """

    scheme = "Basic"

    def __init__(self, username: str | Mapping[str, str], password: str | None = None) -> None:
        if isinstance(username, str):
            if not password:
                raise ValueError("BasicAuth needs a non-empty password")
            self._users = {username: password}
        else:
            self._users = dict(username)
        if not self._users or any(not p for p in self._users.values()):
            raise ValueError("BasicAuth needs at least one user, each with a non-empty password")
        self.realm = "tickerq"

    def __call__(self, conn: HTTPConnection) -> str | None:
        """The user name if the request carries valid credentials, else None."""
        header = conn.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic" or not value:
            return None
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        user, sep, given = decoded.partition(":")
        if not sep:
            return None
        found: str | None = None
        for name, password in self._users.items():
            # compare every user, so timing does not reveal which names exist
            ok_name = hmac.compare_digest(name.encode(), user.encode())
            ok_password = hmac.compare_digest(password.encode(), given.encode())
            if ok_name and ok_password:
                found = name
        return found


class BearerAuth:
    """``Authorization: Bearer <token>``; tokens compared in constant time.

    ``BearerAuth("token")`` (user "api") or ``BearerAuth({"token1": "ci", "token2": "ops"})``
    mapping each token to a user name.
    """

    scheme = "Bearer"

    def __init__(self, tokens: str | Mapping[str, str]) -> None:
        self._tokens = {tokens: "api"} if isinstance(tokens, str) else dict(tokens)
        if not self._tokens or any(not t for t in self._tokens):
            raise ValueError("BearerAuth needs at least one non-empty token")

    def __call__(self, conn: HTTPConnection) -> str | None:
        """The token's user name if the request carries a known token, else None."""
        header = conn.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value:
            return None
        given = value.strip().encode()
        found: str | None = None
        for token, name in self._tokens.items():
            if hmac.compare_digest(token.encode(), given):
                found = name
        return found


def is_loopback(conn: HTTPConnection) -> bool:
    """Whether the client's address is a loopback address (127.0.0.0/8, ::1)."""
    client = conn.scope.get("client")
    if not client:
        return False
    host = str(client[0])
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


_PORT = re.compile(r":[0-9]{1,5}")


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` (a Host header or an origin's ``host[:port]``) names this
    machine: ``localhost``, 127.0.0.0/8 or ``[::1]``, with any port."""
    host = host.strip().lower()
    if host.startswith("["):
        name, bracket, port = host[1:].partition("]")
        if not bracket:
            return False
    else:
        name, colon, port = host.partition(":")
        port = colon + port
    if port and not _PORT.fullmatch(port):
        return False
    if name == "localhost":
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address):
        if not host.startswith("["):
            return False
        address = address.ipv4_mapped or address
    return address.is_loopback


def local_refusal(conn: HTTPConnection) -> str | None:
    """Why a request may not use a dashboard without auth (None: it may).

    The client must be a loopback address, no proxy may have forwarded the
    request, and the ``Host`` must name this machine: a page whose DNS name
    was rebound to 127.0.0.1 still sends its own name as Host.
    """
    if not is_loopback(conn):
        return "the client is not a loopback address"
    forwarded = [name for name in FORWARDING_HEADERS if name in conn.headers]
    if forwarded:
        return f"the request came through a proxy ({', '.join(forwarded)})"
    host = conn.headers.get("host")
    if host is None:
        return "the request has no Host header"
    if not is_loopback_host(host):
        return f"the Host {host[:100]!r} is not a loopback name (localhost, 127.0.0.1, [::1])"
    return None


async def authenticate(conn: HTTPConnection, auth: AuthCallable | None) -> Any:
    """Run the auth hook; returns the user, or None when refused.

    Without a hook, loopback requests (see :func:`local_refusal`) are user
    ``"local"``. A falsy result of the hook (None, False, 0, "", [], {}) is a
    refusal: only a truthy user gets in.
    """
    if auth is None:
        return "local" if local_refusal(conn) is None else None
    result = auth(conn)
    if inspect.isawaitable(result):
        result = await result
    try:
        accepted = bool(result)
    except Exception:  # an object whose truth cannot be told is no user
        accepted = False
    return result if accepted else None


def user_name(identity: Any) -> str:
    """A display name for whatever the auth hook returned."""
    if isinstance(identity, str):
        return identity
    for attribute in ("username", "name", "email", "id"):
        value = getattr(identity, attribute, None)
        if value is not None:
            return str(value)
    if isinstance(identity, Mapping):
        for key in ("username", "name", "email", "id"):
            if key in identity:
                return str(identity[key])
    return str(identity)


def check_permissions_spec(spec: PermissionsSpec) -> None:
    """Fail early (ValueError naming it) on an unknown permission name."""
    if spec is None or callable(spec):
        return
    groups = spec.values() if isinstance(spec, Mapping) else [spec]
    for group in groups:
        for value in group:
            try:
                Permission(value)
            except ValueError:
                known = ", ".join(p.value for p in Permission)
                raise ValueError(f"unknown permission {value!r} (known: {known})") from None


def permissions_for(identity: Any, name: str, spec: PermissionsSpec) -> frozenset[Permission]:
    """The permissions ``spec`` grants to this user."""
    if spec is None:
        return ALL_PERMISSIONS
    if isinstance(spec, Mapping):
        granted: Collection[Permission | str] = spec.get(name, ())
    elif callable(spec):
        granted = spec(identity) or ()
    else:
        granted = spec
    out = frozenset(Permission(p) for p in granted)
    # whoever may change anything may see it
    return out | {Permission.VIEW} if out else out


def same_origin(
    conn: HTTPConnection, allowed_origins: Collection[str] = (), *, local_only: bool = False
) -> bool:
    """Whether an unsafe request comes from the dashboard's own origin.

    Browsers send ``Origin`` (or at least ``Referer``) with every POST, PUT and
    DELETE; it must be one of ``allowed_origins`` (for proxies that rewrite
    Host) or match the ``Host`` the request was sent to. With ``local_only``
    (no auth) the origin must also name this machine (localhost, 127.x,
    [::1]): the Host alone would let a DNS-rebinding page through.
    ``Sec-Fetch-Site: cross-site`` is refused outright. A request with none of
    these headers is not from a browser (curl, scripts with a token) and is
    let through.
    """
    fetch_site = conn.headers.get("sec-fetch-site")
    if fetch_site in ("cross-site", "same-site"):
        return False
    source = conn.headers.get("origin") or conn.headers.get("referer")
    if source is None:
        return True
    if source == "null":
        return False
    try:
        parts = urlsplit(source)
    except ValueError:  # e.g. an unclosed "[" in the host
        return False
    origin = f"{parts.scheme}://{parts.netloc}".lower()
    if origin in {o.rstrip("/").lower() for o in allowed_origins}:
        return True
    if local_only and not is_loopback_host(parts.netloc):
        return False
    host = conn.headers.get("host", "").lower()
    return bool(host) and parts.netloc.lower() == host
