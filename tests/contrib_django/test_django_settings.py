"""The ``TICKERQ`` setting and the store derived from ``DATABASES`` (read without Django
set up), and what ``manage.py tickerq check`` and Django's system checks say about a
project with mistakes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("django")

from django.core.exceptions import ImproperlyConfigured
from sqlalchemy.engine import make_url

from tickerq import EngineOptions
from tickerq.contrib.django.conf import (
    jobs_module,
    read_config,
    store_from_database,
)
from tickerq.middleware import Middleware
from tickerq.stores.sql.dialects import for_url

SQLITE = "django.db.backends.sqlite3"
POSTGRESQL = "django.db.backends.postgresql"


class Audit(Middleware):
    """Imported by dotted path in a test below."""


def pg(**fields: Any) -> dict[str, Any]:
    return {"ENGINE": POSTGRESQL, "NAME": "shop", **fields}


def test_sqlite_file_becomes_the_same_file(tmp_path: Path) -> None:
    url = store_from_database("default", {"ENGINE": SQLITE, "NAME": tmp_path / "db.sqlite3"})
    assert url == f"sqlite:///{tmp_path / 'db.sqlite3'}"
    assert for_url(url).file == str(tmp_path / "db.sqlite3")


def test_relative_sqlite_path_is_made_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    url = store_from_database("default", {"ENGINE": SQLITE, "NAME": "db.sqlite3"})
    assert url == f"sqlite:///{tmp_path / 'db.sqlite3'}"


@pytest.mark.parametrize("name", [":memory:", "", "file:memorydb_default?mode=memory&cache=shared"])
def test_in_memory_sqlite_becomes_the_memory_store(name: str) -> None:
    assert store_from_database("default", {"ENGINE": SQLITE, "NAME": name}) == "memory://"


def test_postgresql_settings_become_a_url_with_every_part_encoded() -> None:
    url = store_from_database(
        "default", pg(USER="app", PASSWORD="p@ss:w/rd?", HOST="db.internal", PORT=6543)
    )
    parsed = make_url(url)
    assert (parsed.username, parsed.password) == ("app", "p@ss:w/rd?")
    assert (parsed.host, parsed.port, parsed.database) == ("db.internal", 6543, "shop")
    assert for_url(url).where == "db.internal:6543/shop"  # the store accepts it


def test_postgresql_without_user_or_host_leaves_them_to_the_driver() -> None:
    assert store_from_database("default", pg()) == "postgresql:///shop"
    assert store_from_database("default", pg(USER="app", HOST="", PORT="")) == (
        "postgresql://app@/shop"
    )


def test_postgresql_unix_socket_and_ipv6_hosts() -> None:
    socket = make_url(store_from_database("default", pg(HOST="/var/run/postgresql")))
    assert socket.host is None and socket.query["host"] == "/var/run/postgresql"
    assert make_url(store_from_database("default", pg(HOST="::1", PORT="5432"))).host == "::1"


def test_postgis_counts_as_postgresql() -> None:
    database = pg(ENGINE="django.contrib.gis.db.backends.postgis", HOST="h")
    assert store_from_database("default", database) == "postgresql://h/shop"


def test_postgresql_connection_options_are_not_dropped_silently() -> None:
    with pytest.raises(ImproperlyConfigured, match=r"sslmode.*TICKERQ\['STORE'\]"):
        store_from_database("default", pg(OPTIONS={"sslmode": "require"}))
    harmless = pg(OPTIONS={"application_name": "web"})
    assert store_from_database("default", harmless) == "postgresql:///shop"


def test_other_databases_ask_for_a_store() -> None:
    with pytest.raises(ImproperlyConfigured, match=r"django\.db\.backends\.mysql.*TICKERQ"):
        store_from_database("default", {"ENGINE": "django.db.backends.mysql", "NAME": "x"})


def test_store_setting_wins_and_is_named_as_the_source() -> None:
    config = read_config({"STORE": "postgresql://a:secret@h/d"}, {}, "Europe/Berlin")
    assert config.store == "postgresql://a:secret@h/d"
    assert config.safe_store == "postgresql://a:***@h/d"
    assert config.store_source == "TICKERQ['STORE']"
    assert config.options == {"timezone": "Europe/Berlin"}  # TIME_ZONE by default
    assert config.engine_options == EngineOptions()
    assert config.jobs_module == "jobs"


def test_store_is_derived_from_the_chosen_database(tmp_path: Path) -> None:
    databases = {
        "default": {"ENGINE": "django.db.backends.mysql", "NAME": "x"},
        "jobs": {"ENGINE": SQLITE, "NAME": str(tmp_path / "jobs.db")},
    }
    config = read_config({"DATABASE": "jobs"}, databases, None)
    assert config.store == f"sqlite:///{tmp_path / 'jobs.db'}"
    assert config.store_source == "DATABASES['jobs']"
    assert config.options == {"timezone": "UTC"}
    with pytest.raises(
        ImproperlyConfigured, match=r"'nope' is not in DATABASES.*'default', 'jobs'"
    ):
        read_config({"DATABASE": "nope"}, databases, None)


def test_options_engine_options_and_middleware_are_read() -> None:
    config = read_config(
        {
            "STORE": "memory://",
            "OPTIONS": {"max_concurrency": 4, "node_id": "web-1", "timezone": "UTC"},
            "ENGINE_OPTIONS": {"grace_period": 5, "lease": 30},
            "MIDDLEWARE": [f"{__name__}.Audit", Audit()],
            "JOBS_MODULE": "tasks",
        },
        {},
        "Europe/Berlin",
    )
    assert config.options == {"max_concurrency": 4, "node_id": "web-1", "timezone": "UTC"}
    assert config.engine_options == EngineOptions(grace_period=5, lease=30)
    assert [type(m) for m in config.middleware] == [Audit, Audit]
    assert config.jobs_module == "tasks"


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("memory://", "TICKERQ must be a dict, got 'memory://'"),
        ({"STOR": "memory://"}, "unknown key\\(s\\) 'STOR'; known: STORE"),
        ({"STORE": "jobs.db"}, "TICKERQ\\['STORE'\\] must be a URL.*got 'jobs.db'"),
        ({"STORE": "memory://", "DATABASE": "default"}, "STORE or DATABASE, not both"),
        ({"STORE": "memory://", "OPTIONS": {"concurrency": 2}}, "'concurrency'; known: node_id"),
        ({"STORE": "memory://", "OPTIONS": []}, "OPTIONS'\\] must be a dict, got \\[\\]"),
        ({"STORE": "memory://", "ENGINE_OPTIONS": {"grace": 1}}, "'grace'; known: late_threshold"),
        ({"STORE": "memory://", "MIDDLEWARE": "a.B"}, "must be a list of dotted paths, got 'a.B'"),
        ({"STORE": "memory://", "MIDDLEWARE": ["no_such_module.M"]}, "cannot import 'no_such_mo"),
        ({"STORE": "memory://", "JOBS_MODULE": "my-jobs"}, "like 'jobs', got 'my-jobs'"),
    ],
)
def test_bad_settings_name_the_key_and_the_value(setting: Any, message: str) -> None:
    with pytest.raises(ImproperlyConfigured, match=message):
        read_config(setting, {"default": {"ENGINE": SQLITE, "NAME": ":memory:"}}, None)


def test_a_password_in_a_bad_store_url_is_not_shown() -> None:
    with pytest.raises(ImproperlyConfigured) as caught:
        read_config({"STORE": "user:secret@host/db"}, {}, None)
    assert "secret" not in str(caught.value)


def test_jobs_module_defaults_to_jobs() -> None:
    assert jobs_module(None) == "jobs"
    assert jobs_module({"JOBS_MODULE": "background.jobs"}) == "background.jobs"


# -- a project with mistakes (tests/contrib_django/broken_project), as subprocesses ----------

BROKEN_PROJECT = Path(__file__).parent / "broken_project"


def django_admin(broken: str, *args: str) -> subprocess.CompletedProcess[str]:
    src = str(Path(__file__).resolve().parents[2] / "src")
    path = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)
    return subprocess.run(
        [sys.executable, "-m", "django", *args],
        cwd=BROKEN_PROJECT,
        env={
            **os.environ,
            "PYTHONPATH": path,
            "DJANGO_SETTINGS_MODULE": "settings",
            "BROKEN": broken,
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_tickerq_check_lists_every_problem_of_the_jobs_modules() -> None:
    result = django_admin("jobs", "tickerq", "check")
    assert result.returncode == 1, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 2, result.stderr
    assert "'nightly'" in errors[0] and "25" in errors[0]
    assert "'two_params'" in errors[1] and "b" in errors[1]
    assert "2 problem(s) found" in result.stderr


def test_django_system_checks_report_them_and_the_worker_does_not_start() -> None:
    result = django_admin("jobs", "check")
    assert result.returncode == 1
    assert result.stderr.count("tickerq.E001") == 2, result.stderr
    worker = django_admin("jobs", "tickerq", "run")
    assert worker.returncode == 1
    assert "tickerq.E001" in worker.stderr
    assert "started" not in worker.stdout + worker.stderr


def test_tickerq_check_reports_bad_settings() -> None:
    result = django_admin("settings", "tickerq", "check")
    assert result.returncode == 1
    assert "error: settings: TICKERQ['OPTIONS'] has unknown key(s) 'concurrency'" in result.stderr
    assert "tickerq.E002" in django_admin("settings", "check").stderr


def test_tickerq_check_reports_an_unreachable_store_without_its_password() -> None:
    result = django_admin("store", "tickerq", "check")
    assert result.returncode == 1
    assert "ok: 1 function(s): tidy" in result.stdout
    assert "error: store postgresql://postgres:***@127.0.0.1:1/nowhere is unreachable" in (
        result.stderr
    )
    assert "secret" not in result.stdout + result.stderr


def test_a_good_project_passes_and_db_has_nothing_to_do_on_memory() -> None:
    result = django_admin("", "tickerq", "check")
    assert result.returncode == 0, result.stderr
    assert "ok: 1 function(s): tidy" in result.stdout
    assert "ok: store memory://" in result.stdout
    db = django_admin("", "tickerq", "db")
    assert db.returncode == 0, db.stderr
    assert "nothing to do" in db.stdout
    bad = django_admin("", "tickerq", "db", "sideways")
    assert bad.returncode == 1
    assert "db takes upgrade or current, got 'sideways'" in bad.stderr


def test_without_django_the_import_names_the_extra_to_install() -> None:
    code = (
        "import sys; sys.modules['django'] = None  # as if Django were not installed\n"
        "try:\n"
        "    import tickerq.contrib.django\n"
        "except ImportError as exc:\n"
        "    print(type(exc).__name__, exc)\n"
    )
    src = str(Path(__file__).resolve().parents[2] / "src")
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": src},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("MissingDependencyError tickerq.contrib.django needs django")
    assert "pip install 'tickerq[django]'" in result.stdout
