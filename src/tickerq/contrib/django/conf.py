"""The ``TICKERQ`` setting, read and checked: where the store is and how the app is built.

Everything here works on plain values (the setting, ``DATABASES``, ``TIME_ZONE``)
so it can be checked without a configured Django; :func:`load_config` reads them
from ``django.conf.settings``. Every problem is an ``ImproperlyConfigured``
that names the key and the bad value.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from django.core.exceptions import ImproperlyConfigured

from tickerq.engine import EngineOptions
from tickerq.urls import mask_url
from tickerq.validation import short_repr

__all__ = [
    "APP_OPTIONS",
    "KEYS",
    "Config",
    "jobs_module",
    "load_config",
    "read_config",
    "store_from_database",
]

KEYS = ("STORE", "DATABASE", "OPTIONS", "ENGINE_OPTIONS", "MIDDLEWARE", "JOBS_MODULE")
"""The keys ``TICKERQ`` may have."""

APP_OPTIONS = (
    "node_id",
    "max_concurrency",
    "timezone",
    "max_payload_bytes",
    "auto_upgrade",
    "limits",
    "rate_limit",
    "seed_crons",
    "exception_handler",
)
"""The keyword arguments of ``TickerQ(...)`` that ``TICKERQ["OPTIONS"]`` may give."""

SQLITE_ENGINES = frozenset({"django.db.backends.sqlite3"})
POSTGRESQL_ENGINES = frozenset(
    {"django.db.backends.postgresql", "django.contrib.gis.db.backends.postgis"}
)

_CONNECTION_OPTIONS = frozenset(
    {
        "service",
        "passfile",
        "sslmode",
        "sslcert",
        "sslkey",
        "sslrootcert",
        "sslcrl",
        "sslpassword",
        "target_session_attrs",
    }
)
"""Django PostgreSQL OPTIONS that change how or where to connect: not carried over
to a derived store URL, so their presence asks for an explicit ``STORE``."""


@dataclass(frozen=True, kw_only=True)
class Config:
    """The ``TICKERQ`` setting, checked."""

    store: str
    """The store URL (with its password)."""
    store_source: str
    """Where the URL came from: ``TICKERQ['STORE']`` or ``DATABASES['<alias>']``."""
    options: dict[str, Any]
    """Keyword arguments for ``TickerQ(...)`` (``timezone`` defaults to ``TIME_ZONE``)."""
    engine_options: EngineOptions
    middleware: tuple[object, ...]
    """Middleware from ``TICKERQ["MIDDLEWARE"]``, inside the one that closes connections."""
    jobs_module: str

    @property
    def safe_store(self) -> str:
        """The store URL without its password, for messages."""
        return mask_url(self.store)


def _setting_mapping(setting: Any) -> Mapping[str, Any]:
    if setting is None:
        return {}
    if not isinstance(setting, Mapping):
        raise ImproperlyConfigured(f"TICKERQ must be a dict, got {short_repr(setting)}")
    unknown = sorted(str(k) for k in setting if k not in KEYS)
    if unknown:
        raise ImproperlyConfigured(
            f"TICKERQ has unknown key(s) {', '.join(map(repr, unknown))}; known: {', '.join(KEYS)}"
        )
    return setting


def jobs_module(setting: Any) -> str:
    """The name of the module looked for in every installed app (``JOBS_MODULE``, default
    ``jobs``)."""
    value = _setting_mapping(setting).get("JOBS_MODULE", "jobs")
    if not isinstance(value, str) or not all(p.isidentifier() for p in value.split(".")):
        raise ImproperlyConfigured(
            f"TICKERQ['JOBS_MODULE'] must be a module name like 'jobs', got {short_repr(value)}"
        )
    return value


def read_config(setting: Any, databases: Mapping[str, Any], time_zone: str | None = None) -> Config:
    """Check the ``TICKERQ`` setting and work out the store (see :func:`store_from_database`)."""
    tickerq = _setting_mapping(setting)
    store, source = _store(tickerq, databases)
    return Config(
        store=store,
        store_source=source,
        options=_app_options(tickerq.get("OPTIONS"), time_zone),
        engine_options=_engine_options(tickerq.get("ENGINE_OPTIONS")),
        middleware=_middleware(tickerq.get("MIDDLEWARE", ())),
        jobs_module=jobs_module(tickerq),
    )


def load_config() -> Config:
    """:func:`read_config` of this project's settings."""
    from django.conf import settings

    return read_config(
        getattr(settings, "TICKERQ", None),
        settings.DATABASES,
        getattr(settings, "TIME_ZONE", None),
    )


def _store(tickerq: Mapping[str, Any], databases: Mapping[str, Any]) -> tuple[str, str]:
    store = tickerq.get("STORE")
    if store is not None:
        if "DATABASE" in tickerq:
            raise ImproperlyConfigured("TICKERQ: give STORE or DATABASE, not both")
        if not isinstance(store, str) or "://" not in store:
            raise ImproperlyConfigured(
                "TICKERQ['STORE'] must be a URL like sqlite:///path/jobs.db or "
                f"postgresql://user@host/db, got {short_repr(mask_url(str(store)))}"
            )
        return store, "TICKERQ['STORE']"
    alias = tickerq.get("DATABASE", "default")
    if not isinstance(alias, str) or alias not in databases:
        known = ", ".join(map(repr, databases)) or "none"
        raise ImproperlyConfigured(
            f"TICKERQ['DATABASE'] {short_repr(alias)} is not in DATABASES (known: {known}); "
            "or set TICKERQ['STORE']"
        )
    return store_from_database(alias, databases[alias]), f"DATABASES[{alias!r}]"


