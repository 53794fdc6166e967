"""The registry's C expressions (``act.c``, pasted into the CUDA kernels) against NumPy.

Every activation's phi, phi' and phi'' as C source is compiled with the system C
compiler into a shared library, loaded with ctypes, and compared with the NumPy
functions on a grid of x in [-6, 6]. This checks the kernels' activation source
without a GPU: a wrong sign, a missing parameter ``a`` or a misspelt <math.h>
function shows up here.
"""

import ctypes
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from vxsim import activations

FUNCS = ("phi", "dphi", "d2phi")
# every activation at its default parameter, plus non-default parameters, so that
# an expression that ignores ``a`` (ELU's default alpha is 1) cannot pass
LABELS = activations.names() + ["leaky_relu(0.2)", "elu(0.5)"]
# 1200 points: the grid misses x = 0 and x = +-1 (the kinks) by ~5e-3
GRID = np.linspace(-6.0, 6.0, 1200)
RTOL = 1e-12
# absolute floor for values that are a cancelling difference of O(1) terms: tanh' =
# 1 - tanh(x)^2 at |x| = 6 is 2.5e-5, and NumPy's and libm's tanh differ by an ulp
# there, i.e. 9e-12 relative; 1e-15 is ~5 ulp of the O(1) terms
ATOL = 1e-15


def _compiler():
    for name in (os.environ.get("CC"), "gcc", "cc", "clang"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


@pytest.fixture(scope="module")
def clib(tmp_path_factory):
    cc = _compiler()
    if cc is None:
        pytest.skip("no C compiler (gcc, cc or clang; or $CC) on PATH to compile act.c with")
    src = ["#include <math.h>", ""]
    for i, label in enumerate(LABELS):
        act, _ = activations.parse(label)
        for f in FUNCS:
            src += [
                f"void {f}_{i}(const double *xs, double a, double *out, long n) {{",
                "    for (long k = 0; k < n; ++k) {",
                "        const double x = xs[k];",
                "        (void)x;",
                f"        out[k] = {act.c[f]};",
                "    }",
                "}",
                "",
            ]
    folder = tmp_path_factory.mktemp("act_c")
    c_file, lib = folder / "act.c", folder / ("act.dll" if sys.platform == "win32" else "act.so")
    c_file.write_text("\n".join(src))
    cmd = [
        cc, "-std=c99", "-O1", "-ffp-contract=off", "-fPIC", "-shared",
        "-Wall", "-Werror", "-Wno-unused-parameter",
        str(c_file), "-o", str(lib), "-lm",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, f"C expressions do not compile:\n{proc.stderr}"
    return ctypes.CDLL(str(lib))


def c_eval(clib, index, func, x, a):
    fn = getattr(clib, f"{func}_{index}")
    fn.restype = None
    x = np.ascontiguousarray(x, dtype=np.float64)
    out = np.empty_like(x)
    dp = ctypes.POINTER(ctypes.c_double)
    fn(x.ctypes.data_as(dp), ctypes.c_double(a), out.ctypes.data_as(dp), ctypes.c_long(x.size))
    return out


def numpy_eval(act, func, x, a):
    return np.broadcast_to(np.asarray(getattr(act, func)(x, a), dtype=np.float64), x.shape)


@pytest.mark.parametrize("label", LABELS)
@pytest.mark.parametrize("func", FUNCS)
def test_c_matches_numpy(clib, label, func):
    act, a = activations.parse(label)
    assert not np.isin(GRID, act.kinks(a)).any()
    got = c_eval(clib, LABELS.index(label), func, GRID, a)
    want = numpy_eval(act, func, GRID, a)
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=f"{label} {func}")


@pytest.mark.parametrize("label", LABELS)
@pytest.mark.parametrize("func", FUNCS)
def test_c_matches_numpy_at_the_kinks(clib, label, func):
    # the same one-sided convention at a kink itself (relu'(0) = 0 in both, ...)
    act, a = activations.parse(label)
    x = np.array(sorted(act.kinks(a)) or [0.0])
    got = c_eval(clib, LABELS.index(label), func, x, a)
    np.testing.assert_allclose(got, numpy_eval(act, func, x, a), rtol=RTOL, atol=ATOL)


def test_every_activation_has_c_source():
    for name in activations.names():
        act = activations.REGISTRY[name]
        assert set(act.c) == set(FUNCS), name
