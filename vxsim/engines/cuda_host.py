"""The CUDA kernels built for the CPU: a slow, exact stand-in for a GPU, for the tests.

``kernels/common.cuh`` lets every kernel compile as ordinary C++ (``-DVX_HOST``):
a launch runs its blocks one after the other, each by ``threads`` host
threads that meet at real barriers (``threads = 1``, the default, is
fastest; more threads test the partition of each block's work and the
barriers). ``HostBackend`` offers what the cuda engine's units need from a
backend (NumPy arrays for CuPy's, ``numpy.matmul`` for cuBLAS, the kernels
through ctypes with the same argument checks as on the GPU), so the CUDA
engine's orchestration and the kernels' arithmetic run, unchanged, on a
machine without a GPU and are compared with the NumPy oracle. With
``strict=True`` its arrays are ``strict_arrays``' stand-ins for CuPy's, which
refuse to mix with host arrays as CuPy does: the engine's Python then shows
that it moves data between host and device only where it means to.

CUDA Graphs (``cuda_graphs``): ``begin_capture`` .. ``end_capture`` records the
launches and GEMMs issued in between, as a stream capture does, without running
them: every argument as it is at capture, arrays by reference (the same memory
at every replay, as a captured pointer), scalars by value (a per-step scalar
passed by value is frozen into the graph, as on the GPU). ``replay`` runs the
recording. With ``strict=True`` any other work on device arrays during the
capture (which CuPy would capture, or refuse, but the host would run at once)
is an error (``strict_arrays.capturing``).

What this does *not* exercise: the warp-shuffle reductions (the host sums
the threads' partial values instead), NVRTC and CuPy themselves, cuBLAS, the
device's math library (tanh, exp, ...), and a GPU's memory model: a race
that the host threads happen not to hit goes unseen. Those are left to
``tests/test_cuda_gpu.py`` and ``scripts/gpu_check.sh`` on a GPU, and to the
nvcc and NVRTC compilation tests.
"""

import contextlib
import ctypes
import hashlib
import os
import queue
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import numpy as np

from . import cuda_sources, strict_arrays

CXX_FLAGS = (
    "-x", "c++", "-std=c++17", "-O2", "-fPIC", "-shared", "-pthread", "-DVX_HOST",
    # the same rounding as the device build with --fmad=false
    "-ffp-contract=off", "-fno-fast-math",
    "-Wall", "-Wextra", "-Werror", "-Wno-unused-parameter", "-Wno-unused-function",
)  # fmt: skip

_CTYPES = {"int": ctypes.c_int, "long long": ctypes.c_longlong, "u32": ctypes.c_uint,
           "double": ctypes.c_double}  # fmt: skip
_lock = threading.Lock()
_libraries = {}


def compiler():
    """A C++ compiler on PATH ($CXX, g++, c++, clang++), or None."""
    for name in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _cache_dir():
    root = os.environ.get("VXSIM_CACHE_DIR")
    if root:
        return Path(root) / "cuda-host"
    return Path(tempfile.gettempdir()) / f"vxsim-cache-{os.getuid()}" / "cuda-host"


def build(precision, text=None):
    """Compile the whole CUDA program (or ``text``) for the CPU; the shared library's path.

    Raises RuntimeError with the compiler's message when it does not compile.
    """
    cxx = compiler()
    if cxx is None:
        raise RuntimeError("no C++ compiler (g++, c++, clang++ or $CXX) on PATH")
    text = cuda_sources.program(precision) if text is None else text
    digest = hashlib.sha256((text + cxx + " ".join(CXX_FLAGS)).encode()).hexdigest()[:16]
    folder = _cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    lib = folder / f"vx_{precision}_{digest}.so"
    if lib.exists():
        return lib
    src = folder / f"vx_{precision}_{digest}.{os.getpid()}.cu"
    tmp = folder / f".vx_{precision}_{digest}.{os.getpid()}.so"
    src.write_text(text)
    proc = subprocess.run([cxx, *CXX_FLAGS, str(src), "-o", str(tmp)], capture_output=True,
                          text=True)  # fmt: skip
    src.unlink(missing_ok=True)
    if proc.returncode != 0:
        raise RuntimeError(f"the CUDA program does not compile as C++:\n{proc.stderr}")
    os.replace(tmp, lib)
    return lib


class _Team:
    """``n`` daemon threads that run one job together (the threads of a block)."""

    def __init__(self, n):
        self.n = n
        self.inboxes = [queue.Queue() for _ in range(n)]
        self.done = queue.Queue()
        for tid in range(n):
            threading.Thread(target=self._work, args=(tid,), daemon=True).start()

    def _work(self, tid):
        while True:
            job = self.inboxes[tid].get()
            try:
                job(tid)
            except BaseException as err:  # reported to the caller
                self.done.put(err)
            else:
                self.done.put(None)

    def run(self, job, timeout):
        for box in self.inboxes:
            box.put(job)
        for _ in range(self.n):
            try:
                err = self.done.get(timeout=timeout)
            except queue.Empty:
                raise RuntimeError(
                    f"a kernel did not finish in {timeout} s: threads stuck at a barrier"
                ) from None
            if err is not None:
                raise err


