"""Numba's decorators where Numba imports, stand-ins that change nothing where it does not.

``activations`` and ``rng`` are plain NumPy functions that the Numba engine
also compiles into its kernels (``register_jitable``, ``overload``). Only the
Numba engine needs Numba: the numpy and cuda engines call these functions from
Python, where ``register_jitable(fn)`` is ``fn`` itself. So on a machine where
Numba cannot be imported (not installed, or refusing the installed NumPy, as
on a GPU image with a newer NumPy than Numba supports) the stand-ins below
return the functions unchanged, and only the numba backend is unavailable
(``engines.numba_cpu`` imports Numba itself). ``NUMBA_ERROR`` says why.
"""

import numpy as np

try:
    from llvmlite import ir
    from numba import types
    from numba.extending import intrinsic, overload, register_jitable

    NUMBA_ERROR = None
except ImportError as err:  # not installed, or refusing this NumPy
    types = intrinsic = None
    NUMBA_ERROR = f"{type(err).__name__}: {err}"

    def register_jitable(*args, **kwargs):
        """``fn`` unchanged (used bare or as ``@register_jitable(inline=...)``)."""
        if len(args) == 1 and callable(args[0]) and not kwargs:
            return args[0]
        return lambda fn: fn

    def overload(func, *args, **kwargs):
        """No Numba typing to register: the implementation is never called."""
        return lambda impl: impl


if intrinsic is not None:

    @intrinsic
    def pow2_f32(typingctx, k):
        """2^k as float32, for a float32 k that holds an integer in [-126, 127]: the
        exponent bits (k + 127) << 23, built in 32-bit integers. LLVM vectorises this
        over 8 lanes; Numba's own integer arithmetic would widen k to int64, which AVX2
        cannot convert from or to float32 but one lane at a time."""

        def codegen(context, builder, sig, args):
            i32 = ir.IntType(32)
            n = builder.fptosi(args[0], i32)
            bits = builder.shl(builder.add(n, ir.Constant(i32, 127)), ir.Constant(i32, 23))
            return builder.bitcast(bits, ir.FloatType())

        if k != types.float32:
            return None
        return types.float32(types.float32), codegen

else:

    def pow2_f32(k):
        """2^k as float32 (Python stand-in of the kernel intrinsic)."""
        return np.float32(np.ldexp(np.float32(1.0), int(k)))
