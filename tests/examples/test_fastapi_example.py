"""examples/fastapi_app runs as its README says: the web app (uvicorn, producer only)
and a worker (``tickerq run jobs:tq``) on one SQLite store; and with the jobs run in
the web process (RUN_JOBS_IN_WEB=1)."""

from __future__ import annotations

import signal
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from asgi_server import served
from example_runner import Process, attempts, example_modules, node_of, poll, worker

FINISHED = {"DONE", "DUE_DONE"}  # DUE_DONE: it started late (the worker came later)


def environment(tmp_path: Path) -> dict[str, str]:
    return {
        "TICKERQ_STORE": f"sqlite:///{tmp_path}/jobs.db",
        "OUTBOX_DIR": str(tmp_path / "outbox"),
    }


def check_email(result: Any, job_id: str, tmp_path: Path) -> None:
    sent = tmp_path / "outbox" / f"{job_id}.eml"
    assert result["file"] == str(sent)
    assert "Subject: Welcome, Ada!" in sent.read_text()


def test_web_process_enqueues_and_the_worker_runs_the_job(tmp_path: Path) -> None:
    env = environment(tmp_path)
    web = Process(
        [sys.executable, "-m", "uvicorn", "main:api", "--host", "127.0.0.1", "--port", "0"],
        "fastapi_app",
        env,
    )
    worker_process = None
    try:
        base = web.wait_for(r"Uvicorn running on (http://\S+)")[1]
        with httpx.Client(base_url=base, timeout=10) as http:
            refused = http.post("/signup", json={"to": "not an address", "name": "Ada"})
            assert refused.status_code == 422
            accepted = http.post("/signup", json={"to": "ada@example.com", "name": "Ada"})
            assert accepted.status_code == 202, accepted.text
            job_id, status_url = accepted.json()["job_id"], accepted.json()["status_url"]
            assert status_url == f"/jobs/{job_id}"
            assert http.get(status_url).json()["status"] == "IDLE"
            assert http.get(f"/jobs/{uuid.uuid4()}").status_code == 404

            worker_process = worker("fastapi_app", env)
            done = poll(lambda: http.get(status_url).json(), FINISHED)
            assert done["function"] == "send_welcome_email" and done["error"] is None
            check_email(done["result"], job_id, tmp_path)

            # the dashboard is mounted (and answers this loopback client)
            listed = http.get("/admin/jobs/api/time-tickers").json()
            assert [item["id"] for item in listed["items"]] == [job_id]
        # uvicorn ends by raising the signal it handled again: -SIGTERM after a clean stop
        assert web.stop() in (0, -signal.SIGTERM), web.text()
        assert "Application shutdown complete" in web.text()
        assert worker_process.stop() == 0, worker_process.text()
    finally:
        web.stop()
        if worker_process is not None:
            worker_process.stop()
    # the worker ran it, not the web process
    assert [a.node for a in attempts(env["TICKERQ_STORE"], job_id)] == [node_of(worker_process.pid)]


async def test_jobs_run_in_the_web_process_when_asked(tmp_path: Path, monkeypatch: Any) -> None:
    for name, value in {**environment(tmp_path), "RUN_JOBS_IN_WEB": "1"}.items():
        monkeypatch.setenv(name, value)
    with example_modules("fastapi_app", "jobs", "main") as (jobs, main):
        async with served(main.api) as http:
            accepted = await http.post("/signup", json={"to": "ada@example.com", "name": "Ada"})
            job_id = accepted.json()["job_id"]
            await jobs.tq.time_tickers.wait(job_id, timeout=10)
            done = (await http.get(f"/jobs/{job_id}")).json()
            runs = await jobs.tq.time_tickers.attempts(job_id)
        assert done["status"] == "DONE"
        check_email(done["result"], job_id, tmp_path)
        assert [a.node for a in runs] == [jobs.tq.node_id]
        assert not jobs.tq.engine.running


@pytest.mark.timeout(90)
def test_the_web_app_stops_on_sigterm_while_a_dashboard_page_is_open(tmp_path: Path) -> None:
    """An open dashboard page holds a live-update stream, a request that never ended:
    uvicorn's graceful shutdown waited for it for ever. A stream now ends after
    ``stream_max_age`` (15 s by default) and the page opens the next."""
    import threading
    import time

    web = Process(
        [sys.executable, "-m", "uvicorn", "main:api", "--host", "127.0.0.1", "--port", "0"],
        "fastapi_app",
        environment(tmp_path),
    )
    try:
        base = web.wait_for(r"Uvicorn running on (http://\S+)")[1]
        greeted = threading.Event()

        def watch_the_page() -> None:
            try:
                with (
                    httpx.Client(base_url=base, timeout=60) as http,
                    http.stream("GET", "/admin/jobs/events") as events,
                ):
                    for line in events.iter_lines():
                        if line == "event: hello":
                            greeted.set()
            except httpx.HTTPError:
                pass  # the server went away

        page = threading.Thread(target=watch_the_page, daemon=True)
        page.start()
        assert greeted.wait(10), "the event stream did not open"
        began = time.monotonic()
        assert web.stop(timeout=25) in (0, -signal.SIGTERM), web.text()
        assert time.monotonic() - began < 20, web.text()
        assert "Application shutdown complete" in web.text()
    finally:
        web.stop()
