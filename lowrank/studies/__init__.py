"""Layer studies: judge a substitute on a CPU in seconds before anyone trains it.

- :mod:`lowrank.studies.layers`: the variants studied (method, hyperparameter, options) and the
  effective dense matrix of a substitute built as a square 1x1 layer;
- :mod:`lowrank.studies.approx`: fit each variant to random dense matrices, error vs parameters
  (research notes 001, 5-6 Nov 2018);
- :mod:`lowrank.studies.init`: statistics of the effective matrix at initialisation against
  Glorot/Kaiming (research notes 001, 7 Oct 2018).

``lowrank study approx|init`` (``console/commands/study.py``) is the command line.
"""
