"""web.py: a Flask app that enqueues jobs; a worker runs them (flask --app web run)."""

from typing import Any
from uuid import UUID

from flask import Flask, abort, request
from pydantic import ValidationError

from tickerq import TickerNotFoundError
from tickerq.contrib.flask import TickerQFlask

from jobs import WelcomeEmail, send_welcome_email, tq

background = TickerQFlask(tickerq=tq)  # opens tq in each process on its first request


def create_app() -> Flask:
    app = Flask(__name__)
    background.init_app(app)

    @app.post("/signup")
    def signup() -> tuple[dict[str, Any], int]:
        try:
            email = WelcomeEmail.model_validate(request.get_json(silent=True))
        except ValidationError as exc:
            return {"errors": exc.errors(include_url=False)}, 422
        ticker = send_welcome_email.sync.enqueue(email)  # blocking: Flask views are sync
        return {"job_id": str(ticker.id)}, 202

    @app.get("/jobs/<uuid:job_id>")
    def job(job_id: UUID) -> dict[str, str]:
        try:
            ticker = background.sync.time_tickers.get(job_id)
        except TickerNotFoundError:
            abort(404, f"no job {job_id}")
        return {"status": ticker.status}

    return app
