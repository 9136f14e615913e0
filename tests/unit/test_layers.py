"""The layout is the architecture: read from the code's own imports, every import runs down
the layers (or stays in its room), no two modules import each other however indirectly, no
private name crosses a package, and nothing edits sys.path.

The layers, top to bottom, are in docs/ARCHITECTURE.md; LAYERS below is the same table.
"""

from __future__ import annotations

import ast
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("fulfillment", "workers", "producers", "db")
#: not installed, not layered, but held to the same rules on circles and private names
TOOLS = ("tests", "bench", "chaos")

#: room (module prefix) -> floor. A module's room is the longest prefix that names it; it may
#: import its own room's modules and any room on a lower floor, nothing else.
LAYERS: dict[str, int] = {
    # the one command, `fulfillment`: it dispatches to every entry point below
    "fulfillment.cli": 7,
    # development tools: the demo drives the producer and the launcher starts the processes
    "fulfillment.dev": 6,
    # entry points: the processes of the Procfile and the purchase path's producer
    "workers": 5,
    "producers": 5,
    "fulfillment.web": 5,
    # the composition root: settings and wiring, built lazily once per process
    "fulfillment.runtime": 4,
    # services: the use cases, each carried out against ports
    "fulfillment.services": 3,
    # ports and adapters: PostgreSQL, the vendor protocol, the Redis-shared fleet state, the
    # broker, outbound notifications; and the embedded servers the wiring falls back to
    "db": 2,
    "fulfillment.vendors": 2,
    "fulfillment.fleet": 2,
    "fulfillment.messaging": 2,
    "fulfillment.notify": 2,
    "fulfillment.dev.embedded": 2,
    # logs and metric definitions, used by every layer above
    "fulfillment.telemetry": 1,
    # the pure domain: order facts, the decision rule, errors, names
    "fulfillment.domain": 0,
}


@dataclass(frozen=True)
class Import:
    source: str  # importing module
    target: str  # imported module (resolved to a module of the tree)
    names: tuple[str, ...]  # names taken from it by `from ... import`
    line: int
    #: under `if TYPE_CHECKING:`: for the type checker only, never run
    typing_only: bool = False


def _tracked(*patterns: str) -> list[Path]:
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", *patterns],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return [ROOT / p for p in out if (ROOT / p).is_file()]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def modules() -> dict[str, Path]:
    return {
        _module_name(p): p
        for p in _tracked(*(f"{pkg}/*.py" for pkg in PACKAGES + TOOLS))
        if p.suffix == ".py"
    }


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str, path: Path, known: dict[str, Path]) -> Iterator[Import]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    typing_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING")
        for stmt in node.body
        for inner in ast.walk(stmt)
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = _resolve(alias.name, known)
                if target:
                    yield Import(module, target, (), node.lineno, id(node) in typing_only)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                if full in known:  # `from package import module`
                    yield Import(module, full, (), node.lineno, id(node) in typing_only)
                else:
                    target = _resolve(base, known)
                    if target:
                        yield Import(
                            module, target, (alias.name,), node.lineno, id(node) in typing_only
                        )


@cache
def all_imports() -> tuple[Import, ...]:
    known = modules()
    return tuple(i for m, p in known.items() for i in imports_of(m, p, known) if i.target != m)


def layered(module: str) -> bool:
    return module.split(".", maxsplit=1)[0] in PACKAGES


def room(module: str) -> str:
    rooms = [r for r in LAYERS if module == r or module.startswith(r + ".")]
    best = max(rooms, key=len, default=None)
    assert best is not None, f"{module} is in no layer: add its package to LAYERS"
    return best


def test_every_module_has_a_layer() -> None:
    for module in filter(layered, modules()):
        if module in PACKAGES:
            continue  # the namespace's own __init__ and the roots' empty __init__
        room(module)


def test_imports_run_down_the_layers() -> None:
    upward = []
    for imp in all_imports():
        if not layered(imp.source) or imp.target in PACKAGES:
            continue  # a tool (tests, benchmarks, chaos) or an empty package __init__
        src, dst = room(imp.source), room(imp.target)
        if src != dst and LAYERS[dst] >= LAYERS[src]:
            upward.append(
                f"{imp.source}:{imp.line} imports {imp.target} "
                f"({src}, floor {LAYERS[src]} -> {dst}, floor {LAYERS[dst]})"
            )
    assert upward == [], "\n".join(upward)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_circles() -> None:
    """Per module, counting every import that runs (also those inside functions); an import
    for the type checker only (`if TYPE_CHECKING:`) is not one."""
    graph: dict[str, set[str]] = {m: set() for m in modules()}
    for imp in all_imports():
        if not imp.typing_only:
            graph[imp.source].add(imp.target)
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def _package(module: str) -> str:
    path = modules().get(module)
    return module if path is not None and path.name == "__init__.py" else module.rpartition(".")[0]


def test_no_private_name_crosses_a_package() -> None:
    crossing = [
        f"{imp.source}:{imp.line} takes {name} from {imp.target}"
        for imp in all_imports()
        for name in imp.names
        if name.startswith("_")
        and not name.startswith("__")
        and _package(imp.source) != _package(imp.target)
    ]
    assert crossing == [], "\n".join(crossing)


@pytest.mark.parametrize(
    "needle", ["sys.path.insert", "sys.path.append", "sys.path[", "sys.path =", "sys.path +="]
)
def test_nothing_edits_sys_path(needle: str) -> None:
    here = Path(__file__).resolve()
    offenders = [
        str(p.relative_to(ROOT))
        for p in _tracked("*.py")
        if p.resolve() != here and needle in p.read_text(encoding="utf-8")
    ]
    assert offenders == []
