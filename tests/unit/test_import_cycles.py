"""No import cycle between tickerq modules, counting what runs when a module is imported.

Every module under ``src/tickerq`` is parsed with :mod:`ast` (nothing is imported).
An edge ``a -> b`` is an import of tickerq module ``b`` that runs when ``a`` is
imported: at module level, in a class body, in a module-level ``try``/``with``/``if``
-- but not under ``if TYPE_CHECKING:`` and not inside a function (a lazy import
is how a module legitimately uses one that imports it). ``from tickerq.x import y``
is an edge to ``tickerq.x.y`` when that is a module, else to ``tickerq.x``: importing
a submodule runs its package's ``__init__`` however it is spelled, and Python finds
``tickerq.x.y`` while ``tickerq.x`` is still initializing, so ``from tickerq.x import y``
counts the same as ``import tickerq.x.y`` (which is an edge to ``tickerq.x.y`` alone).

Lazy imports (inside a function) that exist to break a cycle, and the cycle they break:
- ``tickerq.engine`` imports ``tickerq`` (for ``__version__``) in ``Engine._node``:
  tickerq -> tickerq.app -> tickerq.engine;
- ``tickerq.stores`` imports ``tickerq.stores.sql`` in ``open_store`` (also so that
  SQLAlchemy loads only for a SQL store): tickerq.stores.sql.store -> tickerq.stores.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = "tickerq"


def module_files(src: Path = SRC) -> dict[str, Path]:
    """Every tickerq module under ``src`` by dotted name (a package by its own name)."""
    found = {}
    for path in sorted((src / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


def import_time_imports(
    tree: ast.Module, *, lazy: bool = False
) -> Iterator[ast.Import | ast.ImportFrom]:
    """The import statements that run when the module is imported (``lazy``: and
    those inside its functions). Never those under ``if TYPE_CHECKING:``."""
    pending: list[ast.AST] = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) and not lazy:
            continue  # runs when called, not when imported
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            pending.extend(node.orelse)
        else:
            pending.extend(
                child
                for child in ast.iter_child_nodes(node)
                if isinstance(child, ast.stmt | ast.excepthandler | ast.match_case)
                or (lazy and isinstance(child, ast.expr))  # a lambda's body
            )


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The module a ``from ... import`` names, with relative imports resolved."""
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    drop = node.level - 1 if is_package else node.level
    base = base[: len(base) - drop]
    return ".".join([*base, node.module] if node.module else base)


def import_graph(src: Path = SRC, *, lazy: bool = False) -> dict[str, set[str]]:
    """Each tickerq module under ``src`` and the tickerq modules it imports when imported
    (``lazy``: or later, in a function)."""
    files = module_files(src)
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in import_time_imports(tree, lazy=lazy):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                source = _absolute(node, name, path.name == "__init__.py")
                for alias in node.names:
                    submodule = f"{source}.{alias.name}"
                    targets.append(submodule if submodule in files else source)
            graph[name].update(t for t in targets if t in files and t != name)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[tuple[str, ...]]:
    """One cycle through each strongly connected component that has one.

    Each cycle starts at its smallest module name, so that it reads the same run to run.
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def connect(node: str) -> None:  # Tarjan's algorithm (the graph is small)
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph[node]:
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return [_cycle_in(graph, component) for component in components]


def _cycle_in(graph: dict[str, set[str]], component: set[str]) -> tuple[str, ...]:
    """A shortest cycle through the smallest module of a strongly connected component."""
    start = min(component)
    paths: dict[str, tuple[str, ...]] = {start: (start,)}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for target in sorted(graph[node] & component):
                if target == start:
                    return paths[node]
                if target not in paths:
                    paths[target] = (*paths[node], target)
                    following.append(target)
        frontier = following
    raise AssertionError(f"no cycle through {start} in {sorted(component)}")


def _shown(cycle: tuple[str, ...]) -> str:
    return " -> ".join([*cycle, cycle[0]])


def _tree(root: Path, modules: dict[str, str]) -> Path:
    for name, text in modules.items():
        path = root / (name.replace(".", "/") + ".py")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def test_the_graph_tells_a_submodule_from_a_name(tmp_path: Path) -> None:
    src = _tree(
        tmp_path,
        {
            "tickerq.__init__": "from tickerq.app import App\n__version__ = '1'\n",
            "tickerq.app": "from tickerq.pkg import sub, NAME\n",
            "tickerq.pkg.__init__": "from . import sub as sub\nNAME = 1\n",
            "tickerq.pkg.sub": "from .. import __version__\nfrom .other import X\n",
            "tickerq.pkg.other": "import tickerq.pkg.sub\nimport json\n",
        },
    )
    assert import_graph(src) == {
        "tickerq": {"tickerq.app"},
        "tickerq.app": {"tickerq.pkg", "tickerq.pkg.sub"},  # NAME from the package, sub itself
        "tickerq.pkg": {"tickerq.pkg.sub"},
        "tickerq.pkg.sub": {"tickerq", "tickerq.pkg.other"},  # relative imports resolved
        "tickerq.pkg.other": {"tickerq.pkg.sub"},
    }
    assert find_cycles(import_graph(src)) == [
        ("tickerq", "tickerq.app", "tickerq.pkg.sub"),
    ]


def test_find_cycles_reports_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert sorted(find_cycles(graph)) == [("a", "b", "c"), ("e",)]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_type_checking_and_function_imports_are_not_edges() -> None:
    tree = ast.parse(
        "import tickerq.a\n"
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    import tickerq.b\nelse:\n    import tickerq.c\n"
        "try:\n    import tickerq.d\nexcept ImportError:\n    import tickerq.e\n"
        "class K:\n    import tickerq.f\n"
        "def f():\n    import tickerq.g\n"
        "class L:\n    async def m(self):\n        import tickerq.h\n"
    )

    def names(lazy: bool) -> set[str]:
        found = import_time_imports(tree, lazy=lazy)
        return {alias.name for node in found for alias in node.names}

    eager = {"TYPE_CHECKING", "tickerq.a", "tickerq.c", "tickerq.d", "tickerq.e", "tickerq.f"}
    assert names(lazy=False) == eager
    assert names(lazy=True) == eager | {"tickerq.g", "tickerq.h"}


def test_the_dashboard_needs_no_lazy_import_to_break_a_cycle() -> None:
    """``dashboard/app.py`` is the top: what it assembles never imports it back."""
    graph = import_graph(lazy=True)
    dashboard = {m for m in graph if m.startswith("tickerq.dashboard.")}
    assert "tickerq.dashboard.app" in dashboard
    inside = {m: graph[m] & dashboard for m in dashboard}
    assert find_cycles(inside) == []
    importers = {m for m, targets in graph.items() if "tickerq.dashboard.app" in targets}
    assert importers == {"tickerq.dashboard"}  # the package, which exports create_dashboard


def test_no_import_cycle() -> None:
    cycles = find_cycles(import_graph())
    if cycles:
        pytest.fail("import cycles between tickerq modules:\n" + "\n".join(map(_shown, cycles)))
