"""FastAPI: the lifespan of :mod:`tickerq.contrib.starlette` and a dependency.

``pip install 'tickerq[fastapi]'``, then::

    from fastapi import FastAPI
    from tickerq.contrib.fastapi import TickerQDep, tickerq_lifespan

    api = FastAPI(lifespan=tickerq_lifespan(tq))

    @api.get("/jobs/{job_id}")
    async def job(job_id: UUID, tq: TickerQDep) -> dict[str, str]:
        ticker = await tq.time_tickers.get(job_id)
        return {"status": ticker.status.value}

Overriding the dependency in tests (``api.dependency_overrides[get_tickerq]``)
hands routes another app.
"""

from __future__ import annotations

from typing import Annotated

try:
    from fastapi import Depends
except ImportError as exc:  # pragma: no cover - only without the extra
    raise ImportError(
        f"tickerq.contrib.fastapi needs FastAPI ({exc}): pip install 'tickerq[fastapi]'"
    ) from exc

from tickerq.app import TickerQ
from tickerq.contrib.starlette import (
    STATE_KEY,
    DashboardOptions,
    get_tickerq,
    tickerq_lifespan,
)

__all__ = ["STATE_KEY", "DashboardOptions", "TickerQDep", "get_tickerq", "tickerq_lifespan"]

TickerQDep = Annotated[TickerQ, Depends(get_tickerq)]
"""A route parameter annotated ``tq: TickerQDep`` gets the app of the lifespan."""
