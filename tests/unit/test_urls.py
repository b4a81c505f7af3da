"""Store URLs shown to people never carry a secret (tickerq.urls), wherever they are shown."""

from __future__ import annotations

import logging

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from tickerq import TickerQ
from tickerq.cli import main
from tickerq.errors import InvalidArgumentError, StoreConnectionError
from tickerq.stores import open_store
from tickerq.stores.sql.dialects import for_url
from tickerq.urls import mask_secrets, mask_url

SAFE = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-"

names = st.text(SAFE, min_size=1, max_size=12)
hosts = st.one_of(
    names,
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(lambda a: f"[{a}]"),
    st.lists(names, min_size=2, max_size=3).map(",".join),  # libpq multi-host
)
ports = st.one_of(st.just(""), st.integers(1, 65535).map(lambda p: f":{p}"))
plain_parameters = st.lists(
    st.tuples(
        st.sampled_from(["sslmode", "application_name", "connect_timeout", "options", "x"]),
        st.text(SAFE + "@/:=", max_size=12),
    ),
    max_size=3,
)
secret_parameters = st.sampled_from(
    ["password", "passwd", "pwd", "secret", "token", "sslpassword", "api_key", "PassWord"]
)
# Anything at all may be in a password, as people type it (unencoded @, /, ?, # ...)
secrets = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="*"), min_size=1)


def build(scheme: str, user: str, password: str | None, host: str, path: str, query: str) -> str:
    userinfo = f"{user}:{password}@" if password is not None else (f"{user}@" if user else "")
    return f"{scheme}://{userinfo}{host}{path}{query}"


def query_of(parameters: list[tuple[str, str]]) -> str:
    return "?" + "&".join(f"{k}={v}" for k, v in parameters) if parameters else ""


@given(
    scheme=st.sampled_from(["postgresql", "postgres", "postgresql+asyncpg", "sqlite", "x"]),
    user=names,
    secret=secrets,
    host=hosts,
    port=ports,
    database=st.text(SAFE, max_size=10),
    parameters=plain_parameters,
)
def test_a_userinfo_password_never_shows(
    scheme: str,
    user: str,
    secret: str,
    host: str,
    port: str,
    database: str,
    parameters: list[tuple[str, str]],
) -> None:
    url = build(scheme, user, secret, host + port, f"/{database}", query_of(parameters))
    assume(url.count(secret) == 1)
    shown = mask_url(url)
    assert secret not in shown, (url, shown)
    assert shown.startswith(f"{scheme}://{user}:***@")
    assert secret not in mask_secrets(f"failed: {url} with {secret}", url)


@given(
    user=st.one_of(st.just(""), names),
    password=st.one_of(st.none(), secrets),
    name=secret_parameters,
    # "&" or "?" then name= inside a query value cannot be told from the next parameter
    secret=st.text(st.characters(exclude_categories=["Cs"], exclude_characters="*&?"), min_size=1),
    host=hosts,
    before=plain_parameters,
    after=plain_parameters,
)
def test_a_secret_query_parameter_never_shows(
    user: str,
    password: str | None,
    name: str,
    secret: str,
    host: str,
    before: list[tuple[str, str]],
    after: list[tuple[str, str]],
) -> None:
    query = query_of([*before, (name, secret), *after])
    url = build("postgresql", user, password, host, "/db", query)
    assume(url.count(secret) == 1)
    shown = mask_url(url)
    assert secret not in shown, (url, shown)
    if "@" not in query:  # an "@" after the host hides everything up to it
        assert f"{name}=***" in shown
    if password is not None:
        assume(url.count(password) == 1)
        assert password not in shown


@given(st.text(st.characters(exclude_categories=["Cs"])))
def test_masking_is_idempotent(text: str) -> None:
    once = mask_url(text)
    assert mask_url(once) == once


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:p@ss@db.example/app", "postgresql://u:***@db.example/app"),
        ("postgresql://u:p%40ss@db.example/app", "postgresql://u:***@db.example/app"),
        (
            "postgresql://u@h/app?password=s3&sslmode=require",
            "postgresql://u@h/app?password=***&sslmode=require",
        ),
        ("postgresql://h/app?sslpassword=k&pwd=x", "postgresql://h/app?sslpassword=***&pwd=***"),
        ("sqlite:///var/tickerq.db", "sqlite:///var/tickerq.db"),
        ("sqlite:////tmp/a@b.db", "sqlite:////tmp/a@b.db"),
        ("postgresql://postgres@127.0.0.1:5432/test", "postgresql://postgres@127.0.0.1:5432/test"),
        ("memory://", "memory://"),
        ("u:pw@host/db", "u:***@host/db"),
    ],
)
def test_what_stays_readable(url: str, shown: str) -> None:
    assert mask_url(url) == shown


LEAKY_URLS = [
    "postgresql://u:p@ss-word@127.0.0.1:1/app",
    "postgresql://postgres@127.0.0.1:1/app?password=ss-word",
    "postgresql://u:x@127.0.0.1:1/app?sslpassword=ss-word",
    "sqlite:////nonexistent-folder/x.db?password=ss-word",
]


@pytest.mark.parametrize("url", LEAKY_URLS[1:])
def test_store_urls_shown_never_carry_the_password(url: str) -> None:
    assert "ss-word" not in TickerQ(url).store_url  # the dashboard footer, the demo
    assert "ss-word" not in for_url(url).safe_url  # logs and CLI messages
    assert "***" in for_url(url).safe_url


def test_an_unencoded_at_in_the_password_is_refused_before_connecting() -> None:
    # SQLAlchemy would take "ss-word@127.0.0.1" as the host: the end of the password
    # would go to DNS and into the driver's error message
    with pytest.raises(InvalidArgumentError, match="%40") as caught:
        for_url("postgresql://u:p@ss-word@127.0.0.1:1/app")
    assert "ss-word" not in str(caught.value)
    assert "u:***@127.0.0.1:1/app" in str(caught.value)


async def test_connection_errors_never_show_the_password(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    for url in ("postgresql://u:ss-word@127.0.0.1:1/app", *LEAKY_URLS[:2]):
        with pytest.raises((StoreConnectionError, InvalidArgumentError)) as caught:
            await open_store(url).open()
        assert "ss-word" not in str(caught.value)
    assert "ss-word" not in caplog.text


@pytest.mark.parametrize(
    "url", [*LEAKY_URLS, "mysql://u:p@ss-word@127.0.0.1/app", "u:ss-word@127.0.0.1/app"]
)
@pytest.mark.parametrize("command", ["db current", "db upgrade", "dashboard"])
def test_cli_messages_never_show_the_password(
    url: str, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main([*command.split(), "--store", url])
    shown = capsys.readouterr()
    assert exited.value.code != 0, shown
    assert "ss-word" not in shown.out + shown.err, shown
