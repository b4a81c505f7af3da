"""OpenTelemetry tracing for tickerq: a PRODUCER span per enqueue, a CONSUMER span per run.

Install the extra (``pip install 'tickerq[otel]'``, which brings
``opentelemetry-api``) and add the middleware::

    from tickerq.contrib.otel import OpenTelemetryMiddleware

    app = TickerQ("postgresql://...", middleware=[OpenTelemetryMiddleware()])

Spans go to the global tracer provider (or the one given), so nothing is
exported until the program configures the OpenTelemetry SDK; without it the
API's no-op tracer makes the middleware cost a few microseconds per job.

Following the (development-status) messaging semantic conventions, a ticker
is a message and its function the destination:

- ``on_enqueue``: a PRODUCER span ``send <function>``; the W3C trace context
  (``traceparent``, ``tracestate``; ``baggage`` when there is some) is injected
  into the ticker's headers with the global propagator before it is stored,
  so it travels with the row to whichever node runs it. Headers that already
  carry a ``traceparent`` (a creation context the caller set) are left alone
  and the span links to it.
- ``on_execute``: a CONSUMER span ``process <function>`` per attempt, child of
  the context extracted from the headers (one message per span: the
  conventions let the creation context be the parent) and linked to it (what
  they require), so retries are sibling spans in the producer's trace.
  ``link_only=True`` starts a new trace per run, only linked to the producer
  (for work scheduled far ahead, where one trace spanning days is unhelpful).
  Cron occurrences have no producer: their spans are roots.

A failed attempt records the exception and sets the span status to ERROR;
``TerminateExecution`` and cancellation are not errors (their status goes in
``tickerq.status``) except ``TerminateExecution(Status.FAILED, ...)``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

try:
    from opentelemetry import trace
    from opentelemetry.context import Context, attach, detach
    from opentelemetry.propagate import extract, inject
    from opentelemetry.trace import INVALID_SPAN, Link, SpanKind, StatusCode
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "tickerq.contrib.otel needs opentelemetry-api: pip install 'tickerq[otel]'"
    ) from exc

from tickerq import __version__
from tickerq.enums import Status
from tickerq.errors import TerminateExecution
from tickerq.middleware import EnqueueNext, ExecuteNext, Middleware

if TYPE_CHECKING:
    from opentelemetry.trace import Span, SpanContext, TracerProvider
    from opentelemetry.util.types import AttributeValue

    from tickerq.context import TickerContext
    from tickerq.models import TimeTicker

__all__ = ["SCOPE", "OpenTelemetryMiddleware"]

SCOPE: Final = "tickerq"
"""The instrumentation scope (tracer name) of tickerq's spans."""

SYSTEM: Final = "tickerq"
"""``messaging.system`` of tickerq's spans."""

# Attribute names (semantic conventions for messaging, and tickerq's own).
MESSAGING_SYSTEM: Final = "messaging.system"
MESSAGING_OPERATION_TYPE: Final = "messaging.operation.type"
MESSAGING_OPERATION_NAME: Final = "messaging.operation.name"
MESSAGING_DESTINATION_NAME: Final = "messaging.destination.name"
MESSAGING_MESSAGE_ID: Final = "messaging.message.id"
ERROR_TYPE: Final = "error.type"
TICKERQ_KIND: Final = "tickerq.kind"
TICKERQ_ATTEMPT: Final = "tickerq.attempt"
TICKERQ_RETRIES_LEFT: Final = "tickerq.retries_left"
TICKERQ_CRON_TICKER_ID: Final = "tickerq.cron_ticker.id"
TICKERQ_STATUS: Final = "tickerq.status"

_TRACEPARENT: Final = "traceparent"
_ROOT: Final = Context()
"""A context without a span: what a run without a producer starts from."""
_MAX_CACHED: Final = 4096
"""Attribute sets kept per function name (bounded: names come from the store)."""


_UNKNOWN = object()

trace.get_tracer_provider()  # loads a provider named in the environment, if any


