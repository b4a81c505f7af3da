"""Every CLI error is one line, ``Error: <what>`` naming the value, with an exit status.

2 for usage and bad input, 1 for runtime failures; never a traceback unless
``-v`` asks for it. The command runs as a subprocess, as a user would run it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

POSTGRESQL_URL = os.environ.get(
    "TICKERQ_TEST_POSTGRESQL", "postgresql://postgres@127.0.0.1:5432/test"
)
_PG_SERVER = POSTGRESQL_URL.rsplit("/", 1)[0]


def tickerq(*args: str, cwd: Path, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "TICKERQ_STORE"}
    return subprocess.run(
        [sys.executable, "-m", "tickerq.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**env, "COLUMNS": "120"},
        check=False,
    )


@dataclass
class Case:
    args: tuple[str, ...]
    status: int
    names: tuple[str, ...]
    """Substrings the error line must contain (the offending value)."""
    files: dict[str, str | bytes] = field(default_factory=dict)
    """Files to create in the working folder first."""


def _corrupt() -> bytes:
    return b"this is not a SQLite database " * 200


APP_ON = "from tickerq import TickerQ\napp = TickerQ({url!r})\n"

CASES = {
    # -- modules for run / check ------------------------------------------------------
    "run: syntax error": Case(
        ("run", "broken:app"),
        2,
        ("'broken'", "SyntaxError", "line 2"),
        {"broken.py": "x = 1\ndef f(:\n"},
    ),
    "check: syntax error": Case(
        ("check", "broken"), 2, ("'broken'", "SyntaxError", "line 1"), {"broken.py": "def f(:\n"}
    ),
    "run: import error inside": Case(
        ("run", "needs:app"),
        2,
        ("'needs'", "no_such_package_zz"),
        {"needs.py": "import no_such_package_zz\n"},
    ),
    "check: error while importing": Case(
        ("check", "boom:app"),
        2,
        ("'boom'", "RuntimeError", "kaboom"),
        {"boom.py": "raise RuntimeError('kaboom')\n"},
    ),
    "run: no such module": Case(("run", "nowhere_zz:app"), 2, ("nowhere_zz",)),
    "check: missing attribute": Case(
        ("check", "plain:application"), 2, ("'plain'", "'application'"), {"plain.py": "x = 1\n"}
    ),
    "run: attribute is not an app": Case(
        ("run", "plain:x"), 2, ("plain:x", "int"), {"plain.py": "x = 1\n"}
    ),
    "run: bad target": Case(("run", "jobs:not-a-name"), 2, ("'jobs:not-a-name'",)),
    "run: bad store URL in the app": Case(
        ("run", "bad_url:app"), 2, ("bogus",), {"bad_url.py": APP_ON.format(url="bogus://x")}
    ),
    # -- stores ------------------------------------------------------------------------
    "dashboard: missing SQLite file": Case(
        ("dashboard", "--store", "sqlite:///missing.db", "--port", "0"),
        1,
        ("'missing.db'", "does not exist"),
    ),
    "dashboard: missing folder": Case(
        ("dashboard", "--store", "sqlite:///nope/t.db", "--port", "0"), 1, ("nope",)
    ),
    "dashboard: corrupted SQLite file": Case(
        ("dashboard", "--store", "sqlite:///corrupt.db", "--port", "0"),
        1,
        ("sqlite:///corrupt.db", "not a database"),
        {"corrupt.db": _corrupt()},
    ),
    "run: corrupted SQLite file": Case(
        ("run", "on_corrupt:app"),
        1,
        ("corrupt.db", "not a database"),
        {"corrupt.db": _corrupt(), "on_corrupt.py": APP_ON.format(url="sqlite:///corrupt.db")},
    ),
    "run: missing folder": Case(
        ("run", "on_missing:app"),
        1,
        ("nope",),
        {"on_missing.py": APP_ON.format(url="sqlite:///nope/t.db")},
    ),
    "dashboard: unreachable server": Case(
        ("dashboard", "--store", "postgresql://postgres@127.0.0.1:1/x", "--port", "0"),
        1,
        ("127.0.0.1:1",),
    ),
    "dashboard: no such database": Case(
        ("dashboard", "--store", f"{_PG_SERVER}/tickerq_no_such_db_zz", "--port", "0"),
        1,
        ("tickerq_no_such_db_zz",),
    ),
    "dashboard: no store": Case(("dashboard",), 2, ("--store",)),
    "dashboard: unsupported store": Case(("dashboard", "--store", "mysql://h/db"), 2, ("mysql",)),
    "demo: unsupported store": Case(
        ("demo", "--store", "bogus://x", "--duration", "1"), 2, ("bogus",)
    ),
    "db upgrade: corrupted SQLite file": Case(
        ("db", "upgrade", "--store", "sqlite:///corrupt.db"),
        1,
        ("corrupt.db", "not a database"),
        {"corrupt.db": _corrupt()},
    ),
    # -- cron next -----------------------------------------------------------------------
    "cron: never fires": Case(("cron", "next", "0 0 30 2 *"), 2, ("'0 0 30 2 *'", "30")),
    "cron: next fire past 9999": Case(
        ("cron", "next", "0 0 1 1 *", "--after", "9999-06-01T00:00"),
        2,
        ("'0 0 1 1 *'", "9999-06-01"),
    ),
    "cron: runs out of dates": Case(
        ("cron", "next", "0 0 29 2 *", "--after", "9990-01-01T00:00", "-n", "5"),
        2,
        ("'0 0 29 2 *'", "9996-02-29"),
    ),
    "cron: every minute at the end of time": Case(
        (
            "cron",
            "next",
            "* * * * *",
            "--after",
            "9999-12-31T23:59:30+00:00",
            "--tz",
            "Pacific/Kiritimati",
        ),
        2,
        ("'* * * * *'", "9999-12-31T23:59:30"),
    ),
    "cron: --after overflows in the zone": Case(
        ("cron", "next", "* * * * *", "--after", "9999-12-31T23:59", "--tz", "America/New_York"),
        2,
        ("'9999-12-31T23:59'",),
    ),
    "cron: --after before year 1 in UTC": Case(
        ("cron", "next", "* * * * *", "--after", "0001-01-01T00:00", "--tz", "Asia/Tokyo"),
        2,
        ("'0001-01-01T00:00'",),
    ),
    "cron: bad --after": Case(("cron", "next", "* * * * *", "--after", "soon"), 2, ("'soon'",)),
    "cron: bad timezone": Case(
        ("cron", "next", "* * * * *", "--tz", "Mars/Olympus"), 2, ("Mars/Olympus",)
    ),
    "cron: bad count": Case(("cron", "next", "* * * * *", "-n", "0"), 2, ("-n", "0")),
    # -- usage -------------------------------------------------------------------------
    "unknown command": Case(("launch",), 2, ("'launch'",)),
    "unknown option": Case(("run", "--fast", "jobs:app"), 2, ("--fast",)),
    "missing argument": Case(("cron", "next"), 2, ("EXPRESSION",)),
    "bad port": Case(("dashboard", "--store", "memory://", "--port", "70000"), 2, ("70000",)),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_errors_are_one_line_with_a_status(case: Case, tmp_path: Path) -> None:
    for name, content in case.files.items():
        path = tmp_path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    before = sorted(p.name for p in tmp_path.iterdir())
    result = tickerq(*case.args, cwd=tmp_path)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: "), result.stderr
    assert result.returncode == case.status, result.stderr
    for name in case.names:
        assert name in lines[0], f"{name!r} not named in: {lines[0]}"
    # Nothing was created by a refused command (e.g. no empty SQLite file).
    after = sorted(p.name for p in tmp_path.iterdir() if p.name != "__pycache__")
    assert after == before


def test_port_taken_is_a_runtime_failure(tmp_path: Path) -> None:
    (tmp_path / "t.db").write_bytes(b"")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        result = tickerq("dashboard", "--store", "memory://", "--port", port, cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("Error: ") and len(result.stderr.splitlines()) == 1
    assert f"127.0.0.1:{port}" in result.stderr


def test_verbose_adds_the_traceback(tmp_path: Path) -> None:
    (tmp_path / "broken.py").write_text("def f(:\n")
    quiet = tickerq("run", "broken:app", cwd=tmp_path)
    loud = tickerq("-v", "run", "broken:app", cwd=tmp_path)
    assert "Traceback" not in quiet.stderr
    assert "Traceback" in loud.stderr and "SyntaxError" in loud.stderr
    assert loud.returncode == quiet.returncode == 2
    assert loud.stderr.splitlines()[-1] == quiet.stderr.strip()


def test_help_documents_the_exit_statuses(tmp_path: Path) -> None:
    result = tickerq("--help", cwd=tmp_path)
    assert result.returncode == 0
    text = result.stdout
    assert "Exit status" in text
    assert "0  success" in text and "SIGTERM" in text
    assert "1  runtime failure" in text
    assert "2  usage or bad input" in text
    assert "-v adds the traceback" in text
