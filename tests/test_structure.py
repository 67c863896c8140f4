"""The package's shape: one folder per layer, each importing only the layers below it, and no import of the
kit's own modules hidden inside a function.

The graph is read from the source (every ``import`` and ``from ... import`` at any depth, and the edge from a
module to each package ``__init__`` above it, which Python runs first), so it is the graph Python follows.
"""
import ast
import sys
from pathlib import Path

import pytest
from conftest import ROOT

LIB = ROOT / "lib"

# lowest first: a module may import its own layer and those before it (README, "Layout")
LAYERS = ["core", "metrics", "data", "config", "modeling", "engine", "runs", "notebook", "evaluation", "methods",
          "cli", "entry"]
# the package root and the ``python -m mlc.<name>`` entry modules sit on top; nothing imports them
ENTRY_MODULES = {"mlc", "mlc.train", "mlc.evaluate", "mlc.predict", "mlc.weights", "mlc.launch", "mlc.pipeline"}
# imports allowed inside functions: heavy or optional third-party libraries, never the kit's own modules
HEAVY = {"torch", "torchvision", "timm", "open_clip", "transformers", "huggingface_hub", "submitit", "pandas",
         "matplotlib", "seaborn", "wordcloud", "ipywidgets", "IPython", "papermill", "nbformat", "nbconvert",
         "nbclient", "jupyter_client", "sklearn", "scipy", "h5py", "pyarrow", "tensorboard", "wandb", "randaugment",
         "PIL", "cv2", "tqdm", "yaml", "threadpoolctl", "psutil", "numpy", "fsspec", "filelock", "safetensors"}
# standard-library modules a function may import for one rare path, kept local on purpose
STDLIB = set(sys.stdlib_module_names)


