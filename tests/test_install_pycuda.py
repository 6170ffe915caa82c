"""pycuda on JetPack 5.1, proven here: pip's isolated build compiles against a newer numpy than JetPack's; the
command scripts/setup.sh runs on a Jetson compiles against the numpy that is there.

JetPack 5.1 pairs Python 3.8 with Ubuntu's numpy 1.17.4 (C-API version 0xd). pycuda is an sdist whose
pyproject.toml asks for numpy>=1.24 (since 2024.1.2), so `pip install pycuda` builds it, in an isolated
environment, against numpy 1.24 (0x10), and `import pycuda.driver` fails. Here a six-line C extension that calls
numpy's ``import_array()`` and asks for numpy>=1.24 the same way stands in for pycuda, in a real Python 3.8 venv
with numpy 1.17.4: built the README's old way it fails to import, built with the commands setup.sh prints (its
dry run, the same commands it runs on a Jetson) it imports. ``test_real_pycuda`` builds pycuda itself (opt-in).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

NUMPY_API_ERROR = "module compiled against API version 0x10 but this version of numpy is 0xd"
UNREACHABLE = ("Could not find a version", "No matching distribution", "Failed to establish", "Network is unreachable",
               "Temporary failure in name resolution", "Name or service not known")  # fmt: skip


def _python38() -> str | None:
    """A Python 3.8 that runs: on PATH, or under pyenv (whose shim on PATH may refuse to run it)."""
    candidates = [shutil.which("python3.8"), *sorted((Path.home() / ".pyenv" / "versions").glob("3.8*/bin/python3.8"))]
    for candidate in filter(None, candidates):
        done = subprocess.run([str(candidate), "-c", "import sys, venv; print(sys.version_info[:2])"],
                              capture_output=True, text=True)  # fmt: skip
        if done.returncode == 0 and done.stdout.strip() == "(3, 8)":
            return str(candidate)
    return None


PYTHON38 = _python38()


def _run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=900, **kwargs)


@pytest.fixture(scope="module")
def jetpack51(tmp_path_factory) -> Path:
    """A Python 3.8 venv with numpy 1.17.4, JetPack 5.1's pair; its bin/python."""
    if PYTHON38 is None:
        pytest.skip("Python 3.8 (JetPack 5.1's) is not installed here: no python3.8 on PATH or under ~/.pyenv/versions")
    venv = tmp_path_factory.mktemp("jetpack51") / "venv"
    done = _run([PYTHON38, "-m", "venv", str(venv)])
    assert done.returncode == 0, done.stderr
    python = venv / "bin" / "python"
    done = _run([str(python), "-m", "pip", "install", "--disable-pip-version-check", "numpy==1.17.4"])
    if done.returncode != 0 and any(text in done.stdout + done.stderr for text in UNREACHABLE):
        pytest.skip(f"numpy 1.17.4 could not be installed, the package index is unreachable: {done.stderr.strip()[-200:]}")
    assert done.returncode == 0, done.stderr[-2000:]
    return python


def write_extension(folder: Path, name: str) -> Path:
    """A C extension calling numpy's import_array(), whose build asks for numpy>=1.24 as pycuda's does."""
    folder.mkdir(parents=True)
    (folder / "pyproject.toml").write_text('[build-system]\nrequires = ["setuptools", "wheel", "numpy>=1.24"]\n'
                                           'build-backend = "setuptools.build_meta"\n')  # fmt: skip
    (folder / "setup.py").write_text(
        "import numpy\nfrom setuptools import Extension, setup\n"
        f"setup(name='{name}', version='1.0', ext_modules=[Extension('{name}', ['{name}.c'], "
        "include_dirs=[numpy.get_include()])])\n"
    )
    (folder / f"{name}.c").write_text(
        "#include <Python.h>\n#include <numpy/arrayobject.h>\n"
        f'static struct PyModuleDef module = {{PyModuleDef_HEAD_INIT, "{name}", NULL, -1, NULL}};\n'
        f"PyMODINIT_FUNC PyInit_{name}(void) {{ import_array(); return PyModule_Create(&module); }}\n"
    )
    return folder


