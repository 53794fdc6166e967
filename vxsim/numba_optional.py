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

try:
    from numba import types
    from numba.extending import overload, register_jitable

    NUMBA_ERROR = None
except ImportError as err:  # not installed, or refusing this NumPy
    types = None
    NUMBA_ERROR = f"{type(err).__name__}: {err}"

    def register_jitable(*args, **kwargs):
        """``fn`` unchanged (used bare or as ``@register_jitable(inline=...)``)."""
        if len(args) == 1 and callable(args[0]) and not kwargs:
            return args[0]
        return lambda fn: fn

    def overload(func, *args, **kwargs):
        """No Numba typing to register: the implementation is never called."""
        return lambda impl: impl