def module_name(path: Path, lib: Path = LIB) -> str:
    parts = list(path.relative_to(lib).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> str:
    """The layer of a module: the first package under ``mlc``, or ``entry`` for the root and its entry modules."""
    if module in ENTRY_MODULES:
        return "entry"
    return module.split(".")[1]


def imports_of(path: Path, name: str, modules: set[str]) -> list[tuple[str, bool, int]]:
    """(imported kit module, inside a function?, line) for every import of a ``mlc`` module in the file, plus
    (package, False, 0) for each package ``__init__`` above the module (Python imports those first)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = []

    def resolve(target: str) -> str | None:
        while target and target not in modules:
            target = target.rsplit(".", 1)[0] if "." in target else ""
        return target or None

    def visit(node, in_function: bool):
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            targets = []
            if isinstance(child, ast.Import):
                targets = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[: len(base) - child.level + 1]
                    mod = ".".join(base + ([child.module] if child.module else []))
                else:
                    mod = child.module or ""
                targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in modules else mod for a in child.names]
            for t in targets:
                if t == "mlc" or t.startswith("mlc."):
                    r = resolve(t)
                    if r and r != name:
                        out.append((r, in_function, child.lineno))
            visit(child, inner)

    visit(ast.parse(path.read_text()), False)
    parts = name.split(".")
    for k in range(1, len(parts)):
        parent = ".".join(parts[:k])
        if parent in modules and parent != name:
            out.append((parent, False, 0))
    return out


def kit_graph(lib: Path = LIB):
    files = {module_name(p, lib): p for p in (lib / "mlc").rglob("*.py")}
    return files, {name: imports_of(path, name, set(files)) for name, path in files.items()}


def layer_violations(lib: Path = LIB) -> list[str]:
    """Every import that breaks the rules, as 'file:line: why'."""
    files, graph = kit_graph(lib)
    out = []
    for name, edges in sorted(graph.items()):
        where = files[name].relative_to(lib.parent)
        mine = layer_of(name)
        if mine not in LAYERS:
            out.append(f"{where}: module {name} is in no layer (a folder of {LAYERS})")
            continue
        for target, in_function, line in edges:
            theirs = layer_of(target)
            if in_function:
                out.append(f"{where}:{line}: imports {target} inside a function (only heavy third-party libraries "
                           f"may be imported there)")
            if theirs not in LAYERS:
                out.append(f"{where}:{line}: imports {target}, which is in no layer")
            elif theirs == "entry" and target != "mlc":
                out.append(f"{where}:{line}: imports the entry module {target}")
            elif theirs != "entry" and LAYERS.index(theirs) > LAYERS.index(mine):
                out.append(f"{where}:{line}: layer {mine} imports {target} from the higher layer {theirs}")
            elif theirs == "cli" and mine != "cli" and mine != "entry":
                out.append(f"{where}:{line}: imports {target}: nothing but the entry modules imports the cli")
    return out


def test_every_module_sits_in_a_layer_and_imports_only_layers_below():
    problems = layer_violations()
    assert not problems, "layer rules broken:\n" + "\n".join(problems)


def _method_folder(module: str) -> str | None:
    parts = module.split(".")
    return parts[2] if len(parts) > 2 and parts[1] == "methods" else None


def test_only_a_method_s_own_folder_imports_it():
    """Shared code never names a method, and one method's folder never reaches into another's: a method is
    reached through the registries (the command line excepted, which may offer a method's own command)."""
    _, graph = kit_graph()
    bad = [f"{name} imports {target}" for name, edges in graph.items() for target, _, _ in edges
           if _method_folder(target) and _method_folder(target) != _method_folder(name)
           and layer_of(name) not in ("cli", "entry")]
    assert not bad, "\n".join(bad)


def test_no_import_cycle_in_the_package():
    _, graph = kit_graph()
    simple = {n: {t for t, _, _ in edges if not n.startswith(t + ".")} for n, edges in graph.items()}
    cycles = _cycles(simple)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_function_level_imports_are_heavy_third_party_only():
    """The rule's other half: what a function may import lazily (CONTRIBUTING, "Layers")."""
    bad = []
    for path in (LIB / "mlc").rglob("*.py"):
        def visit(node, in_function):
            for child in ast.iter_child_nodes(node):
                inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
                if in_function and isinstance(child, (ast.Import, ast.ImportFrom)):
                    names = [a.name for a in child.names] if isinstance(child, ast.Import) else [child.module or "."]
                    for n in names:
                        top = n.split(".")[0]
                        if top not in HEAVY and top not in STDLIB:
                            bad.append(f"{path.relative_to(ROOT)}:{child.lineno}: {n}")
                visit(child, inner)
        visit(ast.parse(path.read_text()), False)
    assert not bad, "imports inside functions that are neither heavy third-party nor standard library:\n" + \
        "\n".join(bad)


def _write(root: Path, rel: str, text: str = "") -> None:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)


@pytest.mark.parametrize("files, expected", [
    # an upward import at module level
    ({"mlc/core/io.py": "from mlc.engine import loop\n", "mlc/engine/loop.py": ""}, "layer core imports"),
    # the old shape: an upward import hidden inside a function
    ({"mlc/engine/loop.py": "", "mlc/runs/train.py": "",
      "mlc/engine/stage.py": "def f():\n    from mlc.runs import train\n"}, "inside a function"),
    # an import inside a function of a lower layer, even a legal direction
    ({"mlc/core/io.py": "", "mlc/engine/loop.py": "def f():\n    from mlc.core import io\n"}, "inside a function"),
    # a module outside every layer (the old flat layout)
    ({"mlc/train.py": "", "mlc/claims.py": "import mlc.train\n"}, "is in no layer"),
    # the edge to a parent package: a package __init__ importing a higher layer taints its children
    ({"mlc/core/__init__.py": "from mlc.runs import train\n", "mlc/runs/train.py": "", "mlc/core/io.py": ""},
     "layer core imports"),
    # shared code importing the command line
    ({"mlc/runs/train.py": "from mlc.cli import args\n", "mlc/cli/args.py": ""}, "cli"),
])
def test_the_layer_test_catches_each_kind_of_violation(tmp_path, files, expected):
    _write(tmp_path, "mlc/__init__.py")
    for rel, text in files.items():
        _write(tmp_path, rel, text)
        for parent in Path(rel).parents:
            if str(parent) not in (".", "mlc") and not (tmp_path / parent / "__init__.py").exists():
                _write(tmp_path, f"{parent}/__init__.py")
    problems = layer_violations(tmp_path)
    assert any(expected in p for p in problems), problems


def test_the_layer_test_fails_on_the_flat_layout_this_replaced():
    """The pre-layer tree (35 modules side by side, cycles closed by imports inside functions), rebuilt in
    miniature from its real edges: train -> params -> embeddings (lazy: clip, train) and models -> clip."""
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        _write(root, "mlc/__init__.py")
        _write(root, "mlc/train.py", "from . import params\nfrom .models import registry\n")
        _write(root, "mlc/params.py", "def f():\n    from .models import registry\n")
        _write(root, "mlc/embeddings.py", "def f():\n    from . import clip, train\n")
        _write(root, "mlc/clip.py", "from .models import backbones\n")
        _write(root, "mlc/models/__init__.py", "from . import mkt\n")
        _write(root, "mlc/models/registry.py")
        _write(root, "mlc/models/backbones.py")
        _write(root, "mlc/models/mkt.py", "def f():\n    from .. import clip, embeddings\n")
        problems = layer_violations(root)
    assert len(problems) >= 8, problems


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


def test_the_cycle_finder_finds_cycles():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
