"""What ``pip install tickerq`` brings, and what each extra adds, in fresh virtual
environments: the wheel alone (core: cronsim, pydantic, tzdata, click) runs a
memory-store app and names the ``pip install`` a missing extra needs;
``tickerq[postgres,dashboard]`` runs an engine on PostgreSQL with the dashboard.

Builds the wheel from this checkout and installs from the package index pip is
configured with (slow: about half a minute)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from collections.abc import Iterator
from pathlib import Path

import pytest

from fault.harness import create_database, drop_database, postgres_reachable_or_skip, server_dsn

ROOT = Path(__file__).resolve().parents[2]
CORE = {"cronsim", "pydantic", "tzdata", "click"}

MEMORY_APP = """
import asyncio, json, sys
from tickerq import TickerContext, TickerQ
from tickerq.testing import run_until_idle

app = TickerQ()
ran = []

@app.function()
async def greet(ctx: TickerContext[str]) -> None:
    ran.append(ctx.request)

async def main() -> None:
    async with app:
        await greet.enqueue("world")
        await run_until_idle(app)

asyncio.run(main())
errors = {}
for what, build in {
    "sqlite": lambda: TickerQ("sqlite:///never.db"),
    "postgres": lambda: TickerQ("postgresql://nobody@127.0.0.1:1/none"),
    "dashboard": lambda: app.dashboard(),
}.items():
    try:
        build()
    except Exception as exc:
        errors[what] = f"{type(exc).__name__}: {exc}"
loaded = sorted(m for m in ("sqlalchemy", "starlette", "rich", "alembic") if m in sys.modules)
print(json.dumps({"ran": ran, "errors": errors, "loaded": loaded}))
"""

PG_APP = """
import asyncio, json, sys, urllib.request
from tickerq import TickerContext, TickerQ
from tickerq.dashboard.server import start_server
from tickerq.testing import run_until_idle

app = TickerQ(sys.argv[1])
ran = []

@app.function()
async def greet(ctx: TickerContext[str]) -> None:
    ran.append(ctx.request)

async def main() -> dict:
    async with app:
        await greet.enqueue("postgres")
        for _ in range(200):
            if ran:
                break
            await asyncio.sleep(0.05)
        server = await start_server(app.dashboard(), "127.0.0.1", 0)
        try:
            page = await asyncio.to_thread(
                lambda: urllib.request.urlopen(server.url + "api/time-tickers").read()
            )
        finally:
            await server.stop()
    return {"ran": ran, "dashboard_total": json.loads(page)["total"]}

print(json.dumps(asyncio.run(main())))
"""


def _pip(python: Path, *args: str) -> None:
    done = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]


def _distributions(python: Path) -> set[str]:
    listed = subprocess.run(
        [str(python), "-m", "pip", "list", "--format", "json", "--disable-pip-version-check"],
        check=True,
        capture_output=True,
        text=True,
    )
    names = {d["name"].lower().replace("_", "-") for d in json.loads(listed.stdout)}
    return names - {"pip", "setuptools", "wheel"}


def _run(python: Path, code: str, *args: str, cwd: Path) -> dict[str, object]:
    done = subprocess.run(
        [str(python), "-c", code, *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.fixture
def pg_database_url() -> Iterator[str]:
    """A fresh database on the shared PostgreSQL server, dropped afterwards."""
    postgres_reachable_or_skip()
    admin = server_dsn("postgres")
    name = create_database(admin)
    try:
        yield server_dsn(name)
    finally:
        drop_database(admin, name)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(ROOT)],
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    [built] = out.glob("tickerq-*.whl")
    return built


@pytest.mark.timeout(600)
def test_the_wheel_alone_runs_a_memory_app_and_names_missing_extras(
    wheel: Path, tmp_path: Path
) -> None:
    venv.create(tmp_path / "env", with_pip=True)
    python = tmp_path / "env" / "bin" / "python"
    _pip(python, str(wheel))
    installed = _distributions(python)
    direct = installed & CORE
    assert direct == CORE, installed
    # the core's own dependencies and pydantic's (pydantic-core, annotated-types,
    # typing-extensions, typing-inspection): nothing for stores, web or terminal
    assert installed - CORE - {"tickerq"} <= {
        "pydantic-core",
        "annotated-types",
        "typing-extensions",
        "typing-inspection",
    }, installed
    got = _run(python, MEMORY_APP, cwd=tmp_path)
    assert got["ran"] == ["world"]
    assert got["loaded"] == []
    errors = got["errors"]
    assert isinstance(errors, dict)
    for extra in ("sqlite", "postgres", "dashboard"):
        assert errors[extra].startswith("MissingDependencyError"), errors[extra]
        assert f"pip install 'tickerq[{extra}]'" in errors[extra]
    assert not (tmp_path / "never.db").exists()  # nothing stored or created
    cli = subprocess.run(
        [str(tmp_path / "env" / "bin" / "tickerq"), "demo"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode != 0 and "pip install 'tickerq[demo]'" in cli.stderr, cli.stderr


@pytest.mark.timeout(600)
def test_postgres_and_dashboard_extras_run_an_engine_and_the_dashboard(
    wheel: Path, tmp_path: Path, pg_database_url: str
) -> None:
    venv.create(tmp_path / "env", with_pip=True)
    python = tmp_path / "env" / "bin" / "python"
    _pip(python, f"{wheel}[postgres,dashboard]")
    installed = _distributions(python)
    assert {"sqlalchemy", "asyncpg", "alembic", "starlette", "uvicorn"} <= installed
    assert "rich" not in installed and "aiosqlite" not in installed
    got = _run(python, PG_APP, pg_database_url, cwd=tmp_path)
    assert got == {"ran": ["postgres"], "dashboard_total": 1}
