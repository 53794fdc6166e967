"""NumPy arrays that keep CuPy's boundary between device and host: for testing GPU code on a CPU.

CuPy computes on arrays in GPU memory and refuses to mix them with NumPy's:
an operation with a NumPy array operand, an implicit conversion
(``numpy.asarray(device)``, ``host[...] = device``) or a kernel launched on a
host array is a TypeError there, while NumPy functions called on CuPy arrays
dispatch to CuPy (``__array_ufunc__``, ``__array_function__``) and reductions
return 0-d device arrays. Code that runs on ``numpy`` alone cannot show that
it respects this boundary; code that runs on this module's ``xp`` can, on a
machine without a GPU:

* ``DeviceArray`` wraps a NumPy array and behaves like a CuPy one: every
  NumPy ufunc or function given one returns ``DeviceArray`` results, and any
  NumPy array among the operands (or assigned into one) is a TypeError;
  ``__array__`` refuses, so NumPy cannot silently pull one back to the host;
* ``xp`` is the module-like namespace (``cupy``'s stand-in): creation
  functions make ``DeviceArray``; ``xp.asarray`` (host to device) and
  ``to_host`` (device to host, ``cupy.asnumpy``) are the only crossings.

While a CUDA Graph is captured (``capturing(True)``, cuda_host), any operation on a
device array but making a view is an error: CuPy would capture it into the graph
(or, allocating, break the capture) while the host would run it at once.

Every value is computed by NumPy, so results are bit-identical to running on
plain NumPy arrays. What this cannot show (a function CuPy lacks, different
rounding on the device, speed) is left to the GPU tests.
"""

import numpy as np
from numpy.lib.mixins import NDArrayOperatorsMixin


class HostDeviceMixError(TypeError):
    """A host (NumPy) array met a device array where CuPy would refuse it."""


class CaptureError(RuntimeError):
    """Work on device arrays (other than a kernel launch or a GEMM) during a graph capture."""


_capture = [False]


def capturing(on):
    """Refuse (``on``) or allow again work on device arrays: a graph capture's bounds."""
    _capture[0] = bool(on)


def _no_capture(what):
    if _capture[0]:
        raise CaptureError(
            f"{what} on device arrays during a CUDA Graph capture: CuPy would capture it "
            f"(and the host would run it now); do it before the capture"
        )


def _unwrap(x):
    """Device values to NumPy for the computation; host arrays refused."""
    if isinstance(x, DeviceArray):
        return x.a
    if isinstance(x, np.ndarray):
        raise HostDeviceMixError(
            f"a host (NumPy) array of shape {x.shape} met device arrays: copy it with xp.asarray"
        )
    if isinstance(x, (list, tuple)):
        return type(x)(_unwrap(v) for v in x)
    if isinstance(x, dict):
        return {k: _unwrap(v) for k, v in x.items()}
    return x


def _wrap(x):
    """NumPy results back to the device (NumPy scalars become 0-d device arrays, as in CuPy)."""
    if isinstance(x, np.ndarray):
        return DeviceArray(x)
    if isinstance(x, np.generic):
        return DeviceArray(np.asarray(x))
    if isinstance(x, tuple) and hasattr(x, "_fields"):  # NumPy's named results (QRResult)
        return tuple(_wrap(v) for v in x)  # CuPy returns plain tuples
    if isinstance(x, (list, tuple)):
        return type(x)(_wrap(v) for v in x)
    return x


def _special_ufunc(ufunc):
    """SciPy's special-function ufuncs, which CuPy dispatches to cupyx.scipy.special."""
    try:
        from scipy import special
    except ImportError:
        return False
    return getattr(special, ufunc.__name__, None) is ufunc


class DeviceArray(NDArrayOperatorsMixin):
    """A NumPy array posing as a CuPy array (see the module docstring)."""

    __slots__ = ("a",)

    def __init__(self, a):
        self.a = a

    # -- the protocols that make numpy.f(device) a device computation

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        _no_capture(ufunc.__name__)
        if getattr(np, ufunc.__name__, None) is not ufunc and not _special_ufunc(ufunc):
            raise HostDeviceMixError(f"{ufunc.__name__} is not a ufunc CuPy dispatches")
        return _wrap(getattr(ufunc, method)(*_unwrap(inputs), **_unwrap(kwargs)))

    def __array_function__(self, func, types, args, kwargs):
        _no_capture(func.__name__)
        return _wrap(func(*_unwrap(args), **_unwrap(kwargs)))

    def __array__(self, dtype=None, copy=None):
        raise HostDeviceMixError(
            "implicit conversion of a device array to NumPy (use to_host, like cupy.asnumpy)"
        )

    # -- the ndarray interface

    def __getitem__(self, key):
        return _wrap(self.a[_unwrap(key)])

    def __setitem__(self, key, value):
        _no_capture("an assignment")
        self.a[_unwrap(key)] = _unwrap(value)

    def __len__(self):
        return len(self.a)

    def __iter__(self):
        raise HostDeviceMixError("iterating over a device array (each element a transfer)")

    def __bool__(self):
        return bool(self.a)  # CuPy synchronises and answers for size-1 arrays

    def __float__(self):
        return float(self.a)

    def __int__(self):
        return int(self.a)

    def __index__(self):
        return self.a.__index__()

    def __repr__(self):
        return f"DeviceArray({self.a!r})"

    def __getattr__(self, name):
        if name.startswith("__") or name in ("ctypes", "data"):
            # __array_interface__, the buffer: NumPy would read the memory as a host array's
            raise AttributeError(f"a device array has no host-memory attribute {name!r}")
        value = getattr(self.a, name)
        if callable(value):
            return lambda *args, **kwargs: _wrap(value(*_unwrap(args), **_unwrap(kwargs)))
        return _wrap(value)


# Functions whose job is to take host data to the device.
_TRANSFERS = frozenset({"asarray", "array", "ascontiguousarray"})


class _Namespace:
    """``xp``: NumPy's names, with arrays made on (and only moved explicitly to) the device."""

    __name__ = "vxsim.engines.strict_arrays.xp"

    def __init__(self, module=np):
        self._module = module

    def __getattr__(self, name):
        if name == "linalg":
            return _Namespace(np.linalg)  # cupy.linalg: QR (the orthogonal weight law)
        obj = getattr(self._module, name)
        if isinstance(obj, type) or not callable(obj):
            return obj  # dtypes and constants (xp.float32, xp.nan)
        if callable(obj):
            _no_capture(f"xp.{name}")
        if name in _TRANSFERS:
            return lambda a, *args, **kwargs: DeviceArray(
                obj(a.a, *args, **kwargs)  # on the device already: copied only by xp.array
                if isinstance(a, DeviceArray)
                else np.array(obj(a, *args, **kwargs), copy=True)  # a transfer is a copy
            )
        return lambda *args, **kwargs: _wrap(obj(*_unwrap(args), **_unwrap(kwargs)))


xp = _Namespace()


def to_host(x):
    """A host copy of a device array (``cupy.asnumpy``); NumPy arrays pass through copied."""
    return np.array(x.a if isinstance(x, DeviceArray) else x, copy=True)


def host_view(x):
    """The NumPy array behind a device array, without a copy (for ctypes kernel launches)."""
    if not isinstance(x, DeviceArray):
        raise HostDeviceMixError(f"a kernel was given a host {type(x).__name__}, not a device one")
    return x.a
