"""CUDA Graphs of the device units' step loops (cuda_graphs), on the host build.

``cuda_host.HostBackend``'s capture records launches and GEMMs as a stream capture
does (arrays by reference, scalars by value, nothing run) and replays the
recording: the graph path (a body of 64 steps captured once, replayed, the rest
stepped) gives the step path's numbers bit for bit, for Elman, GRU, LSTM, the
residual net and the MLP's GEMM path, every mode, both precisions, with one and
several host threads, and the NumPy oracle's to its tolerances. A body that passes a per-step scalar
by value gives wrong numbers (the stand-in freezes it as a GPU graph would), and
work on device arrays inside a capture is refused. Also: the arguments handed to
cublasGemmEx inside a capture (``cuda_backend.gemm_operands``) checked against
NumPy, reading the buffers in cuBLAS's column order.
"""

import logging
import sys
import types

import numpy as np
import pytest
from oracle_cases import ARCH_AXES, TOL, assert_same, make_config

from vxsim import config
from vxsim.engines import (
    cuda_backend,
    cuda_gpu,
    cuda_graphs,
    cuda_host,
    cuda_mlp,
    cuda_rnn,
    numpy_ref,
    schedule,
    strict_arrays,
)
from vxsim.errors import ConfigError, VxsimError
from vxsim.models import gates

ARCHS = ("mlp", "rnn", "gru", "lstm", "residual")
CLOCKED = {"mlp": "vx_forward_clocked", "rnn": "vx_elman_forward_clocked",
           "gru": "vx_gru_forward_clocked", "lstm": "vx_lstm_forward_clocked",
           "residual": "vx_residual_forward_clocked"}  # fmt: skip
# the last launch of a captured VJP segment's backward step
SEGMENT_CLOCKED = {"mlp": "vx_backward_clocked", "rnn": "vx_backward_clocked",
                   "gru": "vx_rnn_cot_finish_clocked", "lstm": "vx_rnn_cot_finish_clocked",
                   "residual": "vx_residual_backward_clocked"}  # fmt: skip
DEPTH = 70  # one body of 64 steps replayed, 6 steps on the step path (drive block 2)
# checkpoints every 9: segments from 63 (7 layers, stepped), 54 .. 9 (six replays of the
# captured segment) and 0 (from the input: stepped)
FULL_SEGMENTS = 6
assert gates.DRIVE_BLOCK == cuda_mlp.Unit.GRAPH_LAYERS == 64


def graph_config(arch, precision="float64", mode="both", graphs="auto", depth=DEPTH,
                 checkpoint=9, **kw):  # fmt: skip
    return make_config(
        f'network.architecture="{arch}"',
        'engine.path="gemm"',
        *([f"grid.{ARCH_AXES[arch]}=[0.5, 1.0]"] if arch in ARCH_AXES else []),
        f"engine.checkpoint={checkpoint}",
        "measure.record={log = 12}",
        f'engine.cuda_graphs="{graphs}"',
        precision=precision,
        mode=mode,
        depth=depth,
        **kw,
    )


def run(cfg, width, sample, backend):
    del backend.launches[:]
    return cuda_gpu.run_unit(cfg, width, sample, backend=backend)


def assert_bits(got, want):
    assert got.keys() == want.keys()
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)  # NaN = NaN


def graph_and_steps(arch, precision, mode, backend, width=6, sample=1, **kw):
    """(graph path, step path) results of one unit; checks that the graph was replayed."""
    before = backend.captures
    graph = run(graph_config(arch, precision, mode, **kw), width, sample, backend)
    segments = mode != "jvp"
    assert backend.captures == before + 1 + segments
    names = [name for name, *_ in backend.launches]
    assert names.count(CLOCKED[arch]) == 64
    assert names.count("vx_clock_advance") == 1 + FULL_SEGMENTS * segments
    if segments:
        assert names.count(SEGMENT_CLOCKED[arch]) == 9 * FULL_SEGMENTS
    steps = run(graph_config(arch, precision, mode, graphs="off", **kw), width, sample, backend)
    assert backend.captures == before + 1 + segments
    assert not {CLOCKED[arch], "vx_clock_advance"} & {name for name, *_ in backend.launches}
    return graph, steps


