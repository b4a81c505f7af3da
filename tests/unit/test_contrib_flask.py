"""tickerq.contrib.flask: the extension opens the app for the views on first use,
runs the engine only when asked, closes at process exit, and refuses a forked copy."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Blueprint, Flask

from tickerq import InvalidArgumentError, Status, TickerContext, TickerQ, TickerQError
from tickerq.contrib.flask import TickerQFlask, get_tickerq

SRC = Path(__file__).resolve().parents[2] / "src"


def make_app() -> TickerQ:
    tq = TickerQ(node_id="flask-1")

    @tq.function()
    def greet(ctx: TickerContext[dict[str, str]]) -> str:
        return f"hello {ctx.request['name']}"

    return tq


def make_flask(tq: TickerQ, ext: TickerQFlask, **config: Any) -> Flask:
    app = Flask("shop")
    app.config.update(config)
    ext.init_app(app)

    @app.post("/greet/<name>")
    def enqueue(name: str) -> dict[str, str]:
        ticker = tq.get_function("greet").sync.enqueue({"name": name})
        return {"id": str(ticker.id)}

    @app.get("/greet/<job_id>")
    def status(job_id: str) -> dict[str, Any]:
        ticker = ext.sync.time_tickers.get(job_id)
        return {"status": ticker.status.value, "result": ticker.result}

    return app


@pytest.fixture
def closing() -> Iterator[list[TickerQFlask]]:
    """Extensions to close after the test (the process does not exit between tests)."""
    extensions: list[TickerQFlask] = []
    yield extensions
    for ext in extensions:
        ext.close()


def test_producer_only_opens_on_the_first_request(closing: list[TickerQFlask]) -> None:
    tq = make_app()
    ext = TickerQFlask(tickerq=tq)
    closing.append(ext)
    client = make_flask(tq, ext).test_client()
    assert tq.loop is None and not ext.opened  # nothing at import or init
    job_id = client.post("/greet/ada").json["id"]  # type: ignore[index]
    assert ext.opened and tq.loop is not None
    assert ext.runs_engine is False and not tq.engine.running
    assert client.get(f"/greet/{job_id}").json == {"status": "IDLE", "result": None}
    ext.close()
    assert tq.loop is None and not ext.opened


def test_engine_from_config_runs_jobs_in_the_background(closing: list[TickerQFlask]) -> None:
    tq = make_app()
    ext = TickerQFlask(tickerq=tq)
    closing.append(ext)
    client = make_flask(tq, ext, TICKERQ_ENGINE=True).test_client()
    job_id = client.post("/greet/ada").json["id"]  # type: ignore[index]
    assert tq.engine.running
    done = tq.sync.time_tickers.wait(job_id, timeout=10)
    assert done.status is Status.DONE
    assert client.get(f"/greet/{job_id}").json == {"status": "DONE", "result": "hello ada"}
    ext.close()
    assert not tq.engine.running and tq.loop is None


def test_engine_argument_wins_over_config(closing: list[TickerQFlask]) -> None:
    tq = make_app()
    ext = TickerQFlask(make_flask_bare(TICKERQ_ENGINE=True), tickerq=tq, engine=False)
    closing.append(ext)
    ext.open()
    assert ext.runs_engine is False and not tq.engine.running


def test_a_failed_open_is_tried_again_on_the_next_request(tmp_path: Path) -> None:
    folder = tmp_path / "not-yet"
    tq = TickerQ(f"sqlite:///{folder}/jobs.db", node_id="flask-1")
    app = make_flask_bare(TESTING=True)  # errors reach the test instead of a 500 page
    ext = TickerQFlask(app, tickerq=tq, engine=True)

    @app.get("/count")
    def count() -> str:
        return str(ext.sync.time_tickers.count())

    client = app.test_client()
    with pytest.raises(TickerQError, match="not-yet"):
        client.get("/count")  # the folder of the database does not exist
    assert not ext.opened and tq.loop is None
    folder.mkdir()
    try:
        assert client.get("/count").text == "0"
        assert tq.engine.running
    finally:
        ext.close()


def make_flask_bare(**config: Any) -> Flask:
    app = Flask("bare")
    app.config.update(config)
    return app


def test_get_tickerq_in_a_blueprint(closing: list[TickerQFlask]) -> None:
    tq = make_app()
    ext = TickerQFlask(tickerq=tq)
    closing.append(ext)
    bp = Blueprint("jobs", __name__)

    @bp.get("/count")
    def count() -> dict[str, int]:
        return {"waiting": get_tickerq().sync.time_tickers.count()}

    app = make_flask(tq, ext)
    app.register_blueprint(bp)
    client = app.test_client()
    client.post("/greet/ada")
    assert client.get("/count").json == {"waiting": 1}
    with app.app_context():  # e.g. a `flask` CLI command: opens on use
        assert get_tickerq() is tq


def test_get_tickerq_says_what_is_missing() -> None:
    with pytest.raises(TickerQError, match="needs a Flask application context"):
        get_tickerq()
    with (
        make_flask_bare().app_context(),
        pytest.raises(TickerQError, match=r"'bare' has no tickerq extension"),
    ):
        get_tickerq()


def test_an_app_opened_elsewhere_is_used_and_left_open() -> None:
    tq = make_app()
    tq.sync.start()
    try:
        ext = TickerQFlask(make_flask_bare(), tickerq=tq)
        ext.open()
        ext.close()
        assert tq.engine.running  # closing it is left to whoever opened it
    finally:
        tq.sync.stop()


def test_bad_arguments() -> None:
    with pytest.raises(InvalidArgumentError, match="needs a TickerQ app, got str"):
        TickerQFlask(tickerq="memory://")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="engine must be True or False, got 'yes'"):
        TickerQFlask(tickerq=make_app(), engine="yes")  # type: ignore[arg-type]
    ext = TickerQFlask(tickerq=make_app())
    with pytest.raises(InvalidArgumentError, match=r"TICKERQ_ENGINE'\] must be True or False"):
        ext.init_app(make_flask_bare(TICKERQ_ENGINE="1"))


def run_script(code: str, tmp_path: Path, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(code))
    return subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
        check=False,
    )


def test_process_exit_stops_the_engine_gracefully(tmp_path: Path) -> None:
    """A job running when the process ends gets its grace period, and the node leaves."""
    store = f"sqlite:///{tmp_path}/jobs.db"
    done = run_script(
        f"""
        import time
        from flask import Flask
        from tickerq import TickerContext, TickerQ, Status
        from tickerq.contrib.flask import TickerQFlask

        tq = TickerQ({store!r}, node_id="web-1")

        @tq.function()
        def slow(ctx: TickerContext[None]) -> str:
            time.sleep(0.5)
            return "finished"

        app = Flask("exit")
        TickerQFlask(app, tickerq=tq, engine=True)

        @app.post("/slow")
        def enqueue():
            return {{"id": str(slow.sync.enqueue().id)}}

        job_id = app.test_client().post("/slow").json["id"]
        while tq.sync.time_tickers.get(job_id).status is not Status.IN_PROGRESS:
            time.sleep(0.01)
        print(job_id)
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.strip()
    reader = TickerQ(store)
    reader.sync.call(reader.open())
    try:
        ticker = reader.sync.time_tickers.get(job_id)
        nodes = reader.sync.run(reader.store.nodes())
    finally:
        reader.sync.stop()
    assert (ticker.status, ticker.result) == (Status.DONE, "finished")
    assert "web-1" not in {node.id for node in nodes}  # it left the cluster


def test_a_forked_process_is_told_to_open_its_own(tmp_path: Path) -> None:
    done = run_script(
        """
        import os
        from flask import Flask
        from tickerq import TickerQ, TickerQError
        from tickerq.contrib.flask import TickerQFlask

        ext = TickerQFlask(Flask("fork"), tickerq=TickerQ())
        ext.open()
        pid = os.fork()
        if pid == 0:
            try:
                ext.open()
            except TickerQError as exc:
                print(exc, flush=True)
                os._exit(0)
            os._exit(1)
        _, status = os.waitpid(pid, 0)
        print("child exit", os.waitstatus_to_exitcode(status))
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "before this process" in done.stdout and "was forked from it" in done.stdout
    assert "child exit 0" in done.stdout
