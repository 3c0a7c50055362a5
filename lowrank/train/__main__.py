"""``python -m lowrank.train RUN_DIR [--resume]``: the training worker (see ``worker.py``)."""

from ..distributed import exit_process
from .worker import main

exit_process(main())