def jetson_setup_commands(venv_python: Path, tmp_path: Path) -> list[list[str]]:
    """The commands scripts/setup.sh runs on a Jetson, from its dry run (a file standing in for /etc/nv_tegra_release)."""
    release = tmp_path / "nv_tegra_release"
    release.write_text("# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64\n")
    env = {**os.environ, "EDGESEG_TEGRA_RELEASE": str(release), "EDGESEG_SETUP_DRY_RUN": "1",
           "EDGESEG_VENV": str(venv_python.parent.parent)}  # fmt: skip
    done = _run(["bash", "scripts/setup.sh"], cwd=ROOT, env=env)
    assert done.returncode == 0, done.stderr
    return [shlex.split(line[2:]) for line in done.stdout.splitlines() if line.startswith("+ ")]


def imports(python: Path, module: str) -> subprocess.CompletedProcess:
    return _run([str(python), "-c", f"import numpy, {module}; print('{module} imported with numpy', numpy.__version__)"],
                cwd="/")  # fmt: skip


@pytest.mark.slow
def test_the_readmes_old_command_builds_against_numpy_1_24_and_the_import_fails(jetpack51, tmp_path):
    extension = write_extension(tmp_path / "old", "npext_old")
    done = _run([str(jetpack51), "-m", "pip", "install", "--disable-pip-version-check", str(extension)])  # `pip install pycuda`
    assert done.returncode == 0, done.stderr[-2000:]
    imported = imports(jetpack51, "npext_old")
    assert imported.returncode != 0 and NUMPY_API_ERROR in imported.stderr, imported.stderr
    print(next(line for line in imported.stderr.splitlines() if NUMPY_API_ERROR in line))


@pytest.mark.slow
def test_setup_sh_builds_against_the_numpy_there_and_the_import_works(jetpack51, tmp_path):
    commands = jetson_setup_commands(jetpack51, tmp_path)
    upgrade = next(c for c in commands if "--upgrade" in c)  # setuptools and wheel, which a build without isolation needs
    build = next(c for c in commands if "--no-build-isolation" in c and c[-1] == "pycuda")
    assert upgrade[:4] == build[2:6] == [str(jetpack51), "-m", "pip", "install"]
    for command in (upgrade, [*build[:-1], str(write_extension(tmp_path / "new", "npext_new"))]):
        done = _run(command)
        assert done.returncode == 0, (command, done.stderr[-2000:])
    imported = imports(jetpack51, "npext_new")
    assert imported.returncode == 0 and imported.stdout.strip() == "npext_new imported with numpy 1.17.4", imported.stderr
    print(imported.stdout.strip())


def test_setup_sh_on_a_jetson_is_the_whole_device_set_up(tmp_path):
    python = tmp_path / "venv" / "bin" / "python"
    commands = [" ".join(c) for c in jetson_setup_commands(python, tmp_path)]
    expected = ["-m venv --system-site-packages", "install --disable-pip-version-check --upgrade pip setuptools wheel",
                "-e .[jetson]", "uninstall -y opencv-python", "--no-build-isolation --no-cache-dir --force-reinstall",
                "import tensorrt, cv2, numpy, pycuda.driver", "edgeseg doctor --for trt"]  # fmt: skip
    assert len(commands) == len(expected) + 1, commands  # + pycuda's pure-Python dependencies
    position = [next(i for i, command in enumerate(commands) if text in command) for text in expected]
    assert position == sorted(position), commands  # in this order
    assert "PATH=/usr/local/cuda/bin:" in commands[position[4]]  # pycuda finds CUDA through nvcc
    assert not any("torch" in command or "opencv-python" in command and "uninstall" not in command for command in commands)


# --- pycuda itself (opt-in: two builds from source, minutes each) ------------------------------------
CUDA_WHEELS = ("nvidia-cuda-runtime-cu11==11.8.89", "nvidia-cuda-profiler-api-cu11==11.8.86")  # cuda.h, cudaProfiler.h


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("EDGESEG_BUILD_PYCUDA") != "1",
                    reason="builds pycuda from source twice (about 2-4 min each on 2 cores); set EDGESEG_BUILD_PYCUDA=1")
