"""Substitute-convolution methods. Importing this package registers every method.

Each module in this package registers its method(s) with
:func:`lowrank.methods.registry.register_method`; new methods need no other edit.
"""

import importlib
import pkgutil

from .registry import ConvSpec, HyperParam, Method, get_method, list_methods, register_method

for _info in sorted(pkgutil.iter_modules(__path__), key=lambda info: info.name):
    if not _info.name.startswith("_") and _info.name != "registry":
        importlib.import_module(f"{__name__}.{_info.name}")

__all__ = ["ConvSpec", "HyperParam", "Method", "get_method", "list_methods", "register_method"]
