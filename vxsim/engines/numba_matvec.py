"""Small row-block GEMMs of the Numba engine's fused path (small widths, one call per pass).

The fused path multiplies a lane's state rows by one (N, N) matrix per layer:
forward ``h = Z a`` for each row ``a`` (``Y = X @ Z^T``, with ``M = Z^T``
transposed once per layer), backward ``u = Z^T g`` (``Y = X @ Z``, ``M = Z``). So
the one kernel is

    Y[r, i] = sum_{k = 0}^{N - 1} X[r, k] M[k, i]        for the rows r asked for,

each sum a chain of fused multiply-adds in k order from 0 (``acc <- fma(X[r, k],
M[k, i], acc)``), correctly rounded at every step: an element's bits depend on
nothing but its row of X and column of M, not on which rows share its block, the
lane or the thread count (the oracle's BLAS sums in its own order; the engine is
tolerance-compared with it, and bit-compared with itself across thread counts).

How it is made fast: a register-blocked micro-kernel (``_strip``), written in
LLVM IR because Numba's vectorisers do not keep a block of accumulators in
registers: ROWS = 6 rows times a strip of two SIMD vectors (16 float32 or 8
float64 outputs; twelve accumulators), per k two vector loads of M's row, six
broadcasts of X and twelve FMAs. M's strip is read once per six rows (the old
matrix-vector form read all of Z per row and reduced horizontally at every
output). Twelve accumulators, not eight, so that the FMA units never wait on an
FMA's latency (4 cycles, 2 units: 8 chains only just fill them) and M is read a
third less often: measured 2026-12-04 (one thread, 513 rows in blocks of 24) at
width 128 float32 28-31 -> 33-35 multiply-adds per ns, float64 12-13 -> 14-15;
at width 64 within the noise. A block's last rows go through a 4- or 2-row call,
padded with its last row (computed twice, stored twice, the same bits). Outputs
past the last whole strip use the same chain with scalar ``fma``.

Where the CPU has AVX-512F (32 registers of 64 bytes), the strips are two 64-byte
vectors (32 float32 outputs), then two 32-byte ones for what is left, then the
scalar tail: the same chains, so the same bits (a test compares a process compiled
for Haswell with one compiled for the host). Measured 2026-12-04 on 2 cores of an
AMD EPYC (Zen 5), ``profile_fused.py``, ns per point and layer of the JVP's
products: width 32 47 -> 26, 64 183 -> 97, 128 722 -> 482.
"""

from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from vxsim.engines.numba_types import OPT_NOREF as _OPT

ROWS = 6  # rows per micro-kernel call (a block's last rows: 4 or 2)
NARROW_BYTES = 32  # one AVX2 register; a strip is two vectors


def _vector_bytes():
    """The widest SIMD register of the CPU Numba compiles for: 64 bytes with AVX-512F
    (32 registers: the twelve accumulators, two loads and a broadcast fit), else 32.
    ``NUMBA_CPU_NAME``/``NUMBA_CPU_FEATURES`` (a portable cache) decide when set."""
    import numba
    from llvmlite import binding

    if numba.config.CPU_NAME:
        return 64 if "+avx512f" in (numba.config.CPU_FEATURES or "") else NARROW_BYTES
    return 64 if binding.get_host_cpu_features().get("avx512f") else NARROW_BYTES


WIDE_BYTES = _vector_bytes()
STRIP_BYTES = 2 * WIDE_BYTES  # outputs of one micro-kernel call per row, in bytes


def _fma_declaration(builder, ty):
    """llvm.fma for a float type or a vector of them (exactly rounded, never split)."""
    if isinstance(ty, ir.VectorType):
        name = f"llvm.fma.v{ty.count}{'f32' if isinstance(ty.element, ir.FloatType) else 'f64'}"
    else:
        name = f"llvm.fma.{'f32' if isinstance(ty, ir.FloatType) else 'f64'}"
    return cgutils.get_or_insert_function(builder.module, ir.FunctionType(ty, [ty, ty, ty]), name)


@intrinsic
def _fma(typingctx, a, b, c):
    """a * b + c, rounded once (LLVM's fma: the same bits as one lane of ``_strip4``)."""

    def codegen(context, builder, sig, args):
        return builder.call(_fma_declaration(builder, args[0].type), list(args))

    return a(a, b, c), codegen


def _make_strip(vector_bytes):
    """The micro-kernel on vectors of ``vector_bytes`` (see ``_strip``)."""

    @intrinsic
    def strip(typingctx, X, M, Y, rows, i0):
        return _strip_codegen(vector_bytes, X, M, Y, rows, i0)

    return strip


