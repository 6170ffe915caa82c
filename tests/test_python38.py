"""Python 3.8 (JetPack 5.1) and 3.10 (JetPack 6) for everything a device runs, and the package a device installs.

Three checks of the device modules (edgeseg/ less the training-only ones): vermin's minimum-version
analysis (the CLI's annotations evaluated, since typer reads them at run time), a scan for 3.9+
type expressions that run outside annotations (which vermin does not see), and a byte-compile with
the real 3.8 and 3.10 interpreters where they exist. Then the packaging: the wheel's requirements
and its bundled export profiles, loaded from the unpacked wheel rather than this checkout.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import ROOT

from edgeseg.core.toml_compat import tomllib

PACKAGE = ROOT / "edgeseg"
# The workstation's packages (they need torch or onnx, and never run on a device) and the plots (matplotlib).
WORKSTATION_PACKAGES = ("model", "train", "export")
TRAINING_ONLY = {"evaluate/plots.py"}
RUNTIME_ANNOTATIONS = ("cli/app.py", "cli/device.py", "cli/workstation.py")  # typer evaluates the commands' annotations
PYENV = Path("/root/.pyenv/versions")
BUILTIN_GENERICS = {"list", "dict", "tuple", "set", "frozenset", "type"}
BUILTIN_TYPES = BUILTIN_GENERICS | {"int", "float", "str", "bytes", "bool", "object"}


def device_modules() -> list[Path]:
    modules = sorted(p for p in PACKAGE.rglob("*.py") if not _training_only(p.relative_to(PACKAGE).as_posix()))
    assert len(modules) > 20, modules
    return modules


def _training_only(relative: str) -> bool:
    return relative in TRAINING_ONLY or relative.split("/")[0] in WORKSTATION_PACKAGES


def test_training_only_modules_exist():
    """A renamed module or package must not slip out of the check unnoticed."""
    missing = [name for name in (*TRAINING_ONLY, *RUNTIME_ANNOTATIONS) if not (PACKAGE / name).is_file()]
    missing += [name for name in WORKSTATION_PACKAGES if not (PACKAGE / name / "__init__.py").is_file()]
    assert not missing, f"TRAINING_ONLY names modules that do not exist: {missing}"


def _vermin(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", "import sys, vermin; sys.exit(vermin.main())", "-t=3.8-", "--violations", "--no-tips", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def test_device_modules_need_at_most_python_38():
    pytest.importorskip("vermin", reason="vermin is in the dev extra: pip install -e '.[dev]'")
    done = _vermin(*map(str, device_modules()))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Target versions not met" not in done.stdout, done.stdout


def test_cli_annotations_read_by_typer_need_at_most_python_38():
    pytest.importorskip("vermin", reason="vermin is in the dev extra: pip install -e '.[dev]'")
    done = _vermin("--eval-annotations", *(str(PACKAGE / name) for name in RUNTIME_ANNOTATIONS))
    assert done.returncode == 0, done.stdout + done.stderr


def test_vermin_sees_a_39_call(tmp_path):
    """The check can fail: a 3.9 library call in a device-like module is reported."""
    pytest.importorskip("vermin", reason="vermin is in the dev extra: pip install -e '.[dev]'")
    module = tmp_path / "new_call.py"
    module.write_text("import functools\n\n\n@functools.cache\ndef f():\n    pass\n")
    done = _vermin(str(module))
    assert done.returncode != 0 and "3.9" in done.stdout, done.stdout


def runtime_type_expressions(source: str) -> list[str]:
    """3.9+ type expressions evaluated at run time (outside annotations): list[int], int | None, Sequence[str]."""
    tree = ast.parse(source)
    from_abc = {alias.asname or alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                and node.module == "collections.abc" for alias in node.names}  # fmt: skip
    annotations = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args.posonlyargs + node.args.args + node.args.kwonlyargs + [node.args.vararg, node.args.kwarg]
            annotations.update(id(a.annotation) for a in args if a is not None and a.annotation is not None)
            if node.returns is not None:
                annotations.add(id(node.returns))
        elif isinstance(node, ast.AnnAssign):
            annotations.add(id(node.annotation))
    found = []

    def visit(node: ast.AST) -> None:
        if id(node) in annotations:
            return  # not evaluated under `from __future__ import annotations`
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name):
            if node.value.id in BUILTIN_GENERICS | from_abc:
                found.append(f"line {node.lineno}: {ast.unparse(node)}")
                return
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
            sides = (node.left, node.right)
            if any(isinstance(s, ast.Constant) and s.value is None or isinstance(s, ast.Name) and s.id in BUILTIN_TYPES
                   for s in sides):  # fmt: skip
                found.append(f"line {node.lineno}: {ast.unparse(node)}")
                return
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def test_no_39_type_expressions_run_outside_annotations():
    offenders = {}
    for path in device_modules():
        found = runtime_type_expressions(path.read_text())
        if found:
            offenders[path.relative_to(ROOT).as_posix()] = found
    assert not offenders, f"Python 3.8 evaluates these and fails; use typing.List/Optional/... there: {offenders}"


def test_the_type_expression_scan_can_fail():
    source = ("from __future__ import annotations\nfrom collections.abc import Sequence\n"
              "Pairs = list[tuple[int, int]]\nX = Sequence[int]\ndef f(a: int | None, b: list[int]) -> dict[str, int]:\n"
              "    y: list[int] = []\n    return isinstance(a, int | str)\n")  # fmt: skip
    assert [line.split(":")[0] for line in runtime_type_expressions(source)] == ["line 3", "line 4", "line 7"]


def _interpreter(version: str) -> str | None:
    candidates = sorted(PYENV.glob(f"{version}.*/bin/python")) + [Path(p) for p in [shutil.which(f"python{version}")] if p]
    return str(candidates[0]) if candidates else None


@pytest.mark.parametrize("version", ["3.8", "3.10"])
def test_device_modules_compile_with_python(version, tmp_path):
    python = _interpreter(version)
    if python is None:
        pytest.skip(f"no Python {version} interpreter here (looked in {PYENV} and on PATH)")
    script = ("import py_compile, sys\nfailed = []\nfor path in sys.argv[2:]:\n    try:\n"
              "        py_compile.compile(path, cfile=sys.argv[1] + '/x.pyc', doraise=True)\n"
              "    except py_compile.PyCompileError as err:\n        failed.append(str(err))\n"
              "print(sys.version.split()[0]); print('\\n'.join(failed)); sys.exit(1 if failed else 0)\n")  # fmt: skip
    done = subprocess.run([python, "-c", script, str(tmp_path), *map(str, device_modules())],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.stdout.startswith(version + "."), done.stdout + done.stderr
    assert done.returncode == 0, done.stdout + done.stderr


# --- packaging -----------------------------------------------------------------------------
def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_package_is_listed_in_pyproject():
    listed = set(_pyproject()["tool"]["setuptools"]["packages"])
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for p in PACKAGE.rglob("__init__.py")}
    assert on_disk - listed == set(), f"add these to [tool.setuptools] packages in pyproject.toml: {on_disk - listed}"
    assert "edgeseg.profiles_data" in listed


def test_requirements_keep_a_jetsons_own_opencv_numpy_and_tensorrt():
    project = _pyproject()["project"]
    assert project["requires-python"] == ">=3.8"
    base = " ".join(project["dependencies"])
    assert "opencv" not in base and "tomli>=1.1; python_version < '3.11'" in project["dependencies"]
    extras = project["optional-dependencies"]
    assert extras["opencv"] == ["opencv-python>=4.5"] and "numpy<2" in extras["jetson"]
    assert "tensorrt>=8.5,<12" in extras["trt"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """edgeseg's wheel, built from a copy of the sources with the setuptools already installed (no download)."""
    pytest.importorskip("setuptools", reason="building the wheel needs setuptools in this environment")
    source = tmp_path_factory.mktemp("source")
    for name in ("edgeseg", "export"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    out = tmp_path_factory.mktemp("wheel")
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w", str(out), str(source)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return next(out.glob("edgeseg-*.whl"))


def test_wheel_ships_the_export_profiles_and_presets(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    profiles = {p.name for p in (ROOT / "export").glob("*.toml")}
    assert {f"edgeseg/profiles_data/{name}" for name in profiles} <= names
    assert {"edgeseg/data/presets/camvid.toml", "edgeseg/core/toml_compat.py", "edgeseg/deploy/doctor.py"} <= names
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "Requires-Python: >=3.8" in metadata and 'Requires-Dist: tomli>=1.1; python_version < "3.11"' in metadata


def test_profile_loads_from_the_unpacked_wheel_not_from_the_checkout(wheel, tmp_path):
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    script = ("import sys; sys.path.insert(0, sys.argv[1])\nimport edgeseg.export.profiles as p\n"
              "assert p.__file__.startswith(sys.argv[1]), p.__file__\n"
              "print(p.bundled_profile_dir()); print(p.load_profile('jetson-orin-nano-int8')['int8_source'])\n")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", script, str(site)], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert done.returncode == 0, done.stderr
    folder, source = done.stdout.split()
    assert folder == str(site / "edgeseg" / "profiles_data") and source == "qdq"


def test_profile_names_are_not_looked_up_in_the_current_folder(tmp_path, monkeypatch):
    from edgeseg.core.errors import EdgesegError
    from edgeseg.export.profiles import load_profile

    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "mine.toml").write_text('precisions = ["fp32"]\n')
    monkeypatch.chdir(tmp_path)
    with pytest.raises(EdgesegError, match="no such profile; choose one of cpu-int8"):
        load_profile("mine")
    assert load_profile("export/mine.toml") == {"precisions": ["fp32"]}  # a .toml path is a file
    with pytest.raises(EdgesegError, match="--profile other.toml: no such file"):
        load_profile("other.toml")
