"""Registering job functions: options, checks, typed handles and routers.

Everything about a function is worked out once, when its decorator runs:
its name, whether it is async, whether it wants a context, how its request is
validated and encoded. Dispatch is then a dict lookup and a call.
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
import json
from collections.abc import Callable, Iterator, KeysView, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import (
    TYPE_CHECKING,
    Any,
    Generic,
    Protocol,
    get_args,
    get_origin,
    get_type_hints,
    overload,
)

from tickerq.context import Req, TickerContext
from tickerq.enums import MisfirePolicy, Priority
from tickerq.errors import (
    CronError,
    FunctionNotFoundError,
    InvalidArgumentError,
    InvalidRequestError,
    InvalidResultError,
    RegistrationError,
    TickerQError,
)
from tickerq.limits import RateLimit, as_rate_limit, check_concurrency_key, looks_like_rate
from tickerq.middleware import check_middleware
from tickerq.validation import (
    MAX_CONCURRENCY,
    MAX_RETRIES,
    check_count,
    check_cron_text,
    check_enum,
    check_name,
    check_payload,
    check_payload_size,
    check_retries,
    check_timeout,
    check_timezone,
    json_copy,
    short_repr,
)

if TYPE_CHECKING:
    from pydantic import TypeAdapter, ValidationError

    from tickerq.app import TickerQ
    from tickerq.models import TimeTicker
    from tickerq.sync import SyncFunction
    from tickerq.unique import OnConflict

__all__ = [
    "FunctionOptions",
    "FunctionRegistry",
    "TickerFunction",
    "TickerRouter",
    "collect_registration_errors",
    "encode_json_request",
]

JobCallable = Callable[..., Any]

_collector: contextvars.ContextVar[list[RegistrationError] | None] = contextvars.ContextVar(
    "tickerq_registration_collector", default=None
)


@contextlib.contextmanager
def collect_registration_errors() -> Iterator[list[RegistrationError]]:
    """Within this block, registration problems are collected instead of raised.

    ``tickerq check`` uses it to report every mistake in a module at once.
    """
    problems: list[RegistrationError] = []
    token = _collector.set(problems)
    try:
        yield problems
    finally:
        _collector.reset(token)


def _problem(function: str, message: str) -> None:
    error = RegistrationError(function, message)
    collected = _collector.get()
    if collected is None:
        raise error
    collected.append(error)


@dataclass(frozen=True, slots=True, kw_only=True)
class FunctionOptions:
    """How a function runs; set by ``@app.function(...)``."""

    cron: str | None = None
    """Seeds a cron ticker with this expression when the app starts."""
    cron_timezone: str | None = None
    """Timezone of the seeded cron (default: the app's)."""
    misfire: MisfirePolicy = MisfirePolicy.RUN_ONCE
    priority: Priority = Priority.NORMAL
    max_concurrency: int = 0
    """At most this many runs at once (0: no limit beyond the engine's)."""
    retries: int = 0
    retry_intervals: tuple[float, ...] | None = None
    """Seconds before each retry; the last repeats. None: exponential backoff."""
    timeout: float | None = None
    """Seconds a run may take before it is cancelled and counted as failed."""
    max_stale_restarts: int | None = None
    """Lost runs (the node died or froze while running it) after which a ticker ends
    FAILED instead of running again. None: ``EngineOptions.max_stale_restarts``."""
    rerun_lost: bool = True
    """False: a lost run ends its ticker CANCELLED instead of running again (for
    jobs that must not run twice)."""
    middleware: tuple[object, ...] = ()
    """Middleware around this function's enqueues and runs, inside the app's."""
    rate_limit: RateLimit | str | None = None
    """At most so many starts per period across the cluster: its own
    :class:`~tickerq.limits.RateLimit`, or the name of one of the app's ``limits``."""
    concurrency_key: Callable[[Any], Any] | None = None
    """Computes a ticker's concurrency key from its request at enqueue."""
    max_per_key: int = 0
    """At most this many runs at once per concurrency key, across the cluster."""


class _Codec:
    """Validates and encodes requests of one function; built once per function."""

    __slots__ = ("_adapter", "_plain", "type")

    def __init__(self, function: str, request_type: Any) -> None:
        self.type = request_type
        self._plain = request_type is Any
        self._adapter: TypeAdapter[Any] | None = None
        if self._plain or request_type is None or request_type is type(None):
            return
        from pydantic import TypeAdapter  # only for typed requests: a sizeable import

        try:
            adapter: TypeAdapter[Any] = TypeAdapter(request_type)
            adapter.json_schema()
        except Exception as exc:  # pydantic raises several kinds here
            _problem(
                function,
                f"request type {_type_name(request_type)} cannot be validated and "
                f"serialized as JSON ({type(exc).__name__}: {str(exc).splitlines()[0]})",
            )
            self._plain = True
            return
        self._adapter = adapter

    def encode(self, function: str, request: Any) -> Any:
        """Validate ``request`` and return its JSON-compatible form."""
        adapter = self._adapter
        if adapter is not None:
            from pydantic import ValidationError

            try:
                return adapter.dump_python(adapter.validate_python(request), mode="json")
            except ValidationError as exc:
                raise InvalidRequestError(function, _validation_text(exc)) from None
            except Exception as exc:
                raise InvalidRequestError(function, f"{type(exc).__name__}: {exc}") from None
        if request is None:
            return None
        if not self._plain:
            raise InvalidRequestError(
                function, f"the function takes no request, got {_short_repr(request)}"
            )
        try:
            return json_copy(request)
        except (TypeError, ValueError) as exc:
            raise InvalidRequestError(
                function, f"payload {_short_repr(request)} is not JSON: {exc}"
            ) from None

    def decode(self, payload: Any) -> Any:
        """Turn a stored payload back into the request type."""
        adapter = self._adapter
        if adapter is None:
            return payload
        return adapter.validate_python(payload)


class _ResultCodec:
    """Checks and encodes what one function returns; built once per function.

    A return annotation other than ``None``/``Any`` is checked at registration
    (it must be serializable as JSON, like request types) and each value returned
    is validated against it; without one a value is stored as plain JSON.
    """

    __slots__ = ("_adapter", "type")

    def __init__(self, function: str, return_type: Any) -> None:
        self.type = return_type
        self._adapter: TypeAdapter[Any] | None = None
        if return_type is Any or return_type is None or return_type is type(None):
            return
        from pydantic import TypeAdapter

        try:
            adapter: TypeAdapter[Any] = TypeAdapter(return_type)
            adapter.json_schema()
        except Exception as exc:
            _problem(
                function,
                f"return type {_type_name(return_type)} cannot be serialized as JSON "
                f"({type(exc).__name__}: {str(exc).splitlines()[0]})",
            )
            return
        self._adapter = adapter

    def encode(self, function: str, value: Any, limit: int) -> Any:
        """The JSON form of ``value`` to store; InvalidResultError naming the problem."""
        if value is None:
            return None
        adapter = self._adapter
        if adapter is not None:
            from pydantic import ValidationError

            try:
                result = adapter.dump_python(adapter.validate_python(value), mode="json")
            except ValidationError as exc:
                raise InvalidResultError(
                    function,
                    f"{_short_repr(value)}, not its return type {_type_name(self.type)}: "
                    f"{_validation_text(exc, 'result')}",
                ) from None
        else:
            try:
                result = json_copy(value)
            except (TypeError, ValueError) as exc:
                raise InvalidResultError(
                    function, f"{_short_repr(value)}, which is not JSON: {exc}"
                ) from None
        try:
            check_payload(result, function)
        except InvalidRequestError as exc:
            raise InvalidResultError(
                function, f"a value that cannot be stored: {exc.problem}"
            ) from None
        if limit:
            size = len(json.dumps(result, separators=(",", ":")).encode())
            if size > limit:
                raise InvalidResultError(
                    function,
                    f"{size:,} bytes as JSON, over the limit of {limit:,} "
                    "(TickerQ(max_payload_bytes=...))",
                )
        return result


_PLAIN_JSON = _Codec("", Any)


def encode_json_request(function: str, request: Any) -> Any:
    """``request`` stored as plain JSON for ``function`` (a copy: tuples become lists),
    as for a function whose request type is ``Any``.

    For functions not registered in this process, whose request type is unknown
    here; raises InvalidRequestError naming a value JSON cannot hold.
    """
    return _PLAIN_JSON.encode(function, request)


class TickerFunction(Generic[Req]):
    """A registered job function; the decorator returns one.

    Call ``await fn.enqueue(request)`` to run it now, or
    ``await fn.schedule(request, at=... | after=...)`` to run it later. The
    original function stays callable as ``fn.func``.
    """

    __slots__ = (
        "_app",
        "_codec",
        "_results",
        "func",
        "is_async",
        "name",
        "options",
        "wants_context",
    )

    def __init__(self, name: str, func: JobCallable, options: FunctionOptions) -> None:
        self.name = name
        self.func = func
        self.options = options
        self.is_async = inspect.iscoroutinefunction(func)
        self.wants_context, request_type = _inspect_signature(name, func)
        self._codec = _Codec(name, request_type)
        self._results = _ResultCodec(name, _return_type(name, func))
        self._app: TickerQ | None = None

    @property
    def request_type(self) -> Any:
        """The request type (``Any`` for plain JSON, ``None`` for no request)."""
        return self._codec.type

    @property
    def app(self) -> TickerQ:
        """The app this function is registered in."""
        if self._app is None:
            raise TickerQError(
                f"function {self.name!r} belongs to a router that no app has included yet"
            )
        return self._app

    @property
    def sync(self) -> SyncFunction[Req]:
        """Blocking ``enqueue`` and ``schedule``, for code that is not async (see ``app.sync``)."""
        from tickerq.sync import SyncFunction

        return SyncFunction(self)

    def encode_request(self, request: Any) -> Any:
        """Validate a request and return the JSON-compatible payload to store."""
        return self._codec.encode(self.name, request)

    def decode_request(self, payload: Any) -> Any:
        """Decode a stored payload into the request type; one that does not validate
        (stored as plain JSON by a process without this function) raises
        InvalidRequestError with ``stored`` set."""
        try:
            return self._codec.decode(payload)
        except Exception as exc:
            from pydantic import ValidationError

            if isinstance(exc, ValidationError):
                problem = _validation_text(exc)
                raise InvalidRequestError(self.name, problem, stored=True) from None
            raise

    @property
    def return_type(self) -> Any:
        """The annotated return type (``Any`` when not annotated)."""
        return self._results.type

    def encode_result(self, value: Any, limit: int = 0) -> Any:
        """What a run returned, as the JSON to store (checked against the return
        type, storable, at most ``limit`` bytes); raises InvalidResultError."""
        return self._results.encode(self.name, value, limit)

    async def enqueue(
        self,
        request: Req | None = None,
        *,
        description: str = "",
        retries: int | None = None,
        retry_intervals: Sequence[float] | None = None,
        timeout: float | None = None,
        headers: Mapping[str, str] | None = None,
        unique_key: str | None = None,
        on_conflict: OnConflict = "keep",
    ) -> TimeTicker:
        """Add a time ticker that runs as soon as a slot is free.

        With ``unique_key``, at most one ticker of this function with that key waits
        or runs; ``on_conflict`` (``"keep"``, ``"replace"`` or ``"error"``) says what
        an enqueue does while one does, and the result's ``enqueued`` what it did
        (see ``app.time_tickers.add``)."""
        return await self.app.time_tickers.add(
            self.name,
            request=request,
            description=description,
            retries=retries,
            retry_intervals=retry_intervals,
            timeout=timeout,
            headers=headers,
            unique_key=unique_key,
            on_conflict=on_conflict,
        )

    async def schedule(
        self,
        request: Req | None = None,
        *,
        at: datetime | None = None,
        after: timedelta | float | None = None,
        description: str = "",
        retries: int | None = None,
        retry_intervals: Sequence[float] | None = None,
        timeout: float | None = None,
        headers: Mapping[str, str] | None = None,
        unique_key: str | None = None,
        on_conflict: OnConflict = "keep",
    ) -> TimeTicker:
        """Add a time ticker due ``at`` an aware datetime or ``after`` a delay.

        ``unique_key`` and ``on_conflict`` as in :meth:`enqueue`: ``schedule(req,
        after=30, unique_key=k, on_conflict="replace")`` debounces (each call moves
        the one waiting ticker of ``k`` 30 s on, with the latest request)."""
        return await self.app.time_tickers.add(
            self.name,
            request=request,
            execution_time=at,
            after=after,
            description=description,
            retries=retries,
            retry_intervals=retry_intervals,
            timeout=timeout,
            headers=headers,
            unique_key=unique_key,
            on_conflict=on_conflict,
        )

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the underlying function directly (e.g. in a unit test)."""
        return self.func(*args, **kwargs)

    def __repr__(self) -> str:
        return f"TickerFunction({self.name!r})"


def _return_type(name: str, func: JobCallable) -> Any:
    """The function's return annotation (``Any`` when there is none or it cannot be
    resolved: a bad request annotation is reported, a return one need not be)."""
    try:
        annotation = inspect.signature(func).return_annotation
    except (TypeError, ValueError):
        return Any
    if annotation is inspect.Signature.empty:
        return Any
    try:
        return get_type_hints(func).get("return", Any)
    except Exception as exc:
        _problem(name, f"the return annotation cannot be resolved: {exc}")
        return Any


def _inspect_signature(name: str, func: JobCallable) -> tuple[bool, Any]:
    """Return (wants_context, request_type) or report a signature problem."""
    if inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func):
        _problem(name, "a job function cannot be a generator")
        return False, None
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError) as exc:
        _problem(name, f"its signature cannot be read: {exc}")
        return False, None
    params = list(signature.parameters.values())
    if not params:
        return False, None
    allowed = "only one parameter, annotated TickerContext or TickerContext[Request], is allowed"
    if len(params) > 1:
        names = ", ".join(p.name for p in params)
        _problem(name, f"takes parameters ({names}); {allowed}")
        return False, None
    param = params[0]
    if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
        star = "*" if param.kind is param.VAR_POSITIONAL else "**"
        _problem(name, f"variadic parameter {star}{param.name} is not allowed; {allowed}")
        return False, None
    if param.kind is param.KEYWORD_ONLY:
        _problem(name, f"parameter {param.name!r} is keyword-only; {allowed}")
        return False, None
    if param.annotation is inspect.Parameter.empty:
        return True, Any
    try:
        hints = get_type_hints(func)
    except Exception as exc:
        _problem(name, f"the annotation of {param.name!r} cannot be resolved: {exc}")
        return True, Any
    annotation = hints.get(param.name, Any)
    if annotation is TickerContext:
        return True, Any
    if get_origin(annotation) is TickerContext:
        args = get_args(annotation)
        return True, args[0] if args else Any
    _problem(name, f"parameter {param.name!r} is annotated {_type_name(annotation)}; {allowed}")
    return True, Any


def _flag(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidArgumentError(f"{what} must be True or False, got {value!r}")
    return value


def _middleware_list(value: Any) -> tuple[object, ...]:
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise InvalidArgumentError(f"middleware must be a list, got {short_repr(value)}")
    return tuple(check_middleware(m) for m in value)


def _rate_limit_option(value: Any) -> RateLimit | str | None:
    """A function's ``rate_limit``: a RateLimit (or its text), or a limit's name."""
    if value is None or isinstance(value, RateLimit):
        return value
    if isinstance(value, str) and not looks_like_rate(value):
        check_name(value, "rate limit name")
        return value
    return as_rate_limit(value, "rate_limit")


def _key_function(value: Any) -> Callable[[Any], Any] | None:
    if value is not None and not callable(value):
        raise InvalidArgumentError(
            f"concurrency_key must be a function of the request, got {short_repr(value)}"
        )
    return value  # type: ignore[no-any-return]


def _checked_options(name: str, options: dict[str, Any]) -> FunctionOptions:
    """Build the options, reporting every bad one as a problem of function ``name``."""
    checks: dict[str, Callable[[Any], Any]] = {
        "misfire": lambda v: check_enum(MisfirePolicy, v, "misfire policy"),
        "priority": lambda v: check_enum(Priority, v, "priority"),
        "max_concurrency": lambda v: check_count(v, "max_concurrency", MAX_CONCURRENCY),
        "retries": lambda v: check_count(v, "retries", MAX_RETRIES),
        "retry_intervals": lambda v: check_retries(0, v),
        "timeout": check_timeout,
        "max_stale_restarts": lambda v: (
            None if v is None else check_count(v, "max_stale_restarts", MAX_RETRIES)
        ),
        "rerun_lost": lambda v: _flag(v, "rerun_lost"),
        "cron": lambda v: None if v is None else check_cron_text(v),
        "cron_timezone": lambda v: None if v is None else check_timezone(v),
        "middleware": _middleware_list,
        "rate_limit": _rate_limit_option,
        "concurrency_key": _key_function,
        "max_per_key": lambda v: check_count(v, "max_per_key", MAX_CONCURRENCY),
    }
    defaults = FunctionOptions()
    for key, check in checks.items():
        try:
            options[key] = check(options[key])
        except (InvalidArgumentError, CronError) as exc:
            _problem(name, str(exc))
            options[key] = getattr(defaults, key)
    if (options["concurrency_key"] is None) != (options["max_per_key"] == 0):
        _problem(name, "concurrency_key and max_per_key go together: give both or neither")
        options["concurrency_key"], options["max_per_key"] = None, 0
    if options["cron"] is not None:
        from tickerq.cron import CronExpression

        try:
            CronExpression.parse(options["cron"], options["cron_timezone"] or "UTC")
        except ValueError as exc:
            _problem(name, str(exc))
            options["cron"] = None
    return FunctionOptions(**options)


class _Decorator(Protocol):
    """What ``@app.function(...)`` returns: turns a function into a typed handle."""

    @overload
    def __call__(self, func: Callable[[TickerContext[Req]], Any], /) -> TickerFunction[Req]: ...
    @overload
    def __call__(self, func: Callable[[], Any], /) -> TickerFunction[None]: ...


class _Registrar:
    """The ``function`` decorator, shared by :class:`TickerQ` and :class:`TickerRouter`."""

    def __init__(self) -> None:
        self._functions: dict[str, TickerFunction[Any]] = {}

    @property
    def functions(self) -> dict[str, TickerFunction[Any]]:
        """The registered functions by name (a copy)."""
        return dict(self._functions)

    _prefix = ""
    _handle_type: type[TickerFunction[Any]] = TickerFunction
    """The class of the handles the decorator makes (a subclass may add behaviour)."""

    @overload
    def function(self, name: Callable[[TickerContext[Req]], Any], /) -> TickerFunction[Req]: ...
    @overload
    def function(self, name: Callable[[], Any], /) -> TickerFunction[None]: ...
    @overload
    def function(
        self,
        name: str | None = None,
        *,
        cron: str | None = None,
        cron_timezone: str | None = None,
        misfire: MisfirePolicy = MisfirePolicy.RUN_ONCE,
        priority: Priority = Priority.NORMAL,
        max_concurrency: int = 0,
        retries: int = 0,
        retry_intervals: Sequence[float] | None = None,
        timeout: float | None = None,
        max_stale_restarts: int | None = None,
        rerun_lost: bool = True,
        middleware: Sequence[object] = (),
        rate_limit: RateLimit | str | None = None,
        concurrency_key: Callable[[Any], Any] | None = None,
        max_per_key: int = 0,
    ) -> _Decorator: ...
    def function(
        self,
        name: str | JobCallable | None = None,
        *,
        cron: str | None = None,
        cron_timezone: str | None = None,
        misfire: MisfirePolicy = MisfirePolicy.RUN_ONCE,
        priority: Priority = Priority.NORMAL,
        max_concurrency: int = 0,
        retries: int = 0,
        retry_intervals: Sequence[float] | None = None,
        timeout: float | None = None,
        max_stale_restarts: int | None = None,
        rerun_lost: bool = True,
        middleware: Sequence[object] = (),
        rate_limit: RateLimit | str | None = None,
        concurrency_key: Callable[[Any], Any] | None = None,
        max_per_key: int = 0,
    ) -> Any:
        """Register a job function: ``@app.function``, ``@app.function()`` or
        ``@app.function("name", cron=..., priority=..., max_concurrency=...,
        retries=..., retry_intervals=..., timeout=..., max_stale_restarts=...,
        rerun_lost=..., middleware=[...], rate_limit="100/m",
        concurrency_key=lambda req: req.tenant, max_per_key=1)``.

        ``rate_limit`` and ``max_per_key`` hold across every node (see
        :mod:`tickerq.limits`); ``rate_limit`` may name one of the app's ``limits``.

        Problems (duplicate name, bad signature, bad cron, negative limits,
        unserializable request type) raise :class:`RegistrationError` here,
        naming the function.
        """
        if not (name is None or isinstance(name, str)):  # bare @app.function
            return self.function()(name)
        label: str | None = name
        if label is not None and not label.strip():
            raise RegistrationError(repr(label), "a function name cannot be empty")
        raw = {
            "cron": cron,
            "cron_timezone": cron_timezone,
            "misfire": misfire,
            "priority": priority,
            "max_concurrency": max_concurrency,
            "retries": retries,
            "retry_intervals": retry_intervals,
            "timeout": timeout,
            "max_stale_restarts": max_stale_restarts,
            "rerun_lost": rerun_lost,
            "middleware": middleware,
            "rate_limit": rate_limit,
            "concurrency_key": concurrency_key,
            "max_per_key": max_per_key,
        }

        def decorate(func: JobCallable) -> TickerFunction[Any]:
            fname = self._prefix + (label or getattr(func, "__name__", None) or repr(func))
            try:
                check_name(fname)
            except InvalidArgumentError as exc:
                raise RegistrationError(fname[:80], str(exc)) from None
            options = _checked_options(fname, dict(raw))
            handle: TickerFunction[Any] = self._handle_type(fname, func, options)
            self._register(handle)
            return handle

        if callable(name):  # bare @app.function without parentheses
            func, name = name, None
            return decorate(func)
        return decorate

    def _register(self, handle: TickerFunction[Any]) -> None:
        if handle.name in self._functions and self._functions[handle.name] is not handle:
            existing = self._functions[handle.name].func
            where = (
                getattr(existing, "__module__", "?") + "." + getattr(existing, "__qualname__", "?")
            )
            _problem(handle.name, f"the name is already registered (by {where})")
            return
        self._functions[handle.name] = handle


class TickerRouter(_Registrar):
    """A group of functions declared in one module, included into an app later.

    ``router = TickerRouter(prefix="billing.")`` then ``@router.function()``;
    ``app.include_router(router)`` registers them all, checking name clashes.
    """

    def __init__(self, prefix: str = "") -> None:
        super().__init__()
        self._prefix = prefix

    @property
    def prefix(self) -> str:
        """Prepended to the name of every function registered here."""
        return self._prefix


_UNREGISTERED = FunctionOptions()
"""The options of a function not registered here: NORMAL priority, no retries."""


class FunctionRegistry:
    """The functions an app runs, by name, and the checks scheduling one of them
    makes: what the managers are given instead of the app.

    A live view of the app's registrations: functions registered later are in it.
    """

    __slots__ = ("_by_name", "max_payload_bytes")

    def __init__(self, by_name: dict[str, TickerFunction[Any]], *, max_payload_bytes: int) -> None:
        self._by_name = by_name
        self.max_payload_bytes = max_payload_bytes
        """Requests larger than this (as JSON) are refused when scheduled (0: no limit)."""

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def names(self) -> KeysView[str]:
        """The registered names."""
        return self._by_name.keys()

    def get(self, name: str) -> TickerFunction[Any]:
        """The function registered as ``name``; raises FunctionNotFoundError."""
        fn = self._by_name.get(name)
        if fn is None:
            raise FunctionNotFoundError(name, list(self._by_name))
        return fn

    def encode_request(self, function: str, request: Any) -> Any:
        """Validate ``request`` for ``function`` and check its size; the stored form."""
        payload = self.get(function).encode_request(request)
        check_payload_size(payload, function, self.max_payload_bytes)
        return payload

    def options(self, function: str, allow_unregistered: bool) -> tuple[str, FunctionOptions]:
        """The name and options of ``function``: those it was registered with, or
        the defaults for a name not registered here when ``allow_unregistered``."""
        if allow_unregistered and function not in self._by_name:
            return function, _UNREGISTERED
        fn = self.get(function)
        return fn.name, fn.options

    def concurrency_key(self, function: str, payload: Any) -> str | None:
        """The concurrency key of a ticker of ``function`` with the stored request
        ``payload`` (None when the function has no per-key limit, or is not
        registered here). What the function's ``concurrency_key`` raises or returns
        wrongly is an InvalidArgumentError naming the function."""
        fn = self._by_name.get(function)
        if fn is None or fn.options.concurrency_key is None:
            return None
        try:
            value = fn.options.concurrency_key(fn.decode_request(payload))
        except Exception as exc:
            raise InvalidArgumentError(
                f"the concurrency_key of {function!r} failed: {type(exc).__name__}: {exc}"
            ) from exc
        return check_concurrency_key(function, value)

    def payload(self, function: str, request: Any, allow_unregistered: bool) -> Any:
        """The request validated for ``function`` (plain JSON for a function not
        registered here, when allowed), within the size limit and storable on
        every store."""
        if allow_unregistered and function not in self._by_name:
            payload = encode_json_request(function, request)
            check_payload_size(payload, function, self.max_payload_bytes)
        else:
            payload = self.encode_request(function, request)
        return check_payload(payload, function)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__qualname__", None) or repr(tp)


def _short_repr(value: Any, limit: int = 80) -> str:
    return short_repr(value, limit)  # never fails (deep or huge values)


def _validation_text(exc: ValidationError, what: str = "request") -> str:
    parts = []
    for err in exc.errors()[:3]:
        loc = ".".join(str(p) for p in err["loc"]) or what
        parts.append(f"{loc}: {err['msg']} (got {_short_repr(err.get('input'), 40)})")
    more = exc.error_count() - 3
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")
