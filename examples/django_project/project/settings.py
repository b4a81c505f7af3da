"""Settings of the example project.

The database comes from ``DATABASE_URL``: ``sqlite:///path/db.sqlite3`` (default:
db.sqlite3 next to manage.py) or ``postgresql://user:password@host:port/name``.
"""

from __future__ import annotations

import os
from pathlib import Path

from project.database import database_from_url

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-secret")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["localhost", "127.0.0.1", "testserver"]
ROOT_URLCONF = "project.urls"
USE_TZ = True
TIME_ZONE = "Europe/Berlin"  # also the timezone of tickerq's cron tickers (unless OPTIONS say)

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "tickerq.contrib.django",  # finds each app's jobs.py; manage.py tickerq ...
    "orders",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
]

DATABASES = {
    "default": database_from_url(
        os.environ.get("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}")
    )
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

TICKERQ = {
    # No "STORE": tickerq's tables go into DATABASES["default"] (SQLite file or PostgreSQL).
    "OPTIONS": {"max_concurrency": 4},
    "ENGINE_OPTIONS": {"grace_period": 10},
}
