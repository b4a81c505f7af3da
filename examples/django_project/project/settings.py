"""Settings of the example project.

The database comes from ``DATABASE_URL``: ``sqlite:///path/db.sqlite3`` (the
default: db.sqlite3 next to manage.py) or ``postgresql://user:password@host:port/name``.
tickerq keeps its tables in the same database: ``TICKERQ`` gives no ``STORE``.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote, urlsplit

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-secret")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["localhost", "127.0.0.1", "testserver"]

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "tickerq.contrib.django",
    "orders",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
]

ROOT_URLCONF = "project.urls"


def database_from_url(url: str) -> dict[str, object]:
    """A DATABASES entry for a sqlite:/// or postgresql:// URL."""
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


DATABASES = {
    "default": database_from_url(
        os.environ.get("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}")
    )
}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"

TICKERQ = {
    # No "STORE": tickerq's tables go into DATABASES["default"] (SQLite file or PostgreSQL).
    "OPTIONS": {"max_concurrency": 4},
    "ENGINE_OPTIONS": {"grace_period": 10},
}