@pytest.mark.parametrize("precision", ["float32", "float64"])
@pytest.mark.parametrize("mode", ["jvp", "vjp", "both"])
@pytest.mark.parametrize("arch", ARCHS)
def test_graph_path_is_the_step_path_bit_for_bit(host, arch, mode, precision):
    graph, steps = graph_and_steps(arch, precision, mode, host[precision])
    assert_bits(graph, steps)
    cfg = graph_config(arch, precision, mode)
    assert_same(graph, numpy_ref.run_unit(cfg, 6, 1), TOL[precision], (arch, mode))


@pytest.mark.parametrize("arch", ARCHS)
def test_graph_path_with_threads(arch):
    """Each block run by 3 host threads at real barriers, graph and step paths alike."""
    if cuda_host.compiler() is None:
        pytest.skip("no C++ compiler on PATH")
    be = cuda_host.HostBackend("float32", threads=3, strict=True)
    graph, steps = graph_and_steps(arch, "float32", "both", be, width=8)
    assert_bits(graph, steps)


def test_two_replays_and_no_remainder(host):
    """Depth 128: two replays of the body, nothing left for the step path; divergence
    flags (sigma_w2 = 1e6, elu: not renormalised) and records read from the tables."""
    be = host["float32"]
    cfg = graph_config("rnn", "float32", "both", depth=128, checkpoint=11,
                       sw2="[1.0, 1e6]", acts='["elu", "tanh"]')  # fmt: skip
    got = run(cfg, 6, 0, be)
    names = [name for name, *_ in be.launches]
    assert names.count("vx_elman_forward_clocked") == 128 and "vx_elman_forward" not in names
    off = graph_config("rnn", "float32", "both", graphs="off", depth=128, checkpoint=11,
                       sw2="[1.0, 1e6]", acts='["elu", "tanh"]')  # fmt: skip
    assert_bits(got, run(off, 6, 0, be))
    want = numpy_ref.run_unit(cfg, 6, 0)
    assert np.any(want["diverged"] > 0)
    assert_same(got, want, TOL["float32"])


def test_short_sequences_stay_on_the_step_path(host):
    be = host["float64"]
    before = be.captures
    run(graph_config("lstm", mode="jvp", depth=63), 5, 0, be)
    assert be.captures == before  # no whole forward body
    run(graph_config("lstm", mode="vjp", depth=63, checkpoint=30), 5, 0, be)
    assert be.captures == before  # segments from 60 (3 layers), 30 and 0: one full segment


class ByValueElman(cuda_rnn.ElmanUnit):
    """The mistake the clock prevents: step k of the body given layer k + 1's scalars (layer,
    record, checkpoint, drive row) by value, as the step path passes them."""

    def graph_step(self, k):
        op = self.fwd_ops[k]
        self.be.matmul(self.A, self.W.T, self.H)
        self.launch("vx_elman_forward",
                    (self.H, self.A, self.xi, self.Dg[k], self.su, self.pf, self.pi,
                     self.res, self.cp, self.cp_ls, cuda_backend.i32(self.P),
                     cuda_backend.i32(self.N), cuda_backend.i32(self.R),
                     cuda_backend.i32(op.layer), cuda_backend.i32(self.kind),
                     cuda_backend.i32(self.has_bias), cuda_backend.i32(op.record),
                     cuda_backend.i32(op.checkpoint), self.limit))  # fmt: skip


def test_a_scalar_captured_by_value_gives_wrong_numbers(host):
    """Replaying a body whose scalars were captured by value writes layers 65..128 into the
    records and checkpoints of layers 1..64 (their drive rows are right only through the
    fixed buffer): the results differ from the step path's, which the clocked body gives."""
    be = host["float64"]
    cfg = graph_config("rnn", "float64", "both", depth=130, checkpoint=12)
    want = run(graph_config("rnn", "float64", "both", graphs="off", depth=130, checkpoint=12),
               6, 1, be)  # fmt: skip
    assert_bits(cuda_rnn.ElmanUnit(cfg, 6, 1, be).run(), want)
    wrong = ByValueElman(cfg, 6, 1, be).run()
    assert not np.array_equal(wrong["log_q"], want["log_q"], equal_nan=True)
    # the records of layers 65..128 are never written: the second replay wrote layer 1..64's
    second = (cfg.layers > 64) & (cfg.layers <= 128)
    assert second.any() and np.all(np.isnan(wrong["log_q"][..., second]))
    assert np.isfinite(want["log_q"][..., second]).mean() > 0.5  # live points there