class OpenTelemetryMiddleware(Middleware):
    """Traces enqueues (PRODUCER spans) and runs (CONSUMER spans), see the module.

    ``tracer_provider``: where spans go (default: the global provider, looked
    up when the first span starts, so configuring the SDK after building the
    app works). ``link_only``: runs start a trace of their own, linked to the
    producer span instead of being its children.
    """

    __slots__ = ("_link_only", "_process_attrs", "_send_attrs", "_tracer")

    def __init__(
        self, tracer_provider: TracerProvider | None = None, *, link_only: bool = False
    ) -> None:
        self._tracer = trace.get_tracer(SCOPE, __version__, tracer_provider)
        self._own_provider = tracer_provider is not None
        self._link_only = link_only
        self._send_attrs: dict[str, dict[str, AttributeValue]] = {}
        self._process_attrs: dict[tuple[str, str], dict[str, AttributeValue]] = {}

    def __repr__(self) -> str:
        return f"OpenTelemetryMiddleware(link_only={self._link_only})"

    # -- enqueue --------------------------------------------------------------------

    async def on_enqueue(self, ticker: TimeTicker, call_next: EnqueueNext) -> TimeTicker:
        """A PRODUCER span around storing the ticker, its context put in the headers."""
        headers = ticker.headers
        given = _creation_context(headers) if _TRACEPARENT in headers else None
        span = self._tracer.start_span(
            f"send {ticker.function}",
            kind=SpanKind.PRODUCER,
            attributes=self._send_attributes(ticker.function),
            links=None if given is None else (Link(given),),
        )
        if span is INVALID_SPAN:
            # The API's no-op tracer, with no trace to pass on: only baggage, if any.
            return await call_next(_carrying(ticker) if given is None else ticker)
        if span.is_recording():
            span.set_attribute(MESSAGING_MESSAGE_ID, str(ticker.id))
        token = attach(trace.set_span_in_context(span))
        try:
            return await call_next(_carrying(ticker) if given is None else ticker)
        except BaseException as exc:
            _record_error(span, exc)
            raise
        finally:
            detach(token)
            span.end()

    def _send_attributes(self, function: str) -> dict[str, AttributeValue]:
        attributes = self._send_attrs.get(function)
        if attributes is None:
            attributes = {
                MESSAGING_SYSTEM: SYSTEM,
                MESSAGING_OPERATION_TYPE: "send",
                MESSAGING_OPERATION_NAME: "send",
                MESSAGING_DESTINATION_NAME: function,
            }
            if len(self._send_attrs) < _MAX_CACHED:
                self._send_attrs[function] = attributes
        return attributes

    # -- execute --------------------------------------------------------------------

    async def on_execute(self, ctx: TickerContext[Any], call_next: ExecuteNext) -> Any:
        """A CONSUMER span around one attempt, in the producer's trace when it has one."""
        if not (ctx.headers or self._own_provider or self._sdk_configured()):
            return await call_next(ctx)  # no SDK and no trace to pass on: nothing to do
        parent = extract(ctx.headers) if ctx.headers else _ROOT
        links = None
        producer = trace.get_current_span(parent).get_span_context()
        if producer.is_valid:
            links = (Link(producer),)
            if self._link_only:
                parent = trace.set_span_in_context(INVALID_SPAN, parent)
        span = self._tracer.start_span(
            f"process {ctx.function}",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes=self._process_attributes(ctx.function, ctx.kind),
            links=links,
        )
        if span is INVALID_SPAN:  # the API's no-op tracer, and no trace to pass on
            return await call_next(ctx)
        if span.is_recording():
            span.set_attributes(_run_attributes(ctx))
        # The extracted context (with its baggage) is current for the job's own spans.
        token = attach(trace.set_span_in_context(span, parent))
        try:
            return await call_next(ctx)
        except TerminateExecution as stop:
            if span.is_recording():
                span.set_attribute(TICKERQ_STATUS, stop.status.value)
                if stop.status is Status.FAILED:
                    span.set_attribute(ERROR_TYPE, _qualified_name(type(stop)))
                    span.set_status(StatusCode.ERROR, stop.reason or "terminated as FAILED")
            raise
        except asyncio.CancelledError:
            if span.is_recording():
                span.set_attribute(TICKERQ_STATUS, Status.CANCELLED.value)
            raise
        except BaseException as exc:
            _record_error(span, exc)
            raise
        finally:
            detach(token)
            span.end()

    @staticmethod
    def _sdk_configured() -> bool:
        """Whether a tracer provider was set globally (the API's own default is a
        proxy that makes no-op spans until one is). Read from the API's global
        (``get_tracer_provider()`` reads the environment on every call); the
        provider named by ``OTEL_PYTHON_TRACER_PROVIDER`` is loaded at import."""
        provider = getattr(trace, "_TRACER_PROVIDER", _UNKNOWN)
        if provider is _UNKNOWN:  # an API without that global: ask it
            return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
        return provider is not None

    def _process_attributes(self, function: str, kind: str) -> dict[str, AttributeValue]:
        key = (function, kind)
        attributes = self._process_attrs.get(key)
        if attributes is None:
            attributes = {
                MESSAGING_SYSTEM: SYSTEM,
                MESSAGING_OPERATION_TYPE: "process",
                MESSAGING_OPERATION_NAME: "process",
                MESSAGING_DESTINATION_NAME: function,
                TICKERQ_KIND: str(kind),
            }
            if len(self._process_attrs) < _MAX_CACHED:
                self._process_attrs[key] = attributes
        return attributes


def _run_attributes(ctx: TickerContext[Any]) -> dict[str, AttributeValue]:
    attributes: dict[str, AttributeValue] = {
        MESSAGING_MESSAGE_ID: str(ctx.id),
        TICKERQ_ATTEMPT: ctx.attempt,
        TICKERQ_RETRIES_LEFT: ctx.retries_left,
    }
    if ctx.cron_ticker_id is not None:
        attributes[TICKERQ_CRON_TICKER_ID] = str(ctx.cron_ticker_id)
    return attributes


def _carrying(ticker: TimeTicker) -> TimeTicker:
    """``ticker`` with the current context (span, baggage) injected into its headers."""
    carrier = dict(ticker.headers)
    inject(carrier)
    return ticker if carrier == ticker.headers else ticker.evolve(headers=carrier)


def _creation_context(headers: Mapping[str, str]) -> SpanContext | None:
    """The span context a caller already put in the headers, if it is a valid one."""
    found = trace.get_current_span(extract(headers)).get_span_context()
    return found if found.is_valid else None


def _qualified_name(cls: type) -> str:
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


def _record_error(span: Span, exc: BaseException) -> None:
    if not span.is_recording():
        return
    span.record_exception(exc)
    span.set_attribute(ERROR_TYPE, _qualified_name(type(exc)))
    span.set_status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}")
