"""Running the examples under examples/ for real: their modules imported fresh with a
store in a temporary directory, and their worker as ``tickerq run jobs:tq``."""

from __future__ import annotations

import importlib
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

from tickerq import Attempt, TickerQ

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
SRC = ROOT / "src"


@contextmanager
def example_modules(example: str, *names: str) -> Iterator[list[ModuleType]]:
    """Import modules of ``examples/<example>`` fresh (they read the environment when
    imported), and forget them afterwards (every example has a ``jobs`` module)."""
    folder = str(EXAMPLES / example)
    saved = {name: sys.modules.pop(name) for name in names if name in sys.modules}
    sys.path.insert(0, folder)
    try:
        yield [importlib.import_module(name) for name in names]
    finally:
        sys.path.remove(folder)
        for name in names:
            sys.modules.pop(name, None)
        sys.modules.update(saved)


class Process:
    """A command of an example running in the background; its output collected."""

    def __init__(self, args: list[str], example: str, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            args,
            cwd=EXAMPLES / example,
            env={
                **os.environ,
                **env,
                "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
                "PYTHONUNBUFFERED": "1",
            },
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def wait_for(self, pattern: str, timeout: float = 15) -> re.Match[str]:
        """The first output line matching ``pattern``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.05)
            except queue.Empty:
                assert self.proc.poll() is None, f"exited: {self.text()}"
                continue
            self.output.append(line)
            if found := re.search(pattern, line):
                return found
        raise AssertionError(f"no line matching {pattern!r} in: {self.text()}")

    def text(self) -> str:
        while not self.lines.empty():
            self.output.append(self.lines.get())
        return "".join(self.output)

    def stop(self, timeout: float = 15) -> int:
        """SIGTERM, then the exit status (killed after ``timeout``)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"did not stop on SIGTERM: {self.text()}") from None
        finally:
            self._reader.join(5)
            if self.proc.stdout is not None:
                self.proc.stdout.close()


def worker(example: str, env: dict[str, str]) -> Process:
    """The example's worker, as its README runs it: ``tickerq run jobs:tq``."""
    process = Process([sys.executable, "-m", "tickerq.cli", "run", "jobs:tq"], example, env)
    process.wait_for(r"tickerq node \S+ started")
    return process


def node_of(pid: int) -> str:
    """The default node id of a process."""
    return f"{socket.gethostname()}-{pid}"


def attempts(store: str, job_id: str) -> list[Attempt]:
    """The attempts of a job, read from the store by a process of the test's own."""
    reader = TickerQ(store, node_id="test-reader")
    reader.sync.call(reader.open())
    try:
        return reader.sync.time_tickers.attempts(job_id)
    finally:
        reader.sync.stop()


def poll(
    get: Callable[[], dict[str, object]], until: set[str], timeout: float = 15
) -> dict[str, object]:
    """Call ``get`` until its ``status`` is one of ``until``; the last answer."""
    deadline = time.monotonic() + timeout
    while True:
        answer = get()
        if answer["status"] in until:
            return answer
        assert time.monotonic() < deadline, f"still {answer} after {timeout}s"
        time.sleep(0.05)