def test_capture_runs_nothing_and_replay_runs_it(host):
    be = host["float32"]
    xp = be.xp
    clock = xp.asarray(np.ones(1, dtype=np.int32))
    be.begin_capture()
    be.launch("vx_clock_advance", 1, 32, (clock, np.int32(5)))
    graph = be.end_capture()
    assert cuda_host.strict_arrays.to_host(clock)[0] == 1
    be.replay(graph)
    be.replay(graph)
    assert cuda_host.strict_arrays.to_host(clock)[0] == 11


def test_work_on_device_arrays_during_a_capture_is_refused(host):
    """CuPy would capture an array operation (or fail allocating); the host would run it at
    once: the strict stand-in refuses it, and the unit's body does none."""
    be = host["float32"]
    a = be.xp.zeros(4)
    be.begin_capture()
    try:
        with pytest.raises(strict_arrays.CaptureError):
            be.xp.zeros(3)
        with pytest.raises(strict_arrays.CaptureError):
            a[:2] = 1.0
        with pytest.raises(strict_arrays.CaptureError):
            a * 2
    finally:
        be.abort_capture()
    a[:2] = 1.0  # allowed again


class FailingCapture(cuda_host.HostBackend):
    """A backend whose captures fail (as a GPU's may), with the GPU's fallback."""

    capture_fallback = True

    def begin_capture(self):
        raise RuntimeError("capture not supported here")


def test_failed_capture_warns_once_and_steps(caplog):
    if cuda_host.compiler() is None:
        pytest.skip("no C++ compiler on PATH")
    be = FailingCapture("float64", strict=True)
    cfg = graph_config("gru", "float64", "jvp")
    with caplog.at_level(logging.WARNING, logger="vxsim"):
        got = run(cfg, 5, 0, be)
    lines = [r.getMessage() for r in caplog.records if "CUDA Graph" in r.getMessage()]
    assert len(lines) == 1 and "\n" not in lines[0]
    assert_bits(got, run(graph_config("gru", "float64", "jvp", graphs="off"), 5, 0, be))
    with pytest.raises(VxsimError, match='cuda_graphs = "on"'):
        run(graph_config("gru", "float64", "jvp", graphs="on"), 5, 0, be)


def test_config_knob():
    assert graph_config("rnn").cuda_graphs == "auto"
    with pytest.raises(ConfigError, match="engine.cuda_graphs must be one of auto, on, off"):
        config.load(overrides=['engine.cuda_graphs="yes"'])
    assert cuda_graphs.mode(graph_config("rnn", graphs="off")) == "off"


# ---------------------------------------------------------------- cublasGemmEx's arguments


