"""The arrows of the house point one way: an AST walk over ``playground/`` (imports inside functions and
``TYPE_CHECKING`` blocks included) against the layers below, plus the rules on heavy libraries.

    layer 0  config, common          (the standard library only)
    layer 1  objectives, feedback, plots
    layer 2  engine
    layer 3  analysis, training
    layer 4  serving
    layer 5  ui, cli
    entry    app.py, playground/{generate,train,evaluate}.py, any __main__.py

A module may import a module of a lower layer or of its own package, never a higher layer nor another package of
its own layer; no import cycle exists anywhere; only ``ui`` imports gradio; ``objectives``, ``feedback`` and ``plots``
import none of transformers, peft and gradio. The checker is tested on small trees that break each rule, so this
file fails when an arrow is reversed.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

LAYERS = {"config": 0, "common": 0, "objectives": 1, "feedback": 1, "plots": 1, "engine": 2, "analysis": 3,
          "training": 3, "serving": 4, "ui": 5, "cli": 5}
ENTRY = 6
ENTRY_MODULES = {"playground.generate", "playground.train", "playground.evaluate", "playground.export",
                 "playground.experiments", "app"}
HEAVY = ("transformers", "peft", "gradio")
LIGHT_PACKAGES = {"objectives", "feedback", "plots"}  # may import none of HEAVY


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def package_of(module: str) -> str | None:
    """The sub-package (``engine``, ``ui``, ...) a ``playground.*`` module belongs to; None for the package root."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "playground" else None


def layer_of(module: str) -> int:
    if module in ENTRY_MODULES or module.endswith(".__main__"):
        return ENTRY
    package = package_of(module)
    if package is None:
        return 0  # playground/__init__.py
    return LAYERS[package]


def imports_of(path: Path, module: str, known: set[str]) -> list[tuple[str, int]]:
    """(imported name, line) for every import in the file, at any depth; ``playground`` names resolved to modules."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the file's own package, one level up per extra dot
                package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
                anchor = package[: len(package) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.append((candidate if candidate in known else base, node.lineno))
    return found


def collect(root: Path) -> dict[str, tuple[Path, list[tuple[str, int]]]]:
    files = sorted((root / "playground").rglob("*.py"))
    if (root / "app.py").is_file():
        files.append(root / "app.py")
    names = {module_name(root, f): f for f in files}
    known = set(names)
    return {name: (path, imports_of(path, name, known)) for name, path in names.items()}


def violations(root: Path) -> list[str]:
    """Every broken rule in the tree at ``root``, one line each (empty when the house is in order)."""
    modules = collect(root)
    problems: list[str] = []
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, (path, imported) in modules.items():
        where = path.relative_to(root)
        package, layer = package_of(name), layer_of(name)
        for target, line in imported:
            top = target.split(".")[0]
            if top in HEAVY:
                if top == "gradio" and package != "ui":
                    problems.append(f"{where}:{line} imports gradio; only playground/ui may")
                if package in LIGHT_PACKAGES:
                    problems.append(f"{where}:{line} imports {top}; {package}/ must not touch {', '.join(HEAVY)}")
                continue
            if top != "playground" or target not in modules:
                continue
            graph[name].add(target)
            target_package, target_layer = package_of(target), layer_of(target)
            if target_package == package and package is not None:
                continue
            if target_layer >= layer and not (target_layer == 0 and layer == 0):
                problems.append(f"{where}:{line} imports {target} (layer {target_layer}) from layer {layer}: "
                                "arrows must point to a lower layer")
    problems += [f"import cycle: {' -> '.join(cycle)}" for cycle in cycles(graph)]
    return problems


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One representative cycle per strongly connected component with more than one module (or a self-import)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                found.append(sorted(component) + [sorted(component)[0]])

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


# --------------------------------------------------------------------------------------------------------------------


def test_the_house_keeps_its_arrows():
    assert violations(ROOT) == []


def test_every_playground_package_has_a_layer():
    packages = {p.name for p in (ROOT / "playground").iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    assert packages == set(LAYERS) - {"config"}


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for relative, text in {"playground/__init__.py": "", **files}.items():
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        for parent in path.relative_to(tmp_path).parents:
            if parent.parts and parent.parts[0] == "playground":
                (tmp_path / parent / "__init__.py").touch()
    return tmp_path


def test_checker_catches_a_reversed_arrow(tmp_path):
    root = _tree(tmp_path, {"playground/engine/scoring.py": "", "playground/objectives/dpo.py":
                            "def f():\n    from playground.engine import scoring\n"})
    assert violations(root) == ["playground/objectives/dpo.py:2 imports playground.engine.scoring (layer 2) from "
                                "layer 1: arrows must point to a lower layer"]


def test_checker_catches_a_sideways_arrow_and_a_cycle(tmp_path):
    root = _tree(tmp_path, {"playground/analysis/a.py": "from playground.training import b\n",
                            "playground/training/b.py": "import playground.analysis.a\n"})
    problems = violations(root)
    assert "playground/analysis/a.py:1 imports playground.training.b (layer 3) from layer 3: arrows must point to a " \
           "lower layer" in problems
    assert "import cycle: playground.analysis.a -> playground.training.b -> playground.analysis.a" in problems


def test_checker_catches_a_cycle_inside_one_package(tmp_path):
    root = _tree(tmp_path, {"playground/engine/a.py": "from playground.engine.b import x\n",
                            "playground/engine/b.py": "from playground.engine import a\nx = 1\n"})
    assert violations(root) == ["import cycle: playground.engine.a -> playground.engine.b -> playground.engine.a"]


def test_checker_catches_heavy_imports_in_the_wrong_place(tmp_path):
    root = _tree(tmp_path, {"playground/serving/s.py": "import gradio as gr\n",
                            "playground/plots/p.py": "from transformers import AutoModel\n"})
    assert sorted(violations(root)) == [
        "playground/plots/p.py:1 imports transformers; plots/ must not touch transformers, peft, gradio",
        "playground/serving/s.py:1 imports gradio; only playground/ui may",
    ]
