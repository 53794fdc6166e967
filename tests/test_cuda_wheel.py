"""The CUDA sources travel inside the built wheel (DESIGN.md 5, issue 5).

kernels/ is a top-level folder of the source tree, not part of the vxsim
package; pyproject.toml maps it to the package ``vxsim.kernels``. This test
builds the wheel from a copy of the tree (the way ``pip install .`` does),
checks its file list, installs it into an empty target folder and, in a new
process that imports vxsim from there (not from the source tree), checks
that the engine finds every kernel source and assembles the same program.
A GPU user who cannot load a kernel file would otherwise only find out on
the GPU.
"""

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

from vxsim.engines import cuda_sources

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OFFLINE_HINTS = ("No matching distribution", "Could not find a version", "NewConnectionError",
                 "Failed to establish", "Temporary failure in name resolution")  # fmt: skip


def _can_build_offline():
    """setuptools new enough to build this wheel without downloading anything."""
    try:
        version = tuple(int(x) for x in importlib.metadata.version("setuptools").split(".")[:2])
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return False
    if version >= (70, 1):  # bdist_wheel is part of setuptools from 70.1
        return True
    try:
        importlib.metadata.version("wheel")
    except importlib.metadata.PackageNotFoundError:
        return False
    return version >= (68, 0)


def _pip(*args, cwd):
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.so")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(os.path.join(ROOT, name), src / name)
    for name in ("vxsim", "kernels"):
        shutil.copytree(os.path.join(ROOT, name), src / name, ignore=ignore)
    dist = tmp / "dist"
    args = ["wheel", "--no-deps", "-w", str(dist), str(src)]
    if _can_build_offline():
        args.insert(1, "--no-build-isolation")
    proc = _pip(*args, cwd=tmp)
    if proc.returncode != 0:
        if any(hint in proc.stderr for hint in OFFLINE_HINTS):
            pytest.skip("cannot build the wheel: setuptools>=68 is not installed here and "
                        "the package index is out of reach")  # fmt: skip
        pytest.fail(f"pip wheel failed:\n{proc.stdout}\n{proc.stderr}")
    (whl,) = dist.glob("vxsim-*.whl")
    return whl


def test_wheel_lists_every_kernel_source(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    shipped = sorted(n.split("/")[-1] for n in names if n.startswith("vxsim/kernels/"))
    sources = sorted(f for f in os.listdir(os.path.join(ROOT, "kernels"))
                     if f.endswith((".cu", ".cuh")))  # fmt: skip
    assert len(sources) >= 8
    assert shipped == sorted([*sources, "README.md", "__init__.py"])
    assert not any(n.startswith("kernels/") for n in names)  # not a top-level package


def test_installed_engine_finds_every_kernel_source(wheel, tmp_path):
    target = tmp_path / "site"
    proc = _pip("install", "--no-deps", "--no-index", "--target", str(target), str(wheel),
                cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    code = (
        "import json, hashlib, vxsim\n"
        "from vxsim.engines import cuda_sources as c\n"
        "print(json.dumps({'vxsim': vxsim.__file__, 'where': str(c.kernel_location()),\n"
        "  'names': c.kernel_names(),\n"
        "  'program': {p: c.program(p) for p in ('float32', 'float64')}}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(target)  # ahead of site-packages; the source tree is not on the path
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stderr
    got = json.loads(run.stdout.strip().splitlines()[-1])
    assert got["vxsim"].startswith(str(target))
    assert got["where"] == str(target / "vxsim" / "kernels")
    assert got["names"] == cuda_sources.kernel_names()
    for precision, text in got["program"].items():
        assert text == cuda_sources.program(precision), precision
