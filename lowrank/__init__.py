"""lowrank: cheap substitutes for convolutions, trained at matched parameter budgets.

The library half of the project (the console lives in ``console/``). Importing
``lowrank`` is cheap; the heavy parts (torch models, methods) are imported by the
modules that need them.
"""

__version__ = "0.1.0"
