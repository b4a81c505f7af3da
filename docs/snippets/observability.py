import asyncio
import contextvars
from collections.abc import Awaitable, Callable
from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry, generate_latest

from tickerq import Failure, Middleware, TickerContext, TickerQ, TimeTicker
from tickerq.contrib.otel import OpenTelemetryMiddleware
from tickerq.contrib.prometheus import PrometheusMiddleware

current_tenant = contextvars.ContextVar("current_tenant", default="none")


class Tenant(Middleware):  # subclassing Middleware is optional
    async def on_enqueue(
        self, ticker: TimeTicker, call_next: Callable[[TimeTicker], Awaitable[TimeTicker]]
    ) -> TimeTicker:
        headers = {**ticker.headers, "tenant": current_tenant.get()}
        return await call_next(ticker.evolve(headers=headers))

    async def on_execute(
        self, ctx: TickerContext, call_next: Callable[[TickerContext], Awaitable[Any]]
    ) -> Any:
        token = current_tenant.set(ctx.headers.get("tenant", "none"))
        try:
            return await call_next(ctx)  # the job's return value
        finally:
            current_tenant.reset(token)


spans = InMemorySpanExporter()  # in production: an OTLP exporter, see "Exporting spans"
tracing = TracerProvider()
tracing.add_span_processor(SimpleSpanProcessor(spans))
registry = CollectorRegistry()  # default: prometheus_client's global REGISTRY

app = TickerQ(middleware=[OpenTelemetryMiddleware(tracing), Tenant()])
app.add_middleware(PrometheusMiddleware(registry=registry))  # inside Tenant


@app.function(retries=1, retry_intervals=[0])
async def send_email(ctx: TickerContext[dict]) -> str:
    if ctx.attempt == 1:
        raise ConnectionError("SMTP server busy")
    return f"sent for {current_tenant.get()}"


@app.on_exception  # every failed attempt
def report(ctx: TickerContext, error: BaseException, failure: Failure) -> None:
    print(f"{ctx.function} attempt {failure.attempt} failed ({error}); final: {failure.final}")


@app.on_final_failure  # once per ticker whose last attempt failed
async def page_someone(ctx: TickerContext, error: BaseException) -> None: ...


@app.on_cancel  # once per ticker that ends CANCELLED
def cancelled(c: Any) -> None: ...  # c.id, c.kind, c.function, c.was_running


async def main() -> None:
    async with app:
        current_tenant.set("acme")
        ticker = await send_email.enqueue({"to": "ada@example.com"}, headers={"request-id": "r-1"})
        done = await app.time_tickers.wait(ticker.id, timeout=10)
    print(done.status, done.result, sorted(done.headers))
    # DONE sent for acme ['request-id', 'tenant', 'traceparent']
    print([span.name for span in spans.get_finished_spans()])
    # ['send send_email', 'process send_email', 'process send_email']
    metrics = generate_latest(registry).decode().splitlines()
    print([line for line in metrics if line.startswith("tickerq_jobs_") and line.endswith(" 1.0")])
    # tickerq_jobs_finished_total{function="send_email",status="done"} 1.0, and status="retry"


if __name__ == "__main__":
    asyncio.run(main())
