"""Engines say *where* a work unit runs: ``numpy`` (the oracle), ``numba`` (CPU), ``cuda`` (GPU).

Each engine module has ``NAME``, ``available()`` and ``run_unit(config, width, sample)``;
see ``base`` for what they share. ``ENGINES`` below is the one declaration of the
engines (backend name -> module of this package), in the order ``auto`` prefers
them; the config, the command line and ``vxsim info`` read it. An engine that runs
only some architectures would list them in ``ARCHITECTURES``; the three engines
here run every one (an architecture names the engines that have kernels of their
own for it in ``Architecture.fast_paths``; the others run ``generic``).
"""

import dataclasses
import importlib

import numpy as np

from ..errors import VxsimError

# backend name -> module, the oracle first and the fastest last: ``auto`` takes the
# last one that is available (and runs the architecture).
ENGINES = {"numpy": "numpy_ref", "numba": "numba_cpu", "cuda": "cuda_gpu"}


def names():
    """The backend names, the oracle first."""
    return tuple(ENGINES)


def choices():
    """What ``engine.backend`` and ``--backend`` accept: 'auto' and every engine."""
    return ("auto", *names())


def get(name, architecture=None):
    """The engine module of a backend name ('auto' picks the fastest available).

    With ``architecture``, 'auto' picks the fastest engine that runs it, and a
    named engine that does not is refused.
    """
    if name == "auto":
        name = auto(architecture)
    if name not in ENGINES:
        raise VxsimError(f"unknown backend {name!r}; allowed: {', '.join(choices())}")
    try:
        module = importlib.import_module(f".{ENGINES[name]}", __name__)
    except ModuleNotFoundError as err:
        if err.name == f"{__name__}.{ENGINES[name]}":
            raise VxsimError(f"backend {name!r} is not part of this version of vxsim") from None
        raise VxsimError(f"backend {name!r} cannot be loaded: {err}") from None
    except ImportError as err:
        raise VxsimError(f"backend {name!r} cannot be loaded: {err}") from None
    if not module.available():
        why = getattr(module, "unavailable_reason", lambda: None)()
        raise VxsimError(
            f"backend {name!r} is not available on this machine" + (f": {why}" if why else "")
        )
    if architecture is not None and not runs(module, architecture):
        raise VxsimError(
            f"backend {name!r} runs architecture {', '.join(module.ARCHITECTURES)} only, "
            f"not {architecture!r}; use --backend numba (or numpy)"
        )
    return module


def run(module, config, width, sample):
    """One work unit (width, sample) on an engine module: the arrays of
    ``base.result_shapes``. Executors call this, never ``module.run_unit`` directly,
    so that what every engine shares (the weight laws, the spectrum) lives here once."""
    if len(config.inits) > 1:
        return _per_law(module, config, width, sample)
    out = module.run_unit(config, width, sample)
    if config.spectrum_layers.size:  # measure.spectrum: the Jacobian's singular values
        from . import spectrum

        out["log_singular_value"] = spectrum.run(
            config, width, sample, module.spectrum_arrays(config), module.graded_svd
        )
    return out


def _per_law(module, config, width, sample):
    """A config of several weight laws (network.init) as one sub-config per law (its
    init axis of length 1), stitched along the init axis (axis 1, after activation)."""
    parts = [
        run(module, dataclasses.replace(config, inits=(law,)), width, sample)
        for law in config.inits
    ]
    return {name: np.concatenate([p[name] for p in parts], axis=1) for name in parts[0]}


def numerics(module):
    """What decides the last bits of an engine's numbers here: its name and its
    GEMMs' library, version and kernel (files record it; resume and merge compare)."""
    return f"{module.NAME} ({module.numerics()})"


def runs(module, architecture):
    """Whether an engine module runs ``architecture``."""
    return architecture in getattr(module, "ARCHITECTURES", (architecture,))


def available():
    """{backend name: True/False} for every known backend."""
    out = {}
    for name in names():
        module = ENGINES[name]
        try:
            out[name] = bool(importlib.import_module(f".{module}", __name__).available())
        except ImportError:
            out[name] = False
    return out


def auto(architecture=None):
    """The fastest engine that is available and runs the architecture (ENGINES' last such).

    Today: cuda where a GPU is usable, else numba, else numpy.
    """
    avail = available()
    for name in reversed(ENGINES):
        if avail.get(name) and (
            architecture is None
            or runs(importlib.import_module(f".{ENGINES[name]}", __name__), architecture)
        ):
            return name
    return names()[0]  # the oracle
