"""Network families. Importing this package registers every model.

Each module here registers its builders with :func:`lowrank.models.registry.register_model`.
"""

import importlib
import pkgutil

from .registry import create_model, get_model_builder, list_models, model_kwargs, register_model

for _info in sorted(pkgutil.iter_modules(__path__), key=lambda info: info.name):
    if not _info.name.startswith("_") and _info.name != "registry":
        importlib.import_module(f"{__name__}.{_info.name}")

__all__ = ["create_model", "get_model_builder", "list_models", "model_kwargs", "register_model"]