def store_from_database(alias: str, database: Mapping[str, Any]) -> str:
    """The store URL for the Django database ``alias`` (its settings ``database``).

    SQLite: the same file (``sqlite:////abs/path``), or ``memory://`` when the
    database is in memory (Django's SQLite test database): the two then live and
    die together. PostgreSQL (and PostGIS): the same server and database, from
    NAME, USER, PASSWORD, HOST and PORT. Anything else raises ImproperlyConfigured
    asking for ``TICKERQ['STORE']``.
    """
    engine = str(database.get("ENGINE", ""))
    name = database.get("NAME")
    where = f"DATABASES[{alias!r}]"
    if engine in SQLITE_ENGINES:
        path = os.fspath(name) if name else ""
        if not path or path == ":memory:" or "mode=memory" in path:
            return "memory://"
        if path.startswith("file:"):
            raise ImproperlyConfigured(
                f"{where}['NAME'] is a SQLite URI ({path!r}); set TICKERQ['STORE'] to "
                "sqlite:///path/to/file"
            )
        return "sqlite:///" + os.path.abspath(path)
    if engine in POSTGRESQL_ENGINES:
        return _postgresql_url(where, database)
    raise ImproperlyConfigured(
        f"{where} uses {engine or 'no ENGINE'!r}: tickerq stores its tickers in SQLite or "
        "PostgreSQL; set TICKERQ['STORE'] (e.g. sqlite:///path/tickerq.db)"
    )


def _postgresql_url(where: str, database: Mapping[str, Any]) -> str:
    options = database.get("OPTIONS") or {}
    carried = sorted(set(options) & _CONNECTION_OPTIONS)
    if carried:
        raise ImproperlyConfigured(
            f"{where}['OPTIONS'] has {', '.join(carried)}, which tickerq does not carry "
            "over; set TICKERQ['STORE'] to a postgresql:// URL"
        )
    name = database.get("NAME")
    if not name:
        raise ImproperlyConfigured(f"{where} has no NAME; set TICKERQ['STORE']")
    user = str(database.get("USER") or "")
    password = str(database.get("PASSWORD") or "")
    host = str(database.get("HOST") or "")
    port = str(database.get("PORT") or "")
    userinfo = quote(user, safe="")
    if password:
        userinfo += ":" + quote(password, safe="")
    query = ""
    if host.startswith("/"):  # a Unix socket folder
        query, host = "?host=" + quote(host, safe="/"), ""
    elif ":" in host:  # IPv6
        host = f"[{host}]"
    authority = (userinfo + "@" if userinfo else "") + host + (":" + port if port else "")
    return f"postgresql://{authority}/{quote(str(name), safe='')}{query}"


def _app_options(value: Any, time_zone: str | None) -> dict[str, Any]:
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        raise ImproperlyConfigured(f"TICKERQ['OPTIONS'] must be a dict, got {short_repr(value)}")
    unknown = sorted(str(k) for k in value if k not in APP_OPTIONS)
    if unknown:
        raise ImproperlyConfigured(
            f"TICKERQ['OPTIONS'] has unknown key(s) {', '.join(map(repr, unknown))}; "
            f"known: {', '.join(APP_OPTIONS)}"
        )
    options = dict(value)
    options.setdefault("timezone", time_zone or "UTC")
    handler = options.get("exception_handler")
    if isinstance(handler, str):
        options["exception_handler"] = _imported(handler, "TICKERQ['OPTIONS']['exception_handler']")
    return options


def _engine_options(value: Any) -> EngineOptions:
    if value is None:
        return EngineOptions()
    if isinstance(value, EngineOptions):
        return value
    if not isinstance(value, Mapping):
        raise ImproperlyConfigured(
            f"TICKERQ['ENGINE_OPTIONS'] must be a dict of EngineOptions fields, "
            f"got {short_repr(value)}"
        )
    fields = [f.name for f in dataclasses.fields(EngineOptions)]
    unknown = sorted(str(k) for k in value if k not in fields)
    if unknown:
        raise ImproperlyConfigured(
            f"TICKERQ['ENGINE_OPTIONS'] has unknown key(s) {', '.join(map(repr, unknown))}; "
            f"known: {', '.join(fields)}"
        )
    try:
        return EngineOptions(**value)
    except (TypeError, ValueError) as exc:
        raise ImproperlyConfigured(f"TICKERQ['ENGINE_OPTIONS']: {exc}") from None


def _middleware(value: Any) -> tuple[object, ...]:
    if isinstance(value, str | bytes) or not isinstance(value, list | tuple):
        raise ImproperlyConfigured(
            f"TICKERQ['MIDDLEWARE'] must be a list of dotted paths, got {short_repr(value)}"
        )
    found: list[object] = []
    for i, item in enumerate(value):
        if not isinstance(item, str):
            found.append(item)  # an instance, given as is
            continue
        imported = _imported(item, f"TICKERQ['MIDDLEWARE'][{i}]")
        found.append(imported() if isinstance(imported, type) else imported)
    return tuple(found)


def _imported(path: str, what: str) -> Any:
    from django.utils.module_loading import import_string

    try:
        return import_string(path)
    except ImportError as exc:
        raise ImproperlyConfigured(f"{what}: cannot import {path!r}: {exc}") from None