def column_gemm(args, a, b, out):
    """What cublasGemmEx(transa, transb, m, n, k, 1, b, lda, a, ldb, 0, out, ldc) computes,
    the buffers read in column order (element (i, j) of an ld-matrix at i + j ld)."""
    transa, transb, m, n, k, lda, ldb, ldc = args

    def matrix(x, rows, cols, ld):
        return np.lib.stride_tricks.as_strided(x, (rows, cols), (x.itemsize, ld * x.itemsize))

    A = matrix(b, k, m, lda).T if transa else matrix(b, m, k, lda)
    B = matrix(a, n, k, ldb).T if transb else matrix(a, k, n, ldb)
    C = matrix(out, m, n, ldc)
    C[...] = A @ B


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gemm_operands_are_cupys(dtype):
    """a @ b into C-order out, for the operand layouts the units use: C-order states (and
    their first P rows), transposed tied matrices (W.T, W[:2N].T, Zbuf[0].T), W itself."""
    rng = np.random.default_rng(0)
    P, N = 5, 7
    W = rng.standard_normal((3 * N, N)).astype(dtype)
    A = rng.standard_normal((3 * P, N)).astype(dtype)
    G = rng.standard_normal((P, 2 * N)).astype(dtype)
    X = rng.standard_normal((1, N)).astype(dtype)
    cases = [(A, W.T), (A[:P], W[: 2 * N].T), (A, W[2 * N :].T), (G, W[: 2 * N]),
             (A[:P], W[:N]), (X, W.T), (A[:1], W[:N].T), (W[:N].T, A[:P].T)]  # fmt: skip
    for a, b in cases:
        out = np.zeros((a.shape[0], b.shape[1]), dtype=dtype)
        column_gemm(cuda_backend.gemm_operands(a, b, out), a, b, out)
        np.testing.assert_allclose(out, a @ b, rtol=1e-5 if dtype == np.float32 else 1e-12)
    with pytest.raises(ValueError, match="contiguous"):
        cuda_backend.gemm_operands(A[:, ::2], W[: N // 2 + 1], np.zeros((3 * P, N), dtype))


@pytest.mark.parametrize("arch", ARCHS)
def test_captured_segments_of_every_spacing(host, arch, monkeypatch):
    """Checkpoints every 1 (a segment is a restart and one backward step), every 5 with
    the depth a multiple of it (no partial top segment), and segments whose Z^l are drawn
    again for every backward step (schedule.ZSTORE_BYTES = 0: draw flags all set)."""
    be = host["float64"]
    for checkpoint, depth, zstore in ((1, 12, None), (5, 30, None), (4, 21, 0)):
        if zstore is not None:
            monkeypatch.setattr(schedule, "ZSTORE_BYTES", zstore)
        before = be.captures
        kw = dict(mode="vjp", depth=depth, checkpoint=checkpoint)
        got = run(graph_config(arch, "float64", **kw), 5, 0, be)
        assert be.captures == before + 1  # the segments' graph (no whole forward body)
        assert_bits(got, run(graph_config(arch, "float64", graphs="off", **kw), 5, 0, be))
        want = numpy_ref.run_unit(graph_config(arch, "float64", **kw), 5, 0)
        assert_same(got, want, TOL["float64"], (arch, checkpoint))


# ---------------------------------------------------------------- GpuBackend's calls to CuPy


class Dev(np.ndarray):
    """A NumPy array with CuPy's ``.data.ptr``."""

    @property
    def data(self):
        return type("Pointer", (), {"ptr": self.ctypes.data})()


def stand_in_cupy(monkeypatch, calls):
    """Just the CuPy a GpuBackend's stream, capture, replay and captured GEMM touch."""

    class Stream:
        current = None

        def __init__(self, non_blocking=False, ptr=77):
            self.ptr = ptr
            self.capturing = False

        def __enter__(self):
            self.previous, Stream.current = Stream.current, self
            return self

        def __exit__(self, *exc):
            Stream.current = self.previous

        def wait_event(self, event):
            calls.append(("wait", self.ptr, event.stream))

        def begin_capture(self):
            calls.append(("begin", self.ptr))
            self.capturing = True

        def end_capture(self):
            calls.append(("end", self.ptr))
            self.capturing = False
            return types.SimpleNamespace(launch=lambda s: calls.append(("launch", s.ptr)))

        def is_capturing(self):
            return self.capturing

        def synchronize(self):
            calls.append(("sync", self.ptr))

    Stream.null = Stream(ptr=0)

    class Event:
        def __init__(self, disable_timing=False):
            self.stream = None

        def record(self, stream):
            self.stream = stream.ptr

    cublas = types.SimpleNamespace(setStream=lambda h, ptr: calls.append(("setStream", h, ptr)))
    device = types.SimpleNamespace(get_cublas_handle=lambda: 1234,
                                   get_compute_capability=lambda: "90")  # fmt: skip
    cupy = types.ModuleType("cupy")
    current = lambda: Stream.current or Stream.null  # noqa: E731
    cupy.cuda = types.SimpleNamespace(Stream=Stream, Event=Event, cublas=cublas, device=device,
                                      get_current_stream=current)  # fmt: skip
    cupy.uint8 = np.uint8
    cupy.empty = lambda n, dtype: np.zeros(n, dtype).view(Dev)
    cupy.matmul = lambda a, b, out: calls.append(("cupy.matmul",))
    core = types.ModuleType("cupy._core")
    core.get_compute_type = lambda dtype: 1  # COMPUTE_TYPE_DEFAULT
    linalg = types.ModuleType("cupy._core._routines_linalg")
    linalg.COMPUTE_TYPE_DEFAULT, linalg.COMPUTE_TYPE_TF32, linalg.COMPUTE_TYPE_PEDANTIC = 1, 7, 8
    cupy._core = core
    for name, module in (("cupy", cupy), ("cupy._core", core),
                         ("cupy._core._routines_linalg", linalg)):  # fmt: skip
        monkeypatch.setitem(sys.modules, name, module)
    return cupy


def test_gpu_backend_capture_calls(monkeypatch):
    """The GpuBackend's side, against a stand-in CuPy: the unit's stream waits for the
    legacy stream; cuBLAS's workspace set once and its stream set to the capturing stream
    before the capture; a GEMM inside the capture is cublasGemmEx with the operands in
    cuBLAS's order (checked by computing with them), CuPy's own matmul outside it; the
    replay is launched on the stream, which is synchronised at the end."""
    calls = []
    cupy = stand_in_cupy(monkeypatch, calls)

    def gemm_ex(*args):
        calls.append(("gemm", args))
        return 0

    def set_workspace(handle, ptr, size):
        calls.append(("workspace", handle, size))
        return 0

    lib = types.SimpleNamespace(cublasGemmEx=gemm_ex, cublasSetWorkspace_v2=set_workspace)
    real = cuda_backend.CapturedGemm
    monkeypatch.setattr(cuda_backend, "CapturedGemm", lambda cp: real(cp, lib))
    be = object.__new__(cuda_backend.GpuBackend)
    be.cupy, be._stream, be._gemm, be.capturing, be.captures = cupy, None, None, False, 0
    rng = np.random.default_rng(1)
    a = rng.standard_normal((6, 5)).astype(np.float32).view(Dev)
    W = rng.standard_normal((4, 5)).astype(np.float32).view(Dev)
    out = np.zeros((6, 4), np.float32).view(Dev)
    with be.stream():
        be.matmul(a, W.T, out)
        be.begin_capture()
        be.matmul(a, W.T, out)
        graph = be.end_capture()
        be.replay(graph)
        be.begin_capture()
        be.abort_capture()
    kinds = [c[0] for c in calls]
    assert kinds == ["workspace", "setStream", "wait", "cupy.matmul", "setStream", "begin",
                     "gemm", "end", "launch", "setStream", "begin", "end", "sync"]  # fmt: skip
    assert calls[0] == ("workspace", 1234, cuda_backend.WORKSPACE_BYTES)
    assert calls[1] == ("setStream", 1234, 77) and calls[2] == ("wait", 77, 0)
    assert calls[8] == ("launch", 77) and be.captures == 1 and not be.capturing
    args = calls[6][1]
    assert args[0] == 1234 and args[-2:] == (cuda_backend.CUBLAS_COMPUTE_32F, 99)
    transa, transb, m, n, k, alpha, pb, ta, lda, pa, tb, ldb, beta, pc, tc, ldc = args[1:17]
    assert (pb, pa, pc) == (W.ctypes.data, a.ctypes.data, out.ctypes.data)
    assert ta == tb == tc == cuda_backend.CUDA_R_32F
    column_gemm((transa, transb, m, n, k, lda, ldb, ldc), a, W.T, out)
    np.testing.assert_allclose(out, np.asarray(a) @ np.asarray(W).T, rtol=1e-6)


def test_library_path_reads_the_process_maps():
    assert cuda_backend._library_path("libc.so").endswith(".so.6")
    with pytest.raises(RuntimeError, match="is not loaded"):
        cuda_backend._library_path("libvxsim_nothing.so")
