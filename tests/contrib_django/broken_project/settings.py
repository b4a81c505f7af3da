"""A project with mistakes to find, chosen by $BROKEN: jobs, settings or store."""

import os

BROKEN = os.environ.get("BROKEN", "")

SECRET_KEY = "test-only"
USE_TZ = True
INSTALLED_APPS = ["tickerq.contrib.django", "fine"] + (["shop"] if BROKEN == "jobs" else [])
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}

TICKERQ = {
    "STORE": "postgresql://postgres:secret@127.0.0.1:1/nowhere"
    if BROKEN == "store"
    else "memory://",
}
if BROKEN == "settings":
    TICKERQ["OPTIONS"] = {"concurrency": 4}
