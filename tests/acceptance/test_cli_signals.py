"""SIGTERM stops `tickerq demo` and `tickerq run` like Ctrl+C: gracefully, exit status 0.

The dashboard server is shut down, running jobs get the grace period and end
recorded; a second signal stops at once (128 + the signal number). Each test
runs the command as a subprocess and sends it real signals.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

SLOW_APP = """
import os, time
from pathlib import Path
from tickerq import EngineOptions, TickerContext, TickerQ

app = TickerQ(options=EngineOptions(grace_period={grace}))
MARKERS = Path(os.environ["TICKERQ_TEST_MARKERS"])


@app.function(cron="* * * * * *")
def slow(ctx: TickerContext) -> None:
    if list(MARKERS.glob("started-*")):
        return  # one slow run is enough
    (MARKERS / f"started-{{ctx.id}}").write_text("")
    time.sleep({sleep})
    (MARKERS / f"finished-{{ctx.id}}").write_text("")
"""


class Command:
    """``tickerq ARGS`` running in the background; its stdout read line by line."""

    def __init__(self, *args: str, cwd: Path, **env: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tickerq.cli", *args],
            cwd=cwd,
            env={**os.environ, **env, "PYTHONUNBUFFERED": "1", "COLUMNS": "120"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.out: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def wait_for_line(self, pattern: str, timeout: float = 20) -> re.Match[str]:
        """The first stdout line matching ``pattern`` (failing after ``timeout``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.1)
            except queue.Empty:
                assert self.proc.poll() is None, self.finish(1)
                continue
            self.out.append(line)
            if found := re.search(pattern, line):
                return found
        raise AssertionError(f"no line matching {pattern!r}: {self.out}")

    def finish(self, timeout: float) -> tuple[int, str, str]:
        """Wait for the exit: (status, all stdout, stderr)."""
        try:
            self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(5)
        while not self.lines.empty():
            self.out.append(self.lines.get())
        assert self.proc.stdout is not None and self.proc.stderr is not None
        err = self.proc.stderr.read()
        self.proc.stdout.close()
        self.proc.stderr.close()
        return self.proc.returncode, "".join(self.out), err


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


def refuses_connections(url: str) -> bool:
    host, port = re.findall(r"//([^:/]+):(\d+)", url)[0]
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
    except OSError:
        return True
    return False


def wait_for(path_glob: Path, pattern: str, timeout: float = 15) -> Path:
    deadline = time.monotonic() + timeout
    while not (found := list(path_glob.glob(pattern))):
        assert time.monotonic() < deadline, f"no {pattern} in {path_glob}"
        time.sleep(0.05)
    return found[0]


def test_demo_stops_gracefully_on_sigterm(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path}/demo.db"
    demo = Command("demo", "--store", store, "--port", "0", cwd=tmp_path)
    try:
        url = demo.wait_for_line(r"dashboard on (http://\S+)")[1]
        deadline = time.monotonic() + 20
        while get_json(f"{url}api/time-tickers?function=charge_card&status=DONE")["total"] < 1:
            assert time.monotonic() < deadline, "no order was charged"
            time.sleep(0.1)
    finally:
        demo.proc.send_signal(signal.SIGTERM)
    status, out, err = demo.finish(30)
    assert status == 0, err
    assert "SIGTERM received, stopping gracefully" in err
    assert "Traceback" not in err
    assert "tickerq demo stopped" in out
    assert refuses_connections(url)
    # The engine stopped properly: nothing left claimed or running, its node gone.
    left = asyncio.run(_store_state(store))
    assert left == {"held": [], "nodes": []}


async def _store_state(store: str) -> dict[str, list[str]]:
    from tickerq import Status, TickerQ

    app = TickerQ(store)
    await app.open()
    try:
        held = await app.time_tickers.query(status=[Status.QUEUED, Status.IN_PROGRESS])
        nodes = await app.store.nodes()
    finally:
        await app.stop()
    return {"held": [t.function for t in held], "nodes": [n.id for n in nodes]}


def test_run_with_dashboard_stops_gracefully_on_sigterm(tmp_path: Path) -> None:
    """The dashboard goes first; the job running meanwhile finishes within the grace."""
    (tmp_path / "slow_app.py").write_text(SLOW_APP.format(grace=20, sleep=3))
    markers = tmp_path / "markers"
    markers.mkdir()
    run = Command(
        "run",
        "slow_app:app",
        "--dashboard",
        "--port",
        "0",
        cwd=tmp_path,
        TICKERQ_TEST_MARKERS=str(markers),
    )
    try:
        url = run.wait_for_line(r"dashboard on (http://\S+)")[1]
        assert get_json(f"{url}api/engine")  # served
        started = wait_for(markers, "started-*")
    finally:
        run.proc.send_signal(signal.SIGTERM)
    job_id = started.name.removeprefix("started-")
    deadline = time.monotonic() + 2.5
    while not refuses_connections(url):
        assert time.monotonic() < deadline, "the dashboard still answers during the grace period"
        time.sleep(0.05)
    assert not (markers / f"finished-{job_id}").exists(), "the job ended before the check"
    status, _, err = run.finish(30)
    assert status == 0, err
    assert "SIGTERM received, stopping gracefully" in err
    assert (markers / f"finished-{job_id}").exists(), "the running job was not given its grace"


def test_a_second_sigterm_stops_at_once(tmp_path: Path) -> None:
    (tmp_path / "slow_app.py").write_text(SLOW_APP.format(grace=60, sleep=60))
    markers = tmp_path / "markers"
    markers.mkdir()
    run = Command("run", "slow_app:app", cwd=tmp_path, TICKERQ_TEST_MARKERS=str(markers))
    try:
        wait_for(markers, "started-*")
        run.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)  # the first one is being handled: a graceful stop, waiting for the job
        assert run.proc.poll() is None, run.finish(1)
    finally:
        run.proc.send_signal(signal.SIGTERM)
    began = time.monotonic()
    status, _, err = run.finish(10)
    assert status == 128 + signal.SIGTERM, err
    assert time.monotonic() - began < 5
    assert "SIGTERM again, stopping at once" in err