class HostGraph:
    """A captured graph on the host: the recorded calls, run in order by ``replay``."""

    def __init__(self, calls):
        self.calls = calls


class HostBackend:
    """The cuda engine's backend interface on the CPU (see the module docstring)."""

    def __init__(self, precision, threads=1, timeout=120, text=None, strict=False, ftz=False):
        """``text``: a program to build instead of the kernels' (tests of the tests);
        ``strict``: device arrays that refuse to mix with NumPy's (``strict_arrays``);
        ``ftz``: float32 subnormals flushed to zero in the kernels and the GEMMs, as
        NVRTC's ``-ftz=true`` (which CuPy always adds) does on the GPU (x86 only)."""
        self.strict = strict
        self.xp = strict_arrays.xp if strict else np
        self.precision = precision
        self.threads = int(threads)
        self.timeout = timeout
        self.real = np.dtype("float64" if precision == "float64" else "float32")
        text = cuda_sources.program(precision) if text is None else text
        with _lock:
            lib = _libraries.get(text)
            if lib is None:
                lib = _libraries[text] = ctypes.CDLL(str(build(precision, text)))
        self.lib = lib
        self.signatures = cuda_sources.kernel_signatures(text)
        self.lib.vx_host_launch.argtypes = [ctypes.c_longlong, ctypes.c_longlong, ctypes.c_int]
        self.lib.vx_host_launch.restype = None
        self.lib.vx_host_thread.argtypes = [ctypes.c_int]
        self.lib.vx_host_thread.restype = None
        self.lib.vx_host_ftz_begin.restype = ctypes.c_uint
        self.lib.vx_host_ftz_end.argtypes = [ctypes.c_uint]
        self.lib.vx_host_ftz_end.restype = None
        if ftz and not self.lib.vx_host_ftz_supported():
            raise RuntimeError("flush-to-zero is emulated on x86 (SSE control word) only")
        self.ftz = bool(ftz)
        self.team = _Team(self.threads) if self.threads > 1 else None
        self.launches = []  # (kernel name, grid, block, shared memory bytes) of every launch
        self.recording = None  # the graph being captured: a list of calls
        self.captures = 0  # graphs captured (tests count them)

    # -- CUDA Graphs (the stand-in: see the module docstring)

    def stream(self):
        """The stream a unit's work goes to (the host has one order: nothing to do)."""
        return contextlib.nullcontext()

    def begin_capture(self):
        if self.recording is not None:
            raise RuntimeError("a capture is already under way")
        self.recording = []
        strict_arrays.capturing(True)

    def end_capture(self):
        """The captured calls (a ``HostGraph``), none of which has run."""
        graph = HostGraph(tuple(self.recording))
        self.abort_capture()
        self.captures += 1
        return graph

    def abort_capture(self):
        self.recording = None
        strict_arrays.capturing(False)

    def replay(self, graph):
        for call in graph.calls:
            call()

    def launch(self, name, grid, block, args, smem=0):
        """Run a kernel: its blocks in turn, each by ``self.threads`` threads (the
        device's block size ``block`` is checked, not used)."""
        signature = self.signatures[name]
        cuda_sources.check_args(name, signature, args, self.real)
        cuda_sources.check_launch(name, grid, block)
        converted = []
        for (ctype, _), arg in zip(signature, args, strict=True):
            if ctype.endswith("*"):
                memory = strict_arrays.host_view(arg) if self.strict else arg
                converted.append(ctypes.c_void_p(memory.ctypes.data))
            else:
                converted.append(_CTYPES[ctype](arg.item()))
        fn = getattr(self.lib, name)
        fn.restype = None

        def job(tid):
            self.lib.vx_host_thread(tid)
            with self.flush_to_zero():
                fn(*converted)

        def call():
            self._run(name, grid, block, smem, job)

        if self.recording is not None:
            self.recording.append(call)  # pointers and scalars as they are now
        else:
            call()

    def _run(self, name, grid, block, smem, job):
        self.launches.append((name, int(grid), int(block), int(smem)))
        with _lock:
            self.lib.vx_host_launch(int(grid), int(smem), self.threads)
            if self.team is None:
                job(0)
            else:
                self.team.run(job, self.timeout)

    @contextlib.contextmanager
    def flush_to_zero(self):
        """The calling thread's float arithmetic with -ftz=true semantics inside (if ftz)."""
        if not self.ftz:
            yield
            return
        old = self.lib.vx_host_ftz_begin()
        try:
            yield
        finally:
            self.lib.vx_host_ftz_end(old)

    def matmul(self, a, b, out):
        if self.recording is not None:
            a, b, out = (strict_arrays.host_view(x) if self.strict else x for x in (a, b, out))
            self.recording.append(lambda: self._matmul(a, b, out))  # by reference
            return
        self._matmul(a, b, out)

    def _matmul(self, a, b, out):
        with self.flush_to_zero():
            np.matmul(a, b, out=out)

    def to_host(self, x):
        return strict_arrays.to_host(x)

    def gemm_precision(self, tf32):
        return contextlib.nullcontext()
