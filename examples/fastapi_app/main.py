"""The FastAPI example: ``POST /signup`` enqueues a welcome email, ``GET /jobs/{id}``
tells how it went, and the dashboard is at ``/admin/jobs``.

By default this web process only enqueues (producer only) and a worker runs the
jobs; ``RUN_JOBS_IN_WEB=1`` runs them in the web process too. See README.md.
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any
from uuid import UUID

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

from tickerq import Status, TickerNotFoundError
from tickerq.contrib.fastapi import TickerQDep, tickerq_lifespan

from jobs import WelcomeEmail, send_welcome_email, tq

RUN_JOBS_IN_WEB = os.environ.get("RUN_JOBS_IN_WEB") == "1"

api = FastAPI(
    title="tickerq FastAPI example",
    # The dashboard answers loopback clients only until it has auth:
    # dashboard_options={"auth": BasicAuth("admin", os.environ["DASHBOARD_PASSWORD"])}
    lifespan=tickerq_lifespan(tq, engine=RUN_JOBS_IN_WEB, dashboard="/admin/jobs"),
)


class Accepted(BaseModel):
    job_id: UUID
    status_url: str


class JobStatus(BaseModel):
    job_id: UUID
    function: str
    status: Status
    retry_count: int
    finished_at: datetime | None
    result: Any
    error: str | None


@api.post("/signup", status_code=202)
async def signup(email: WelcomeEmail) -> Accepted:
    """Accept a signup and send the welcome email in the background."""
    ticker = await send_welcome_email.enqueue(email)
    return Accepted(job_id=ticker.id, status_url=api.url_path_for("job_status", job_id=ticker.id))


@api.get("/jobs/{job_id}")
async def job_status(job_id: UUID, tq: TickerQDep) -> JobStatus:
    """Where a job is: IDLE (waiting), IN_PROGRESS, DONE, FAILED..."""
    try:
        ticker = await tq.time_tickers.get(job_id)
    except TickerNotFoundError:
        raise HTTPException(404, f"no job {job_id}") from None
    return JobStatus(
        job_id=ticker.id,
        function=ticker.function,
        status=ticker.status,
        retry_count=ticker.retry_count,
        finished_at=ticker.finished_at,
        result=ticker.result,
        error=ticker.error_message,
    )
