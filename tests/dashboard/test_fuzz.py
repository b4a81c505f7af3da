"""schemathesis against the dashboard's OpenAPI document: no 5xx on any input.

Every operation of the JSON API gets generated requests, valid and invalid
(schemathesis' positive and negative modes), sent in-process through
``httpx.ASGITransport`` to a dashboard over a seeded store (memory and SQLite):
a few time tickers (one with a child and a failed attempt), a cron ticker with
an occurrence and a node, so path ids sometimes name rows that exist. Each
response must not be a server error and must match the document (status code
listed, JSON body of the documented schema, content type).

Deterministic (``derandomize``, no example database) and bounded
(``max_examples``), so it runs in CI in seconds.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tickerq import TickerQ, TimeTickerSpec
from tickerq.dashboard.openapi import openapi_document

FUNCTIONS = ("charge", "nightly", "send_email")
MAX_EXAMPLES = int(os.environ.get("TICKERQ_FUZZ_EXAMPLES", "10"))
"""Generated examples per operation (besides the coverage phase's); more for a deeper local run."""

schema = schemathesis.openapi.from_dict(openapi_document("/api", "tickerq", FUNCTIONS))

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@dataclass
class Seeded:
    """The ids that exist in the store under test, by path prefix."""

    ids: dict[str, list[str]] = field(default_factory=dict)


SEEDED = Seeded()


async def seed(app: TickerQ) -> dict[str, list[str]]:
    """Rows the generated requests may hit: a chain that ran (one attempt failed and
    waits to retry), a waiting ticker, the seeded cron with an occurrence, this node."""
    chain = await app.time_tickers.add_many(
        [
            TimeTickerSpec(
                function="send_email",
                request={"to": "fail@example.com", "subject": "<script>x</script>"},
                description="fuzz <b>chain</b>",
                children=[TimeTickerSpec(function="charge", request={"amount": 3})],
            )
        ]
    )
    done = await app.time_tickers.add("charge", request=None)
    async with app:  # runs what is due now, then stops and closes the store
        await app.engine.wait_idle()
    await app.open()
    later = await app.time_tickers.add(
        "send_email",
        request={"to": "later@example.com"},
        execution_time=datetime(2100, 1, 1, tzinfo=UTC),
    )
    tickers = [t.id for t in chain] + [done.id, later.id]
    tickers += [t.id for t in await app.time_tickers.query(parent_id=chain[0].id)]
    crons = await app.cron_tickers.query()
    occurrence = await app.cron_tickers.run_now(crons[0].id)
    return {
        "/time-tickers/": sorted({str(i) for i in tickers}),
        "/cron-tickers/": [str(c.id) for c in crons],
        "/occurrences/": [str(occurrence.id)],
    }


@schema.hook
def flatmap_path_parameters(context: Any, path_parameters: dict[str, Any]) -> Any:
    """Half the time, a path id that exists in the seeded store."""
    if not path_parameters or "id" not in path_parameters:
        return st.just(path_parameters)
    path = context.operation.path
    known = next((ids for prefix, ids in SEEDED.ids.items() if path.startswith(prefix)), [])
    if not known:
        return st.just(path_parameters)
    return st.one_of(
        st.just(path_parameters),
        st.sampled_from(known).map(lambda i: {**path_parameters, "id": i}),
    )


@dataclass
class Harness:
    """A dashboard on a seeded store, driven from a synchronous test on its own loop."""

    runner: asyncio.Runner
    client: httpx.AsyncClient

    def send(self, kwargs: dict[str, Any]) -> httpx.Response:
        headers = dict(kwargs.get("headers") or {})
        if kwargs.get("cookies"):
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in kwargs["cookies"].items())
        request: dict[str, Any] = {
            "method": kwargs["method"],
            "url": kwargs["url"],
            "headers": headers,
            "params": kwargs.get("params"),
        }
        if "json" in kwargs:
            request["json"] = kwargs["json"]
        elif kwargs.get("data") is not None:
            data = kwargs["data"]
            request["content"] = data.encode() if isinstance(data, str) else data
        return self.runner.run(self.client.request(**request))


@pytest.fixture(params=["memory", "sqlite"])
def harness(
    request: pytest.FixtureRequest, tmp_path: Path, make_app: Callable[[str], TickerQ]
) -> Iterator[Harness]:
    store = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path}/fuzz.db"
    with asyncio.Runner() as runner:
        app = make_app(store)

        async def start() -> httpx.AsyncClient:
            await app.open()
            await app._seed()
            SEEDED.ids = await seed(app)
            transport = httpx.ASGITransport(app=app.dashboard(), client=("127.0.0.1", 51000))
            return httpx.AsyncClient(transport=transport, base_url="http://localhost:8787")

        client = runner.run(start())
        try:
            yield Harness(runner, client)
        finally:
            SEEDED.ids = {}
            runner.run(client.aclose())
            runner.run(app.stop())


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_api_never_answers_5xx(case: Any, harness: Harness) -> None:
    kwargs = case.as_transport_kwargs(base_url="http://localhost:8787/api")
    response = harness.send(kwargs)
    case.validate_response(response, checks=CHECKS)
