"""The architectures vxsim knows: name -> ``Architecture`` record, in registration order.

The built-in models register on import; a new one registers its record with
``register`` (from its own module, a plugin, or a test) before a config names it.
"""

from ..errors import VxsimError
from . import gru, lstm, mlp, residual, rnn

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


for _module in (mlp, residual, rnn, gru, lstm):
    register(_module.ARCHITECTURE)
