"""Models say *what* one layer (time step) computes; each module declares one ``Architecture``.

``get(name)``, ``names()`` and ``register(arch)`` are the registry's
(``vxsim.models.registry``); ``Architecture`` is the record (``.architecture``).
"""

from .architecture import Architecture
from .registry import get, names, records, register, unregister

__all__ = ["Architecture", "get", "names", "records", "register", "unregister"]
