import asyncio

from tickerq import EngineOptions, RateLimit, RetryPolicy, TickerContext, TickerQ
from tickerq.contrib.prometheus import PrometheusMiddleware


def report_failure(ctx: TickerContext, error: BaseException) -> None:
    print(f"{ctx.function} attempt {ctx.attempt} failed: {error!r}")


app = TickerQ(
    "sqlite:///jobs.db",
    node_id="worker-1",  # stable ids let a restarted node take its own claims back at once
    max_concurrency=32,
    timezone="Europe/Berlin",
    exception_handler=report_failure,
    max_payload_bytes=256_000,
    auto_upgrade=True,  # migrate an older schema when the store opens
    middleware=[PrometheusMiddleware()],
    limits={"smtp": "10/s"},  # named rate limits, shared by functions that name them
    rate_limit=RateLimit.parse("1000/m"),  # for the whole app, across every node
    options=EngineOptions(
        grace_period=20,
        lease=120,
        heartbeat_interval=15,
        retention=3 * 24 * 3600,  # keep ended tickers three days
        retry=RetryPolicy(base=5, cap=600, jitter=0.2),  # backoff when no intervals are given
    ),
)


@app.function(rate_limit="smtp", retries=4)  # no retry_intervals: the app's RetryPolicy
async def send_email(ctx: TickerContext[dict]) -> None: ...


async def main() -> None:
    async with app:
        print(app.node_id, app.max_concurrency, app.timezone)  # worker-1 32 Europe/Berlin
        print(app.engine.options.grace_period, app.engine.named_limits["smtp"])  # 20 10/s


if __name__ == "__main__":
    asyncio.run(main())
