"""The package's architecture, checked: subpackages import only those below them, no module imports
itself round a circle, every deferred import says why, serving stays free of Keras and TensorFlow,
and the engine free of Streamlit and of the app's extra packages.

The layers, lowest first, are :data:`LAYERS` (the README's Layout section draws them). Imports are
read from the source (``ast``), deferred ones and ``TYPE_CHECKING`` ones included: a type named from
a higher layer is a dependency too.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "fer_core"
#: fer_core's subpackages, lowest first; a module may import its own layer's modules and lower layers'.
LAYERS = ("base", "faces", "datasets", "registry", "inference", "evaluation", "training", "service")
#: The package's own top: the command line and the public API, above every layer.
TOP = "top"
#: What serving a model runs (the Live and Photos pages, ``predict``, ``bench``): no Keras, no TensorFlow.
SERVING = ("fer_core", "fer_core.inference.predict", "fer_core.inference.live", "fer_core.inference.streams",
           "fer_core.inference.bench", "fer_core.registry.store", "fer_core.faces.samples",
           "fer_core.datasets.collection", "fer_core.service.uploads", "fer_core.evaluation.evaluate")
#: The app's extra packages (pyproject's ``app`` extra): only the service layer may use them.
APP_PACKAGES = {"streamlit", "streamlit_webrtc", "av", "pandas", "plotly"}


@dataclass(frozen=True)
class Import:
    source: str  #: the importing module, e.g. fer_core.inference.live
    target: str  #: the imported module (a name's module for ``from package import module``)
    line: int
    deferred: bool  #: inside a function


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else TOP


def rank(module: str) -> int:
    return len(LAYERS) if layer(module) == TOP else LAYERS.index(layer(module))


def imports(module: str) -> list[Import]:
    """Every import of ``module``, of fer_core's modules and of outside packages (their top name)."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(), str(path))
    found: list[Import] = []

    def visit(node: ast.AST, deferred: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = deferred or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend(Import(module, alias.name, child.lineno, deferred) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:  # relative: resolved against the module's package
                    package = module.split(".")[: len(module.split(".")) - child.level + (path.stem == "__init__")]
                    base = ".".join([*package, *([base] if base else [])])
                for alias in child.names:
                    # `from fer_core.inference import bench` imports the module fer_core.inference.bench
                    target = f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
                    found.append(Import(module, target, child.lineno, deferred))
            visit(child, inside)

    visit(tree, False)
    return found


ALL_IMPORTS = [found for module in MODULES for found in imports(module)]
OWN_IMPORTS = [found for found in ALL_IMPORTS if found.target.split(".")[0] == "fer_core" and found.target in MODULES]


def test_every_module_sits_in_a_layer_or_the_top():
    strays = [module for module in MODULES if layer(module) == TOP and module.count(".") > 1]
    assert not strays, f"modules in no layer of {LAYERS}: {strays}"
    top = {module for module in MODULES if layer(module) == TOP}
    assert top == {"fer_core", "fer_core.__main__", "fer_core.cli"}, top


def test_no_layer_imports_a_higher_one():
    upward = [f"{found.source} (line {found.line}) imports {found.target}" for found in OWN_IMPORTS
              if rank(found.target) > rank(found.source)]
    assert not upward, "imports from a higher layer:\n" + "\n".join(upward)


def find_circle(edges: dict[str, set[str]]) -> list[str] | None:
    """A circle of the graph ``edges`` (its modules in order, the first one repeated at the end), or None."""
    state: dict[str, str] = {}
    path: list[str] = []

    def walk(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for following in sorted(edges.get(node, ())):
            if state.get(following) == "open":
                return path[path.index(following):] + [following]
            if following not in state and (circle := walk(following)):
                return circle
        state[node] = "done"
        path.pop()
        return None

    for node in sorted(edges):
        if node not in state and (circle := walk(node)):
            return circle
    return None


def test_find_circle_finds_one_and_only_one():
    assert find_circle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_circle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_no_module_imports_itself_round_a_circle():
    edges: dict[str, set[str]] = {}
    for found in OWN_IMPORTS:
        if found.target != found.source:
            edges.setdefault(found.source, set()).add(found.target)
    assert find_circle(edges) is None, " -> ".join(find_circle(edges) or [])


def _reasoned(lines: list[str], line: int) -> bool:
    """An import at ``line`` (1-based) carries a comment, or sits in a block of imports under one."""
    for text in reversed(lines[:line]):
        if "#" in text:
            return True
        if not text.strip().startswith(("from ", "import ")):
            return False
    return False


def test_every_deferred_import_says_why():
    silent = []
    for module, path in MODULES.items():
        lines = path.read_text().splitlines()
        silent += [f"{module} line {found.line}: {found.target}" for found in imports(module)
                   if found.deferred and not _reasoned(lines, found.line)]
    assert not silent, "deferred imports without a one-line reason:\n" + "\n".join(silent)


def test_the_engine_needs_no_streamlit_and_only_the_service_layer_the_apps_extras():
    wrong = [f"{found.source} (line {found.line}) imports {found.target}" for found in ALL_IMPORTS
             if found.target.split(".")[0] in APP_PACKAGES
             and (found.target.startswith("streamlit") or layer(found.source) not in ("service", TOP))]
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("module", SERVING)
def test_serving_imports_neither_keras_nor_tensorflow(module):
    script = f"import sys, {module}; print(sorted({{'keras', 'tensorflow'}} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]", f"importing {module} loaded {done.stdout.strip()}"


def test_the_public_api_names_what_its_modules_define():
    import importlib

    import fer_core

    for name in fer_core.__all__:
        module = importlib.import_module(fer_core._EXPORTS[name])
        assert getattr(fer_core, name) is getattr(module, name), name
    with pytest.raises(AttributeError, match="no attribute 'predict'"):
        fer_core.predict  # noqa: B018  (a module, not a public name)


README = PACKAGE.parent / "README.md"


def test_the_readme_shows_the_public_api_and_the_test_command_ci_runs():
    text = README.read_text()
    import fer_core

    examples = [block.split("```")[0] for block in text.split("```python")[1:]]
    imported = [line.removeprefix("from fer_core import ") for example in examples for line in example.splitlines()
                if line.startswith("from fer_core import ")]
    shown = {name.strip() for line in imported for name in line.split(",")}
    assert shown and shown <= set(fer_core.__all__), shown - set(fer_core.__all__)
    ci_command = (PACKAGE.parent / ".ci" / "run").read_text().splitlines()
    command = next(line for line in ci_command if line.startswith("pip install -r requirements-dev.txt"))
    assert f"```bash\n{command}\n```" in text
