"""The Flask example: ``POST /reports`` enqueues a report, ``GET /reports/<id>`` tells
how it went.

By default this web process only enqueues (producer only) and a worker runs the
jobs; ``RUN_JOBS_IN_WEB=1`` runs them in a background thread of the web process
too. See README.md.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any
from uuid import UUID

from flask import Flask, abort, request, url_for
from pydantic import ValidationError

from tickerq import TickerNotFoundError
from tickerq.contrib.flask import TickerQFlask

from jobs import SalesReport, build_sales_report, tq

background = TickerQFlask(tickerq=tq)
"""Opens ``tq`` in each web process on its first request; closes it at exit."""


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """The application factory (``flask --app web run``, ``gunicorn 'web:create_app()'``)."""
    app = Flask(__name__)
    app.config["TICKERQ_ENGINE"] = os.environ.get("RUN_JOBS_IN_WEB") == "1"
    app.config.update(config or {})
    background.init_app(app)

    @app.post("/reports")
    def request_report() -> tuple[dict[str, Any], int]:
        """Accept a report request and build it in the background."""
        try:
            report = SalesReport.model_validate(request.get_json(silent=True))
        except ValidationError as exc:
            return {"errors": exc.errors(include_url=False, include_context=False)}, 422
        ticker = build_sales_report.sync.enqueue(report)
        return {"job_id": str(ticker.id), "status_url": url_for("report", job_id=ticker.id)}, 202

    @app.get("/reports/<uuid:job_id>")
    def report(job_id: UUID) -> dict[str, Any]:
        """Where a report's job is: IDLE (waiting), IN_PROGRESS, DONE, FAILED..."""
        try:
            ticker = background.sync.time_tickers.get(job_id)
        except TickerNotFoundError:
            abort(404, f"no report job {job_id}")
        return {
            "job_id": str(ticker.id),
            "function": ticker.function,
            "status": ticker.status.value,
            "retry_count": ticker.retry_count,
            "result": ticker.result,
            "error": ticker.error_message,
        }

    return app