def _strip_codegen(vector_bytes, X, M, Y, rows, i0):
    """Y[r, i0 + v] = sum_k X[r, k] M[k, i0 + v] (fma chain in k order) for the rows r in
    the tuple ``rows`` and v < 2 vector_bytes / itemsize; X, M, Y C-contiguous 2-D, one
    float dtype, M square. Accumulators are allocas that LLVM promotes to registers."""
    sig = types.none(X, M, Y, rows, types.int64)

    def codegen(context, builder, sig, args):
        Xa, Ma, Ya = (
            context.make_array(t)(context, builder, v)
            for t, v in zip(sig.args[:3], args[:3], strict=True)
        )
        rows = [builder.extract_value(args[3], q) for q in range(sig.args[3].count)]
        i0v = args[4]
        elt = context.get_value_type(sig.args[0].dtype)
        lanes = vector_bytes // (4 if isinstance(elt, ir.FloatType) else 8)
        vec = ir.VectorType(elt, lanes)
        vptr = vec.as_pointer()
        i32 = ir.IntType(32)
        fma = _fma_declaration(builder, vec)
        n = builder.extract_value(Ma.shape, 0)
        ldm = builder.extract_value(Ma.shape, 1)
        ldx = builder.extract_value(Xa.shape, 1)
        ldy = builder.extract_value(Ya.shape, 1)
        zero = ir.Constant(vec, [ir.Constant(elt, 0.0)] * lanes)
        accs = [[cgutils.alloca_once_value(builder, zero) for _ in range(2)] for _ in rows]
        xrows = [builder.gep(Xa.data, [builder.mul(r, ldx)]) for r in rows]
        splat = ir.Constant(ir.VectorType(i32, lanes), [0] * lanes)
        undef = ir.Constant(vec, ir.Undefined)
        half = ir.Constant(ir.IntType(64), lanes)
        with cgutils.for_range(builder, n) as loop:
            k = loop.index
            mk = builder.gep(Ma.data, [builder.add(builder.mul(k, ldm), i0v)])
            m = (
                builder.load(builder.bitcast(mk, vptr), align=4),
                builder.load(builder.bitcast(builder.gep(mk, [half]), vptr), align=4),
            )
            for acc, xrow in zip(accs, xrows, strict=True):
                x = builder.load(builder.gep(xrow, [k]))
                xv = builder.insert_element(undef, x, ir.Constant(i32, 0))
                xv = builder.shuffle_vector(xv, undef, splat)
                for h in range(2):
                    builder.store(builder.call(fma, [xv, m[h], builder.load(acc[h])]), acc[h])
        for acc, r in zip(accs, rows, strict=True):
            yr = builder.gep(Ya.data, [builder.add(builder.mul(r, ldy), i0v)])
            for h in range(2):
                dst = builder.bitcast(
                    builder.gep(yr, [ir.Constant(ir.IntType(64), h * lanes)]), vptr
                )
                builder.store(builder.load(acc[h]), dst, align=4)
        return context.get_dummy_value()

    return sig, codegen


_strip = _make_strip(WIDE_BYTES)
_strip_narrow = _make_strip(NARROW_BYTES)


@njit(inline="always", **_OPT)
def _strips(X, M, Y, block, wide, narrow):
    """The rows of ``block`` through the micro-kernel: wide strips up to column ``wide``,
    then narrow ones up to ``narrow`` (none where the two widths are one)."""
    for i0 in range(0, wide, STRIP_BYTES // X.itemsize):
        _strip(X, M, Y, block, i0)
    for i0 in range(wide, narrow, 2 * NARROW_BYTES // X.itemsize):
        _strip_narrow(X, M, Y, block, i0)


@njit(**_OPT)
def rows_times(X, M, Y, rows, count):
    """Y[r] = X[r] @ M for r in rows[:count] (see the module docstring for the sums).

    ROWS rows per micro-kernel call; the last 1-5 rows in one call of 2, 4 or 6 rows
    padded with the last row (computed twice, stored twice, the same bits); outputs
    past the last whole strip one at a time with the same fma chain.
    """
    if count <= 0:
        return
    n = M.shape[0]
    wide = n - n % (STRIP_BYTES // X.itemsize)
    whole = n - n % (2 * NARROW_BYTES // X.itemsize)
    last = rows[count - 1]
    b = 0
    while count - b >= ROWS:
        block = (rows[b], rows[b + 1], rows[b + 2], rows[b + 3], rows[b + 4], rows[b + 5])
        _strips(X, M, Y, block, wide, whole)
        b += ROWS
    left = count - b
    if left > 4:
        block = (rows[b], rows[b + 1], rows[b + 2], rows[b + 3], rows[b + 4], last)
        _strips(X, M, Y, block, wide, whole)
    elif left > 2:
        _strips(X, M, Y, (rows[b], rows[b + 1], rows[b + 2], last), wide, whole)
    elif left > 0:
        _strips(X, M, Y, (rows[b], last), wide, whole)
    zero = Y.dtype.type(0.0)
    for q in range(count):
        r = rows[q]
        for i in range(whole, n):
            acc = zero
            for k in range(n):
                acc = _fma(X[r, k], M[k, i], acc)
            Y[r, i] = acc


@njit(**_OPT)
def transpose_into(dst, src):
    """dst = src^T (square), in 16 x 16 tiles."""
    n = src.shape[0]
    for i0 in range(0, n, 16):
        for j0 in range(0, n, 16):
            for i in range(i0, min(i0 + 16, n)):
                for j in range(j0, min(j0 + 16, n)):
                    dst[j, i] = src[i, j]
