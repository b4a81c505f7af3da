"""main.py: a FastAPI app that enqueues jobs; a worker runs them (uvicorn main:api)."""

from uuid import UUID

from fastapi import FastAPI, HTTPException

from tickerq import TickerNotFoundError
from tickerq.contrib.fastapi import TickerQDep, tickerq_lifespan

from jobs import WelcomeEmail, send_welcome_email, tq

api = FastAPI(lifespan=tickerq_lifespan(tq))  # opens the store with the app; runs no job


@api.post("/signup", status_code=202)
async def signup(email: WelcomeEmail) -> dict[str, str]:
    ticker = await send_welcome_email.enqueue(email)
    return {"job_id": str(ticker.id)}


@api.get("/jobs/{job_id}")
async def job(job_id: UUID, tq: TickerQDep) -> dict[str, str]:
    try:
        ticker = await tq.time_tickers.get(job_id)
    except TickerNotFoundError:
        raise HTTPException(404, f"no job {job_id}") from None
    return {"status": ticker.status}
