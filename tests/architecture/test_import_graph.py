"""No vlp module imports another that imports it back, directly or through others.

The graph is read off the source (AST): every `import` and `from ... import` of a vlp module, at module level and
inside functions alike. A function-level import is an edge too: deferring an import hides a loop from Python's
import machinery, not from a reader, who still cannot understand either module without the other. Two kinds of
import are not edges, by argument:
- one under `if TYPE_CHECKING:`, which never runs (annotations only);
- the implicit import of a package's `__init__` when one of its submodules is imported: a package that re-exports
  its submodules' names would otherwise be a loop with each of them. `from vlp.data import X` where X is no
  submodule is an edge to `vlp.data`'s `__init__`, which is then what the importer reads.
"""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "vlp"


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_only(tree: ast.Module) -> set[int]:
    """The ids of the import nodes under `if TYPE_CHECKING:` (or `typing.TYPE_CHECKING`)."""
    guarded = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", None)) == "TYPE_CHECKING":
            guarded |= {id(inner) for statement in node.body for inner in ast.walk(statement)}
    return guarded


def _imported(node: ast.AST, package: str, top: str) -> list[tuple[str, list[str]]]:
    """(module named, names taken from it) for each module an import statement names, relative ones resolved."""
    if isinstance(node, ast.Import):
        return [(alias.name, []) for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = node.module or ""
    if node.level:
        parts = package.split(".")
        base = ".".join(parts[:len(parts) - node.level + 1] + ([node.module] if node.module else []))
    return [(base, [alias.name for alias in node.names])] if base == top or base.startswith(top + ".") else []


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module → the modules of the package at `root` it imports (see the module docstring for what counts)."""
    paths = {module_name(root, path): path for path in sorted(root.rglob("*.py"))}

    def owner(name: str):  # the module a dotted name lives in: `vlp.data.decode.BadSample` → vlp.data.decode
        while name and name not in paths:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for name, path in paths.items():
        tree = ast.parse(path.read_text(), str(path))
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        skip = _type_checking_only(tree)
        edges = set()
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            for module, names in _imported(node, package, root.name):
                targets = [f"{module}.{n}" if f"{module}.{n}" in paths else module for n in names] or [module]
                edges |= {owner(t) for t in targets} - {None, name}
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted, and each with one loop
    through it spelled out as its last entry."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(start: str) -> None:  # iterative: a deep import chain must not hit the recursion limit
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
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
                    found.append(sorted(component) + [" -> ".join(_loop(graph, set(component)))])

    for name in sorted(graph):
        if name not in index:
            visit(name)
    return found


def _loop(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """One import loop inside a strongly connected component, from its first module back to it."""
    start = min(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        node = frontier.pop(0)
        for child in sorted(graph[node] & component):
            if child == start:
                return paths[node] + [start]
            if child not in paths:
                paths[child] = paths[node] + [child]
                frontier.append(child)
    return [start]


def test_vlp_has_no_import_loop():
    """Every loop is reported with one path around it (train.state <-> train.sharded included, were it back)."""
    graph = import_graph(PACKAGE)
    assert len(graph) > 100 and graph["vlp.train.loop"], "the scan read the package"
    found = cycles(graph)
    assert not found, "import loops (put the shared piece below both):\n" + "\n".join(c[-1] for c in found)


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_a_planted_loop_is_found_through_function_level_and_relative_imports(tmp_path):
    """The scan catches a loop closed by an import deferred into a function, and by a relative import; it ignores
    imports under TYPE_CHECKING and a package's `__init__` re-exporting its submodules."""
    pkg = _write(tmp_path / "toy", {
        "__init__.py": "from toy.a import A\n",
        "a.py": "from toy.b import B\nA = 1\n",
        "b.py": "def late():\n    from toy import c\n    return c\nB = 2\n",
        "c.py": "from .a import A\n",
        "d.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from toy.e import E\nD = 4\n",
        "e.py": "from toy.d import D\nE = 5\n",
    })
    graph = import_graph(pkg)
    assert graph["toy.b"] == {"toy.c"} and graph["toy.c"] == {"toy.a"} and graph["toy.d"] == set()
    assert [c[:-1] for c in cycles(graph)] == [["toy.a", "toy.b", "toy.c"]]
    assert cycles(graph)[0][-1] == "toy.a -> toy.b -> toy.c -> toy.a"


def test_a_planted_two_module_loop_is_found(tmp_path):
    """The shape of the loops removed from vlp (data.config_check <-> data.sources, models.build <->
    models.registry): each module reaches into the other, one of them only inside a function."""
    pkg = _write(tmp_path / "toy", {
        "__init__.py": "",
        "rules.py": "def check():\n    from toy.registry import known\n    return known()\n",
        "registry.py": "from toy.rules import check\n\ndef known():\n    return []\n",
    })
    assert [c[:-1] for c in cycles(import_graph(pkg))] == [["toy.registry", "toy.rules"]]
