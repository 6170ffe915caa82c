"""The folder tree is the pipeline, and these rules keep it so (docs/design.md).

- Device side (core, data, runtime, video, deploy, evaluate, report): never imports the workstation
  side (model, train, export) or the CLI, not even inside a function or for type checking. The one
  name it may hold as text is the PyTorch backend's module in the backend registry: a .pt model
  needs torch anyway, and the registry imports it only when such a model is opened.
- core imports nothing else of edgeseg; the library never imports the CLI.
- No import cycles between modules (an import of ``pkg.name`` counts as one of the module
  ``pkg.name`` when that is a module, else of ``pkg``'s ``__init__``).
- No public function or method outside the CLI takes more than MAX_PARAMETERS parameters.

Every rule is a function over a folder, so each test also shows it catches a planted breach.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from conftest import ROOT

PACKAGE = ROOT / "edgeseg"
DEVICE = ("core", "data", "runtime", "video", "deploy", "evaluate", "report")
WORKSTATION = ("model", "train", "export")
CLI = "cli"
STAGES = (*DEVICE, *WORKSTATION, CLI)
MAX_PARAMETERS = 8
# module (as text in a device module) -> where, and why it is allowed
NAMED_BY_TEXT = {"edgeseg.model.torch_backend": "edgeseg.runtime.backends"}
SELF = ("self", "cls")


def modules(root: Path) -> dict[str, Path]:
    """Dotted name -> file of every module under ``root`` (a package named like its folder)."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports(name: str, known: dict[str, Path]) -> set[str]:
    """The modules of ``known`` that module ``name`` imports anywhere (top level, in functions, under TYPE_CHECKING)."""
    path = known[name]
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else [])) if node.level else node.module
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in known else base)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name in known}


def stage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def layering_breaches(root: Path) -> list[str]:
    known = modules(root)
    breaches = []
    for name, path in known.items():
        here = stage(name)
        for target in imports(name, known):
            there = stage(target)
            if here in DEVICE and there in (*WORKSTATION, CLI):
                breaches.append(f"{name} (device side) imports {target}")
            elif here == "core" and there not in ("core", ""):
                breaches.append(f"{name} (core) imports {target}")
            elif here not in (CLI, "__main__", "") and there == CLI:
                breaches.append(f"{name} (library) imports {target} (the CLI)")
    return breaches


def named_by_text(root: Path) -> list[str]:
    """Workstation or CLI modules that a device module names in a string (a dynamic import in waiting)."""
    pattern = re.compile(r"\b(" + re.escape(root.name) + r"\.(?:" + "|".join((*WORKSTATION, CLI)) + r")(?:\.\w+)*)")
    found = []
    for name, path in modules(root).items():
        if stage(name) not in DEVICE:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                for target in pattern.findall(node.value):
                    if NAMED_BY_TEXT.get(target) != name:
                        found.append(f"{name} names {target}")
    return found


def cycles(root: Path) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    known = modules(root)
    graph = {name: sorted(imports(name, known) - {name}) for name in known}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def long_signatures(root: Path) -> list[str]:
    """Public functions and methods (``__init__`` included) outside the CLI with more than MAX_PARAMETERS parameters."""
    found = []
    for name, path in modules(root).items():
        if stage(name) == CLI:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            if node.name.startswith("_") and node.name != "__init__":
                continue
            args = node.args
            names = [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)]
            count = len(names) - (1 if names and names[0] in SELF else 0) + bool(args.vararg) + bool(args.kwarg)
            if count > MAX_PARAMETERS:
                found.append(f"{name}.{node.name} (line {node.lineno}): {count} parameters")
    return found


# --- the rules on edgeseg ------------------------------------------------------------------------------------------
def test_every_package_is_a_known_stage():
    packages = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file() and p.name != "profiles_data")
    assert set(packages) == set(STAGES), f"place each package on a side: {sorted(set(packages) ^ set(STAGES))}"


def test_the_device_side_imports_nothing_of_the_workstation_side():
    assert layering_breaches(PACKAGE) == []


def test_the_device_side_names_no_workstation_module_but_the_torch_backend():
    assert named_by_text(PACKAGE) == []
    registry = (PACKAGE / "runtime" / "backends" / "__init__.py").read_text()
    assert '"edgeseg.model.torch_backend"' in registry  # the one allowed name is still where it is said to be


def test_no_import_cycles():
    assert cycles(PACKAGE) == []


def test_public_functions_take_at_most_eight_parameters():
    assert long_signatures(PACKAGE) == []


# --- each rule catches a planted breach ----------------------------------------------------------------------------
def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "edgeseg"
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for folder in {root, *(p.parent for p in root.rglob("*.py"))}:
        (folder / "__init__.py").touch()
    return root


@pytest.mark.parametrize("code", [
    "from edgeseg.model import network\n",
    "def f():\n    import edgeseg.export.quantize\n",
    "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from edgeseg.train.trainer import Trainer\n",
    "from edgeseg.cli import app\n",
])  # fmt: skip
def test_a_device_module_that_imports_the_workstation_side_is_caught(tmp_path, code):
    root = _tree(tmp_path, {"runtime/x.py": code, "model/network.py": "", "export/quantize.py": "",
                            "train/trainer.py": "", "cli/__init__.py": "app = 1\n"})  # fmt: skip
    assert [b for b in layering_breaches(root) if b.startswith("edgeseg.runtime.x")], layering_breaches(root)


def test_core_importing_a_stage_and_text_names_are_caught(tmp_path):
    root = _tree(tmp_path, {"core/a.py": "from edgeseg.runtime import b\n", "runtime/b.py": "",
                            "video/c.py": 'MODULE = "edgeseg.export.quantize"\n', "export/quantize.py": ""})  # fmt: skip
    assert layering_breaches(root) == ["edgeseg.core.a (core) imports edgeseg.runtime.b"]
    assert named_by_text(root) == ["edgeseg.video.c names edgeseg.export.quantize"]


def test_a_cycle_is_caught(tmp_path):
    root = _tree(tmp_path, {"data/a.py": "from edgeseg.data.b import x\n",
                            "data/b.py": "def f():\n    from edgeseg.data import a\n"})  # fmt: skip
    assert cycles(root) == [["edgeseg.data.a", "edgeseg.data.b"]]


def test_a_long_signature_is_caught(tmp_path):
    nine = ", ".join(f"a{i}" for i in range(9))
    root = _tree(tmp_path, {"video/a.py": f"def ok(self, {', '.join(f'a{i}' for i in range(8))}):\n    pass\n\n"
                                          f"def _private({nine}):\n    pass\n\nclass C:\n    def __init__(self, {nine}):\n        pass\n",
                            "cli/b.py": f"def command({nine}):\n    pass\n"})  # fmt: skip
    assert long_signatures(root) == ["edgeseg.video.a.__init__ (line 8): 9 parameters"]
