"""The architectures vxsim knows: name -> ``Architecture`` record, in registration order.

Every module of this package that declares ``ARCHITECTURE`` is registered on
import, by its ``order`` (then by name): a new built-in architecture is one new
module here and nothing else. Others (a plugin, a test) call ``register`` before a config
names them; a sweep's worker processes must then register them too.
"""

import importlib
import pkgutil

from ..errors import VxsimError
from .architecture import Architecture

_REGISTRY = {}


def register(arch, replace=False):
    """Add an ``Architecture``; the same name twice is refused unless ``replace``."""
    problems = arch.problems()
    if problems:
        raise VxsimError(f"architecture {arch.name!r} cannot be registered: {'; '.join(problems)}")
    if arch.name in _REGISTRY and _REGISTRY[arch.name] is not arch and not replace:
        raise VxsimError(f"architecture {arch.name!r} is already registered")
    _REGISTRY[arch.name] = arch
    return arch


def unregister(name):
    """Remove an architecture (a test's own, when it is done)."""
    _REGISTRY.pop(name, None)


def get(name):
    """The ``Architecture`` called ``name``."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise VxsimError(
            f"unknown architecture {name!r}; allowed: {', '.join(_REGISTRY)}"
        ) from None


def names():
    """The registered architectures' names, in registration order."""
    return tuple(_REGISTRY)


def records():
    """The registered ``Architecture`` records, in registration order."""
    return tuple(_REGISTRY.values())


def _register_builtins():
    """Register the ``ARCHITECTURE`` of every module of vxsim.models, by order then name."""
    package = __name__.rpartition(".")[0]
    found = []
    for info in pkgutil.iter_modules(importlib.import_module(package).__path__):
        arch = getattr(importlib.import_module(f"{package}.{info.name}"), "ARCHITECTURE", None)
        if isinstance(arch, Architecture):
            found.append(arch)
    unordered = float("inf")
    for arch in sorted(found, key=lambda a: (unordered if a.order is None else a.order, a.name)):
        register(arch)


_register_builtins()
