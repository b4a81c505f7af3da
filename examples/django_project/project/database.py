"""The example's database from ``DATABASE_URL`` (a project would use dj-database-url)."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit


def database_from_url(url: str) -> dict[str, object]:
    """A DATABASES entry for a sqlite:///path or postgresql://user:password@host/name URL."""
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": unquote(parts.path[1:])}
    if parts.scheme in ("postgresql", "postgres"):
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": unquote(parts.path[1:]),
            "USER": unquote(parts.username or ""),
            "PASSWORD": unquote(parts.password or ""),
            "HOST": parts.hostname or "",
            "PORT": str(parts.port or ""),
            "OPTIONS": {"application_name": "django-example"},
        }
    raise ValueError(f"DATABASE_URL {url!r}: use sqlite:///path or postgresql://...")
