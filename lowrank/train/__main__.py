"""``python -m lowrank.train RUN_DIR [--resume]``: the training worker (see ``worker.py``)."""

import sys

from .worker import main

sys.exit(main())