def test_real_pycuda(jetpack51, tmp_path):
    """pycuda built both ways against CUDA 11.8's headers from NVIDIA's PyPI wheels; then ``import pycuda.driver``.

    No CUDA driver is here, and the extension links against libcuda and needs a libcuda.so.1 before its init (where
    numpy's check runs) is reached: a library of do-nothing functions named as the driver API functions in cuda.h
    stands in for it (as the CUDA toolkit's lib64/stubs/libcuda.so does for linking). It only lets the import get
    that far; nothing calls CUDA."""
    cuda = _cuda_headers(tmp_path / "cuda")
    home = tmp_path / "home"  # pycuda reads its build settings from ~/.aksetup-defaults.py
    home.mkdir()
    (home / ".aksetup-defaults.py").write_text(f"CUDA_ROOT = {str(cuda)!r}\nCUDA_INC_DIR = [{str(cuda / 'include')!r}]\n"
                                               f"CUDADRV_LIB_DIR = [{str(cuda / 'lib64')!r}]\nCUDA_ENABLE_CURAND = False\n")  # fmt: skip
    env = {**os.environ, "HOME": str(home), "PIP_CACHE_DIR": str(tmp_path / "pip-cache")}
    pip = [str(jetpack51), "-m", "pip", "install", "--disable-pip-version-check"]
    commands = jetson_setup_commands(jetpack51, tmp_path)
    build = next(c for c in commands if "--no-build-isolation" in c and c[-1] == "pycuda")
    outcomes = {}
    for name, steps in (("old", [[*pip, "pycuda"]]), ("new", [next(c for c in commands if "--upgrade" in c), build])):
        for command in steps:
            done = _run(command, env=env)
            assert done.returncode == 0, (command, done.stdout[-3000:], done.stderr[-3000:])
        outcomes[name] = _run([str(jetpack51), "-c", "import numpy, pycuda.driver; print('pycuda.driver imported with "
                               "numpy', numpy.__version__)"], cwd="/", env={**os.environ, "LD_LIBRARY_PATH": str(cuda / "lib64")})  # fmt: skip
    assert outcomes["old"].returncode != 0 and NUMPY_API_ERROR in outcomes["old"].stderr, outcomes["old"].stderr
    assert outcomes["new"].returncode == 0, outcomes["new"].stderr
    assert outcomes["new"].stdout.strip() == "pycuda.driver imported with numpy 1.17.4"
    print(next(line for line in outcomes["old"].stderr.splitlines() if NUMPY_API_ERROR in line))
    print(outcomes["new"].stdout.strip())


def _cuda_headers(root: Path) -> Path:
    """CUDA 11.8's driver API headers from NVIDIA's wheels, and a stand-in libcuda (see test_real_pycuda)."""
    wheels = root / "wheels"
    done = _run([sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-d", str(wheels),
                 *CUDA_WHEELS])  # fmt: skip
    if done.returncode != 0 and any(text in done.stdout + done.stderr for text in UNREACHABLE):
        pytest.skip(f"NVIDIA's CUDA header wheels could not be downloaded: {done.stderr.strip()[-200:]}")
    assert done.returncode == 0, done.stderr[-2000:]
    import zipfile

    (root / "include").mkdir()
    for wheel in wheels.glob("*.whl"):
        with zipfile.ZipFile(wheel) as archive:
            for member in archive.namelist():
                if "/include/" in member and member.endswith(".h"):
                    (root / "include" / Path(member).name).write_bytes(archive.read(member))
    headers = _run(["gcc", "-E", "-I", str(root / "include"), "-x", "c", "-"], input="#include <cuda.h>\n#include <cudaProfiler.h>\n")
    assert headers.returncode == 0, headers.stderr
    names = sorted(set(re.findall(r"\bCUresult\s+(cu\w+)\s*\(", headers.stdout)))  # after the _v2 renaming macros
    (root / "lib64").mkdir()
    (root / "libcuda.c").write_text("".join(f"int {name}(void) {{ return 999; }}\n" for name in names))
    library = root / "lib64" / "libcuda.so.1"
    done = _run(["gcc", "-shared", "-fPIC", "-Wl,-soname,libcuda.so.1", "-o", str(library), str(root / "libcuda.c")])
    assert done.returncode == 0 and len(names) > 300, (done.stderr, len(names))
    (root / "lib64" / "libcuda.so").symlink_to(library.name)
    return root
