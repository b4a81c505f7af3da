"""docs/configuration.md says every parameter with its real type and default.

Each table on the page is marked ``<!-- table: NAME -->``; its rows are compared
with the code: ``TickerQ.__init__``, the ``EngineOptions`` dataclass fields,
``@app.function``, ``app.configure``, ``fn.schedule`` and ``app.dashboard``. A
parameter added, removed, renamed, retyped or given another default fails here
until the page is updated. The environment variables' table is compared with
the variables the command line reads.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
from pathlib import Path
from typing import Any

import pytest

from tickerq import EngineOptions, TickerFunction, TickerQ

PAGE = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def table(name: str) -> dict[str, tuple[str, str, str]]:
    """The rows of the page's table ``name``: parameter -> (type, default, meaning)."""
    text = PAGE.read_text()
    start = text.index(f"<!-- table: {name} -->")
    rows: dict[str, tuple[str, str, str]] = {}
    for line in text[start:].splitlines()[3:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in _cells(line)]
        param, type_, default, meaning = cells
        rows[param.strip("`")] = (type_.strip("`"), default.strip("`"), meaning)
    return rows


def _cells(line: str) -> list[str]:
    """The cells of a table row: split on the pipes outside code spans."""
    cells, current, in_code = [], "", False
    for char in line.strip()[1:-1]:
        if char == "`":
            in_code = not in_code
        if char == "|" and not in_code:
            cells.append(current)
            current = ""
        else:
            current += char
    return [*cells, current]


def shown(value: Any) -> str:
    """A default as the page writes it."""
    if isinstance(value, enum.Enum):
        return f"{type(value).__name__}.{value.name}"
    if isinstance(value, str):
        return f'"{value}"'
    if dataclasses.is_dataclass(value) and value == type(value)():
        return f"{type(value).__name__}()"
    return repr(value)


def parameters(func: Any) -> dict[str, tuple[str, str]]:
    """name -> (annotation as written in the source, default as shown)."""
    out = {}
    for p in inspect.signature(func).parameters.values():
        if p.name == "self":
            continue
        assert isinstance(p.annotation, str), "the modules use `from __future__ import annotations`"
        out[p.name] = (p.annotation, shown(p.default))
    return out


def engine_fields() -> dict[str, tuple[str, str]]:
    out = {}
    for f in dataclasses.fields(EngineOptions):
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc]
        out[f.name] = (str(f.type), shown(default))
    return out


CASES = {
    "TickerQ": lambda: parameters(TickerQ.__init__),
    "EngineOptions": engine_fields,
    "function": lambda: parameters(TickerQ.function),
    "configure": lambda: parameters(TickerQ.configure),
    "schedule": lambda: parameters(TickerFunction.schedule),
    "dashboard": lambda: parameters(TickerQ.dashboard),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_table_matches_the_code(name: str) -> None:
    code = CASES[name]()
    page = table(name)
    assert list(page) == list(code), (
        f"{name}: the page lists {list(page)}, the code has {list(code)}"
    )
    for param, (type_, default) in code.items():
        page_type, page_default, meaning = page[param]
        assert page_type == type_, f"{name}.{param}: page says type {page_type}, code {type_}"
        assert page_default.replace("_", "") == default.replace("_", ""), (
            f"{name}.{param}: page says default {page_default}, code {default}"
        )
        assert len(meaning) > 10, f"{name}.{param}: no meaning given"


def test_the_check_bites() -> None:
    """A parameter missing from a table is found (the page parser reads every row)."""
    rows = table("EngineOptions")
    assert "grace_period" in rows and rows["grace_period"][1] == "30.0"
    del rows["grace_period"]
    assert list(rows) != list(engine_fields())


def cli_variables() -> dict[str, set[str]]:
    """Every environment variable the command line reads -> the commands reading it
    (``tickerq run``, ``tickerq db``, ...: the top-level command's name)."""
    import click

    from tickerq.cli import cli

    out: dict[str, set[str]] = {}

    def walk(command: click.Command, top: str) -> None:
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                walk(sub, top or name)
            return
        for param in command.params:
            names = [param.envvar] if isinstance(param.envvar, str) else param.envvar or []
            for name in names:
                out.setdefault(name, set()).add(f"tickerq {top}")

    walk(cli, "")
    return out


def env_table() -> dict[str, str]:
    """The page's environment variables: name -> what it says reads it."""
    text = PAGE.read_text()
    rows = text[text.index("<!-- env -->") :].splitlines()[3:]
    out = {}
    for line in rows:
        if not line.startswith("|"):
            break
        name, read_by = (c.strip() for c in _cells(line))
        out[name.strip("`")] = read_by
    return out


def test_the_environment_table_matches_the_command_line() -> None:
    code, page = cli_variables(), env_table()
    assert sorted(page) == sorted(code), (
        f"the page lists {sorted(page)}, the CLI reads {sorted(code)}"
    )
    for name, commands in code.items():
        for command in commands:
            assert f"`{command}" in page[name], f"{name}: the page does not say {command} reads it"
    assert code["TICKERQ_NODE_ID"] == {"tickerq run"}  # the check reads the commands
