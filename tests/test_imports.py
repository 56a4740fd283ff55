"""mtlue's modules import one another one way: the import graph (top-level and function-level imports,
read with ast, not by importing) has no cycle. A function-level import that only dodges a circle is still
a circle."""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Cycles that are known and owned elsewhere; each entry names where it is being removed. Keep this empty.
KNOWN_CYCLES: set = set()


def module_files() -> dict:
    """{dotted module name: (path, is_package)} for every .py file under mtlue/."""
    modules = {}
    for path in sorted((ROOT / "mtlue").rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        modules[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return modules


def import_graph() -> dict:
    """{module: set of mtlue modules it imports anywhere in its body}."""
    modules = module_files()

    def known(name: str):
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for name, (path, is_package) in modules.items():
        package = name if is_package else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                targets |= {known(alias.name) for alias in node.names if alias.name.split(".")[0] == "mtlue"}
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                if module.split(".")[0] != "mtlue":
                    continue
                # `from mtlue.store import writer` imports the submodule; `from mtlue.store import X` the package
                targets |= {known(f"{module}.{alias.name}") if f"{module}.{alias.name}" in modules else known(module)
                            for alias in node.names}
        graph[name] = targets - {None, name}
    return graph


def cycles(graph: dict) -> list:
    """The strongly connected components of more than one module (Tarjan), each as a sorted list."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
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

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_graph_sees_function_level_and_relative_imports():
    graph = import_graph()
    assert "mtlue.store.layout" in graph["mtlue.store.writer"]  # top level
    assert "mtlue.data" in graph["mtlue"]  # inside open_store()
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_mtlue_has_no_import_cycle():
    found = [c for c in cycles(import_graph()) if frozenset(c) not in KNOWN_CYCLES]
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def test_nothing_in_mtlue_imports_the_cli():
    """cli.py is the top: mtlue/ never imports it (mtlue/__main__.py, the entry point, excepted)."""
    for name, (path, _) in module_files().items():
        if name == "mtlue.__main__":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and not node.level else []
            assert "cli" not in names, f"{path.relative_to(ROOT)} imports cli"
