"""The layers hold: the import graph of ``dcx`` (every import, those inside functions too) has no cycle between its
parts (subpackages and top-level modules), and the kernels (``dcx.kernels``, the ground floor) import nothing
from the rest of ``dcx``."""

import ast
from pathlib import Path

from conftest import REPO

ROOTS = {"dcx": REPO / "toolchain" / "dcx", "dcx.kernels": REPO / "kernels" / "python",
         "dcx.android": REPO / "android_harness"}


def modules() -> dict[str, Path]:
    found = {}
    for package, folder in ROOTS.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


def imports(path: Path, module: str) -> set[str]:
    """Every dcx module ``path`` imports, at any depth of its code."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the importing module's package
                base = module.split(".")[: len(module.split(".")) - node.level + (path.name == "__init__.py")]
                node_module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                node_module = node.module or ""
            names.add(node_module)
            names |= {f"{node_module}.{a.name}" for a in node.names}
    return {n for n in names if n == "dcx" or n.startswith("dcx.")}


def part(module: str, known: dict[str, Path]) -> str:
    """The part a module belongs to: its subpackage of dcx (``dcx.backends``, ``dcx.kernels``), or itself when it
    is a top-level module (``dcx.cli``)."""
    parts = module.split(".")
    if len(parts) >= 2 and (known.get(".".join(parts[:2]), Path()).name == "__init__.py"):
        return ".".join(parts[:2])
    return ".".join(parts[:2]) if len(parts) >= 2 else module


def graph() -> dict[str, set[str]]:
    known = modules()
    edges: dict[str, set[str]] = {}
    for module, path in known.items():
        here = part(module, known)
        for target in imports(path, module):
            while target not in known and "." in target:  # `from dcx.x import name`: the module is dcx.x
                target = target.rsplit(".", 1)[0]
            there = part(target, known)
            if target in known and there != here:
                edges.setdefault(here, set()).add(there)
    return edges


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        state[node] = 2
        stack.pop()
        return None

    for node in sorted(edges):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_no_import_cycle_between_the_parts_of_dcx():
    edges = graph()
    assert {"dcx.methods", "dcx.backends", "dcx.export", "dcx.targets", "dcx.kernels"} <= set(edges) | {
        t for ts in edges.values() for t in ts}
    cycle = find_cycle(edges)
    assert cycle is None, " -> ".join(cycle)


def test_the_kernels_import_nothing_above_them():
    known = modules()
    above = {f"{m}: {t}" for m, p in known.items() if m.startswith("dcx.kernels")
             for t in imports(p, m) if not t.startswith("dcx.kernels")}
    assert not above, sorted(above)


def test_the_cycle_finder_finds_a_cycle():
    """The check above can fail: a graph with a loop is reported with the loop's path."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}}) is None
