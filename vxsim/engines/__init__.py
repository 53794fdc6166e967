"""Engines say *where* a work unit runs: ``numpy`` (the oracle), ``numba`` (CPU), ``cuda`` (GPU).

Each engine module has ``NAME``, ``available()`` and ``run_unit(config, width, sample)``;
see ``base`` for what they share.
"""

import importlib

from ..errors import VxsimError

_MODULES = {"numpy": "numpy_ref", "numba": "numba_cpu", "cuda": "cuda_gpu"}


def get(name):
    """The engine module of a backend name ('auto' picks the fastest available)."""
    if name == "auto":
        name = auto()
    if name not in _MODULES:
        raise VxsimError(f"unknown backend {name!r}; allowed: auto, {', '.join(_MODULES)}")
    try:
        module = importlib.import_module(f".{_MODULES[name]}", __name__)
    except ModuleNotFoundError as err:
        if err.name == f"{__name__}.{_MODULES[name]}":
            raise VxsimError(f"backend {name!r} is not part of this version of vxsim") from None
        raise VxsimError(f"backend {name!r} cannot be loaded: {err}") from None
    except ImportError as err:
        raise VxsimError(f"backend {name!r} cannot be loaded: {err}") from None
    if not module.available():
        why = getattr(module, "unavailable_reason", lambda: None)()
        raise VxsimError(
            f"backend {name!r} is not available on this machine" + (f": {why}" if why else "")
        )
    return module


def available():
    """{backend name: True/False} for every known backend."""
    out = {}
    for name, module in _MODULES.items():
        try:
            out[name] = bool(importlib.import_module(f".{module}", __name__).available())
        except ImportError:
            out[name] = False
    return out


def auto():
    """cuda where a GPU is usable, else numba, else numpy."""
    avail = available()
    for name in ("cuda", "numba", "numpy"):
        if avail.get(name):
            return name
    return "numpy"
