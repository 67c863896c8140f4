"""The package's shape: no import cycle inside ``lib/mlc`` (timm's direction: registries import no model)."""
import ast

from conftest import ROOT

LIB = ROOT / "lib"


def _module_name(path):
    parts = list(path.relative_to(LIB).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path, name):
    """The ``mlc`` modules a module imports, at any depth of its code (lazy imports count too)."""
    is_pkg = path.name == "__init__.py"
    package = name if is_pkg else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("mlc")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if not mod.startswith("mlc"):
                continue
            for a in node.names:          # "from . import x" imports the submodule x
                out.add(f"{mod}.{a.name}" if node.module is None or f"{mod}.{a.name}" in ALL else mod)
    return out


ALL = {}


def _graph():
    files = {_module_name(p): p for p in (LIB / "mlc").rglob("*.py")}
    ALL.update(files)
    graph = {}
    for name, path in files.items():
        deps = set()
        for target in _imports(path, name):
            while target and target not in files:
                target = target.rsplit(".", 1)[0] if "." in target else ""
            # a package importing its own children is the designed direction, not a cycle
            if target and target != name and not (path.name == "__init__.py" and target.startswith(name + ".")):
                deps.add(target)
        graph[name] = deps
    return graph


def _cycles(graph):
    cycles, state, stack = [], {}, []

    def visit(n):
        state[n] = "open"
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == "open":
                cycles.append(stack[stack.index(m):] + [m])
            elif m not in state:
                visit(m)
        stack.pop()
        state[n] = "done"

    for n in sorted(graph):
        if n not in state:
            visit(n)
    return cycles


def test_no_import_cycle_in_the_package():
    cycles = _cycles(_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_cycle_finder_finds_cycles():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
