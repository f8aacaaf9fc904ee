"""Import direction: service -> linking -> retrieval -> artifacts, grpc and ray in service/ only, no cycles.

Every module of the four packages is parsed with :mod:`ast` (nothing is imported), including imports
made inside functions: a lazy import still ties the modules together, it only hides the tie until
run time. The checks fail with the offending file and line.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("artifacts", "retrieval", "linking", "service")
"""Lowest first: a package may import its own layer and those before it."""
SERVER_ONLY = ("grpc", "grpc_health", "grpc_reflection", "grpc_tools", "ray")
"""Top-level modules only service/ may import."""
GRPC_FREE = "service.mlops"
"""The offline MLOps package: usable without the gRPC stack, directly or through what it imports."""


@dataclass(frozen=True)
class Import:
    """One import statement's target, resolved to an absolute dotted name."""

    source: str
    target: str
    path: Path
    line: int

    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    """Every module of the four packages (the generated gRPC code included), by dotted name."""
    return {module_name(path): path for layer in LAYERS for path in sorted((ROOT / layer).rglob("*.py"))}


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> Iterator[Import]:
    """The modules ``path`` imports; ``from package import name`` counts as the submodule when it is one."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(name, alias.name, path, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            for alias in node.names:
                submodule = f"{target}.{alias.name}"
                yield Import(name, submodule if submodule in modules else target, path, node.lineno)


def project_target(target: str, modules: dict[str, Path]) -> str | None:
    """The project module ``target`` names (itself or its closest parent package), or None when outside."""
    parts = target.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def layer_of(name: str) -> int:
    return LAYERS.index(name.split(".")[0])


def import_graph(modules: dict[str, Path]) -> tuple[dict[str, set[str]], list[Import]]:
    """Edges between project modules, and every import statement (for the rules about outside modules)."""
    graph: dict[str, set[str]] = {name: set() for name in modules}
    every: list[Import] = []
    for name, path in modules.items():
        for imp in imports_of(name, path, modules):
            every.append(imp)
            target = project_target(imp.target, modules)
            if target is not None and target != name:
                graph[name].add(target)
    return graph, every


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm (iterative); the components of more than one module, i.e. the import cycles."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
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
                    cycles.append(sorted(component))
    return cycles


@pytest.fixture(scope="module")
def project() -> tuple[dict[str, Path], dict[str, set[str]], list[Import]]:
    modules = project_modules()
    graph, every = import_graph(modules)
    return modules, graph, every


def test_the_checks_see_every_package(project) -> None:
    modules, graph, _ = project
    for layer in LAYERS:
        assert layer in modules, f"{layer}/__init__.py not found"
    assert any(name.startswith(GRPC_FREE + ".") for name in modules), f"no modules under {GRPC_FREE}"
    # The graph is not empty: the service imports the library (else every check below passes trivially).
    assert any(layer_of(t) < layer_of(s) for s, targets in graph.items() for t in targets)


def test_imports_point_down_the_layers(project) -> None:
    modules, _, every = project
    upward = [
        f"{imp.where()}: {imp.source} imports {imp.target}"
        for imp in every
        if (target := project_target(imp.target, modules)) is not None and layer_of(target) > layer_of(imp.source)
    ]
    assert not upward, "imports against service -> linking -> retrieval -> artifacts:\n" + "\n".join(upward)


def test_grpc_and_ray_are_imported_in_service_only(project) -> None:
    _, _, every = project
    outside = [
        f"{imp.where()}: {imp.target}"
        for imp in every
        if imp.target.split(".")[0] in SERVER_ONLY and not imp.source.startswith("service")
    ]
    assert not outside, "grpc/ray imported outside service/:\n" + "\n".join(outside)


def test_mlops_does_not_reach_grpc(project) -> None:
    modules, graph, every = project
    direct: dict[str, list[Import]] = {}
    for imp in every:
        if imp.target.split(".")[0] in SERVER_ONLY:
            direct.setdefault(imp.source, []).append(imp)
    problems = []
    for start in sorted(name for name in modules if name == GRPC_FREE or name.startswith(GRPC_FREE + ".")):
        seen, todo, parent = {start}, [start], {start: ""}
        while todo:
            node = todo.pop()
            for imp in direct.get(node, []):
                chain = [node]
                while parent[chain[-1]]:
                    chain.append(parent[chain[-1]])
                problems.append(f"{imp.where()}: {imp.target} (reached from {' <- '.join(chain)})")
            for child in graph[node]:
                if child not in seen:
                    seen.add(child)
                    parent[child] = node
                    todo.append(child)
    assert not problems, f"{GRPC_FREE} must work without grpc:\n" + "\n".join(sorted(set(problems)))


def test_no_import_cycles(project) -> None:
    _, graph, _ = project
    cycles = strongly_connected(graph)
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(cycle) for cycle in cycles)


def test_cycle_detection_finds_a_cycle() -> None:
    # Guards the checker itself: a three-module loop and a self-contained chain beside it.
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert strongly_connected(graph) == [["a", "b", "c"]]
