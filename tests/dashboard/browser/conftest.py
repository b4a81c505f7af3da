"""Browser tests: a real dashboard served over HTTP, driven by Debian's chromium.

The shop app (``shop.py``) runs with its engine in a background thread on a
SQLite store, served by uvicorn on 127.0.0.1 and a free port. Playwright's
sync API drives chromium at /usr/bin/chromium (never a downloaded browser).
Without chromium or Playwright the tests skip, except under ``CI=true``.

``TICKERQ_SCREENSHOTS=1`` writes the page screenshots to docs/img/ (else to a
temporary folder, so a test run does not change the tree).
"""

from __future__ import annotations

import asyncio
import os
import re
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from dashboard.browser.shop import Seeded, build_shop_app, seed_history, seed_live
from tickerq import TickerQ
from tickerq.dashboard.server import DashboardServer, start_server

CHROMIUM = os.environ.get("TICKERQ_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = os.environ.get("TICKERQ_SCREENSHOTS") == "1"
DOCS_IMG = Path(__file__).resolve().parents[3] / "docs" / "img"
WIDTH = 1280

T = TypeVar("T")


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"browser tests cannot run in CI: {reason}", pytrace=False)
    pytest.skip(reason)


class Shop:
    """The shop app and its dashboard servers, on an event loop in a background thread."""

    def __init__(self, folder: Path) -> None:
        self.store_url = f"sqlite:///{folder}/shop.db"
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="shop", daemon=True)
        self.thread.start()
        self.servers: list[DashboardServer] = []
        self.app: TickerQ
        self.worker: TickerQ
        self.seeded: Seeded
        self.url = ""

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 20) -> T:
        """Run ``coro`` on the shop's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _start(self) -> None:
        await seed_history(self.store_url, hours=24 if SCREENSHOTS else 8)
        self.app = build_shop_app(self.store_url)
        if SCREENSHOTS:  # the footer names the store: no machine path in the docs
            self.app.store_url = "sqlite:///shop.db"
        await self.app.start()
        self.seeded = await seed_live(self.app)
        self.worker = build_shop_app(self.store_url, node_id="worker-2")
        await self.worker.start()

    def start(self) -> None:
        self.run(self._start(), timeout=60)
        self.url = self.serve(self.app.dashboard(title="tickerq shop"))

    def serve(self, asgi: Any, host: str = "127.0.0.1") -> str:
        """Serve ``asgi`` on ``host`` and a free port; its URL without the trailing slash."""
        server = self.run(start_server(asgi, host=host, port=0))
        self.servers.append(server)
        return server.url.rstrip("/")

    def close(self) -> None:
        async def stop() -> None:
            for server in reversed(self.servers):
                await server.stop()
            for app in (getattr(self, "worker", None), getattr(self, "app", None)):
                if app is not None:
                    await app.stop(grace=2)

        try:
            self.run(stop(), timeout=30)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


@pytest.fixture(scope="session")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    """The running shop with its dashboard at ``shop.url``."""
    served = Shop(tmp_path_factory.mktemp("shop"))
    try:
        served.start()
        yield served
    finally:
        served.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Chromium, launched once per test module.

    Not per session: Playwright's sync API keeps its own event loop marked as running
    on the main thread while it is started, and the async tests that follow need it gone.
    """
    if not Path(CHROMIUM).exists():
        _unavailable(f"no chromium at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("Playwright is not installed (pip install -e '.[dev]')")
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@dataclass
class Watch:
    """What went wrong in a page: console errors, uncaught errors, failed requests."""

    console: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    allowed: list[re.Pattern[str]] = field(default_factory=list)

    def allow(self, pattern: str) -> None:
        """Expect problems matching ``pattern`` (a regex) in this test."""
        self.allowed.append(re.compile(pattern))

    def problems(self) -> list[str]:
        found = [*self.console, *self.page_errors, *self.failed]
        return [p for p in found if not any(a.search(p) for a in self.allowed)]

    def assert_clean(self) -> None:
        assert self.problems() == [], "the page had errors"
        self.clear()

    def clear(self) -> None:
        self.console.clear()
        self.page_errors.clear()
        self.failed.clear()


def watch_page(page: Any, watch: Watch, accept_dialogs: bool = True) -> None:
    """Record ``page``'s console errors, failed requests and dialogs in ``watch``."""

    def on_console(msg: Any) -> None:
        if msg.type == "error":
            watch.console.append(f"console: {msg.text} ({msg.location.get('url', '')})")

    def on_request_failed(request: Any) -> None:
        failure = request.failure or ""
        # a navigation aborts the event stream and live refreshes still in flight
        if "ERR_ABORTED" not in failure:
            watch.failed.append(f"request failed: {request.method} {request.url} {failure}")

    def on_response(response: Any) -> None:
        if response.status >= 400:
            watch.failed.append(f"HTTP {response.status}: {response.request.method} {response.url}")

    def on_dialog(dialog: Any) -> None:
        watch.dialogs.append(f"{dialog.type}: {dialog.message}")
        if accept_dialogs and dialog.type == "confirm":
            dialog.accept()
        else:
            dialog.dismiss()

    page.on("console", on_console)
    page.on("pageerror", lambda error: watch.page_errors.append(f"page error: {error}"))
    page.on("requestfailed", on_request_failed)
    page.on("response", on_response)
    page.on("dialog", on_dialog)


@dataclass
class Browse:
    """A test's view: a page with its watch, and the shop."""

    page: Any
    watch: Watch
    shop: Shop
    context: Any

    @property
    def url(self) -> str:
        return self.shop.url

    def goto(self, path: str) -> Any:
        response = self.page.goto(self.url + path)
        assert response is not None and response.status == 200, (path, response)
        self.wait_live()
        return response

    def wait_live(self) -> None:
        """Wait until the page's event stream is open."""
        self.page.locator("#live-status.live-on").wait_for(timeout=5000)

    def new_page(self) -> tuple[Any, Watch]:
        page = self.context.new_page()
        watch = Watch()
        watch_page(page, watch)
        return page, watch


@pytest.fixture
def browse(browser: Any, shop: Shop) -> Iterator[Browse]:
    """A fresh browser context (1280 px wide, UTC) on the shop's dashboard."""
    context = browser.new_context(viewport={"width": WIDTH, "height": 900}, timezone_id="UTC")
    context.set_default_timeout(8000)
    from playwright.sync_api import expect

    # Live updates travel store -> poll -> event stream -> page: on a loaded CI machine
    # that can take longer than expect()'s 5 s default (a wait, not a slower test).
    expect.set_options(timeout=12_000)
    page = context.new_page()
    watch = Watch()
    watch_page(page, watch)
    try:
        yield Browse(page, watch, shop, context)
    finally:
        context.close()


@pytest.fixture(scope="session")
def screenshot_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if SCREENSHOTS:
        DOCS_IMG.mkdir(parents=True, exist_ok=True)
        return DOCS_IMG
    return tmp_path_factory.mktemp("screenshots")


def wait_charts(page: Any) -> None:
    """Wait until every chart on the page has drawn (or said it has no data)."""
    page.wait_for_function(
        "() => [...document.querySelectorAll('[data-chart]')].every("
        "el => el.querySelector('canvas, .chart-empty'))"
    )
